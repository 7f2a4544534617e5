package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
					v, err := g.Get(ctx, k)
					require.NoError(t, err, "Get(%s)", k)
					require.Equal(t, vals[k], v, "Get(%s)", k)
				}
			}
			assert.Equal(t, len(keys), fetches, "fetches for keys read twice: want one per key")
		})
	}
	seq := ZipfSequence(keys, 1.1)
	count := map[string]int{}
	for _, k := range seq.Keys {
		count[k]++
	}
	assert.Zero(t, len(seq.Keys)&int(seq.Mask), "sequence length %d: want a power of two", len(seq.Keys))
	assert.Equal(t, len(seq.Keys), int(seq.Mask)+1, "mask %#x: want the length's mask", seq.Mask)
	assert.GreaterOrEqual(t, count[keys[0]], count[keys[100]]*10, "not Zipf-like: key 0 read %d times, key 100 %d times",
		count[keys[0]], count[keys[100]])
	assert.GreaterOrEqual(t, len(count), 200, "not Zipf-like: too few distinct keys")
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
				require.NoError(t, err)
				n := src.Calls() - before
				assert.GreaterOrEqual(t, n, int64(1), "storm %d: fetches", i)
				if lib == Qcache {
					assert.Equal(t, int64(1), n, "storm %d: fetches", i)
				}
				assert.GreaterOrEqual(t, wall, stormFetch, "storm %d took less than the fetch", i)
			}
			assert.GreaterOrEqual(t, src.MeanFetch(), stormFetch, "mean fetch")
		})
	}
}

// W3: the measurement is positive and plausible, and qcache's cost per
// entry does not depend on the key and value bytes (they are subtracted).
func TestMemoryPerEntry(t *testing.T) {
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			// The larger of two measurements: memory that something else in
			// the process frees during the first (seen after the other
			// tests of this package: a library's figure came out negative
			// about one run in three) makes a measurement low, never high.
			b := max(MemoryPerEntry(lib, 20_000), MemoryPerEntry(lib, 20_000))
			t.Logf("%s: %.0f B/entry at 20,000 entries", lib, b)
			assert.False(t, math.IsNaN(b), "B/entry is NaN")
			assert.Greater(t, b, 0.0, "B/entry not plausible")
			assert.LessOrEqual(t, b, 5000.0, "B/entry not plausible")
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
			require.FailNow(t, "not every observer delivered", "round %d", v)
		}
		got := nb.Observed()
		require.False(t, slices.ContainsFunc(got, func(d int) bool { return d != v }),
			"round %d: observers hold %v", v, got[:5])
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
				require.True(t, p.Fresh(g, 0), "group %d not filled", g)
				require.True(t, p.Fresh(g, per-1), "group %d not filled", g)
			}
			n, err := p.Invalidate(ctx, 3)
			require.NoError(t, err, "Invalidate(3)")
			require.Equal(t, per, n, "Invalidate(3)")
			for g := range groups {
				for i := range per {
					require.Equal(t, g != 3, p.Fresh(g, i), "after Invalidate(3): (%d, %d) fresh", g, i)
				}
			}
			p.Restore(3)
			for i := range per {
				require.True(t, p.Fresh(3, i), "after Restore(3): (3, %d) not fresh", i)
			}
		})
	}
}

// W6: observers mount (one fetch each) and each holds a goroutine and a
// plausible amount of memory.
func TestPollingFootprint(t *testing.T) {
	fp := PollingFootprint(500, time.Hour)
	t.Logf("%.0f B/observer, %.2f goroutines/observer, %d fetches", fp.Bytes, fp.Goroutines, fp.Fetches)
	assert.GreaterOrEqual(t, fp.Fetches, uint64(500), "fetches for 500 mounts")
	assert.Greater(t, fp.Bytes, 0.0, "footprint %+v not plausible", fp)
	assert.LessOrEqual(t, fp.Bytes, float64(64<<10), "footprint %+v not plausible", fp)
	assert.GreaterOrEqual(t, fp.Goroutines, 0.9, "footprint %+v not plausible", fp)
}

// The W6 floor: one parked goroutine each, ended once woken (goleak, in
// TestMain, would see them). Their bytes are only bounded above: at 500,
// stacks freed earlier in the process are reused without growing
// StackInuse.
func TestParkedFootprint(t *testing.T) {
	fp := ParkedFootprint(500, 0)
	t.Logf("%.0f B/goroutine (%.0f B of stack), start %d B", fp.Bytes, fp.Stack, fp.StartStack)
	assert.GreaterOrEqual(t, fp.Goroutines, 0.99, "footprint %+v", fp)
	assert.GreaterOrEqual(t, fp.StartStack, uint64(2048), "footprint %+v", fp)
	assert.LessOrEqual(t, fp.Bytes, float64(64<<10), "footprint %+v not plausible", fp)
}
