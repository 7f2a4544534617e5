package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

// One quick check per workload helper, so that plain `go test` says
// whether the benchmarks measure what they claim.

// W1: every library answers the prefilled keys with their values, and the
// Zipf sequence is skewed but reaches the tail.
func TestHitSetup(t *testing.T) {
	keys := Keys(1024)
	vals := Values(keys)
	ctx := context.Background()
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			var mu sync.Mutex
			fetches := 0
			g := NewGetter(lib, func(_ context.Context, k string) (string, error) {
				mu.Lock()
				fetches++
				mu.Unlock()
				return vals[k], nil
			})
			defer g.Close()
			for range 2 {
				for _, k := range keys {
					if v, err := g.Get(ctx, k); err != nil || v != vals[k] {
						t.Fatalf("Get(%s) = %q, %v; want %q", k, v, err, vals[k])
					}
				}
			}
			if fetches != len(keys) {
				t.Errorf("%d fetches for %d keys read twice; want one per key", fetches, len(keys))
			}
		})
	}
	seq := ZipfSequence(keys, 1.1)
	count := map[string]int{}
	for _, k := range seq.Keys {
		count[k]++
	}
	if len(seq.Keys)&int(seq.Mask) != 0 || int(seq.Mask)+1 != len(seq.Keys) {
		t.Errorf("sequence length %d, mask %#x: want a power of two and its mask", len(seq.Keys), seq.Mask)
	}
	if count[keys[0]] < count[keys[100]]*10 || len(count) < 200 {
		t.Errorf("not Zipf-like: key 0 read %d times, key 100 %d times, %d distinct keys",
			count[keys[0]], count[keys[100]], len(count))
	}
}

// W2: a storm of qcache Gets on a cold key makes exactly one fetch, every
// time; the others make at least one.
func TestStorm(t *testing.T) {
	ctx := context.Background()
	const storms = 20
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			src := &SlowSource{Delay: stormFetch}
			g := NewGetter(lib, src.Fetch)
			defer g.Close()
			for i := range storms {
				before := src.Calls()
				wall, err := Storm(ctx, g, "cold-"+string(rune('a'+i)), stormGoroutines)
				if err != nil {
					t.Fatal(err)
				}
				n := src.Calls() - before
				if n < 1 || (lib == Qcache && n != 1) {
					t.Errorf("storm %d: %d fetches", i, n)
				}
				if wall < stormFetch {
					t.Errorf("storm %d took %v, less than the fetch's %v", i, wall, stormFetch)
				}
			}
			if f := src.MeanFetch(); f < stormFetch {
				t.Errorf("mean fetch %v < %v", f, stormFetch)
			}
		})
	}
}

// W3: the measurement is positive and plausible, and qcache's cost per
// entry does not depend on the key and value bytes (they are subtracted).
func TestMemoryPerEntry(t *testing.T) {
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			b := MemoryPerEntry(lib, 20_000)
			t.Logf("%s: %.0f B/entry at 20,000 entries", lib, b)
			if math.IsNaN(b) || b <= 0 || b > 5000 {
				t.Errorf("%.1f B/entry: not plausible", b)
			}
		})
	}
}

// W4: every observer's State, and every reader, gets each new value.
func TestNotify(t *testing.T) {
	nb := NewNotify(100)
	defer nb.Close()
	for v := 1; v <= 5; v++ {
		done := make(chan struct{})
		go func() { nb.SetAndWait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: not every observer delivered", v)
		}
		if got := nb.Observed(); slices.ContainsFunc(got, func(d int) bool { return d != v }) {
			t.Fatalf("round %d: observers hold %v", v, got[:5])
		}
	}
}

// W5: invalidating a group ends the freshness of exactly that group's
// entries; Restore makes them fresh again.
func TestPrefix(t *testing.T) {
	ctx := context.Background()
	const groups, per = 10, 100
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			p := NewPrefix(lib, groups, per)
			defer p.Close()
			for g := range groups {
				if !p.Fresh(g, 0) || !p.Fresh(g, per-1) {
					t.Fatalf("group %d not filled", g)
				}
			}
			n, err := p.Invalidate(ctx, 3)
			if err != nil || n != per {
				t.Fatalf("Invalidate(3) = %d, %v; want %d", n, err, per)
			}
			for g := range groups {
				for i := range per {
					if fresh := p.Fresh(g, i); fresh != (g != 3) {
						t.Fatalf("after Invalidate(3): (%d, %d) fresh = %v", g, i, fresh)
					}
				}
			}
			p.Restore(3)
			for i := range per {
				if !p.Fresh(3, i) {
					t.Fatalf("after Restore(3): (3, %d) not fresh", i)
				}
			}
		})
	}
}

// W6: observers mount (one fetch each) and each holds a goroutine and a
// plausible amount of memory.
func TestPollingFootprint(t *testing.T) {
	fp := PollingFootprint(500, time.Hour)
	t.Logf("%.0f B/observer, %.2f goroutines/observer, %d fetches", fp.Bytes, fp.Goroutines, fp.Fetches)
	if fp.Fetches < 500 {
		t.Errorf("%d fetches for 500 mounts", fp.Fetches)
	}
	if fp.Bytes <= 0 || fp.Bytes > 64<<10 || fp.Goroutines < 0.9 {
		t.Errorf("footprint %+v not plausible", fp)
	}
}
