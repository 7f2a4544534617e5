package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The benchmarks run only with -bench; ./run runs each library's benchmark
// of a workload once per round, libraries interleaved. Sub-benchmarks are
// named by library so that a pattern such as '^BenchmarkW1Hot$/^qcache$'
// picks one.

// ---------- W1: hit path under contention ----------

const w1Keys = 16 << 10

// BenchmarkW1Hot reads one hot key from every reader at once.
func BenchmarkW1Hot(b *testing.B) {
	keys := Keys(w1Keys)
	benchHits(b, keys, func() *Sequence { return HotSequence(keys[42]) })
}

// BenchmarkW1Zipf reads 16k keys, a few hot and a long tail (Zipf s=1.1),
// each reader from its own offset in one precomputed sequence.
func BenchmarkW1Zipf(b *testing.B) {
	keys := Keys(w1Keys)
	benchHits(b, keys, func() *Sequence { return ZipfSequence(keys, 1.1) })
}

func benchHits(b *testing.B, keys []string, sequence func() *Sequence) {
	vals := Values(keys)
	fetch := func(_ context.Context, k string) (string, error) { return vals[k], nil }
	ctx := context.Background()
	prefill := func(b *testing.B, g Getter) {
		for _, k := range keys {
			if v, err := g.Get(ctx, k); err != nil || v != vals[k] {
				b.Fatalf("prefill %s: %q, %v", k, v, err)
			}
		}
	}
	// Each library has its own loop, calling it directly (no interface), so
	// that the loops differ only in the call.
	b.Run(Qcache, func(b *testing.B) {
		g := NewQcache(fetch)
		defer g.Close()
		prefill(b, g)
		seq := sequence()
		runtime.GC() // the prefill's garbage is not the hit path's
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Start()
			for pb.Next() {
				if _, err := g.Q.Get(ctx, seq.Keys[i&seq.Mask]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run(Otter, func(b *testing.B) {
		g := NewOtter(fetch)
		defer g.Close()
		prefill(b, g)
		seq := sequence()
		runtime.GC() // the prefill's garbage is not the hit path's
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Start()
			for pb.Next() {
				if _, err := g.C.Get(ctx, seq.Keys[i&seq.Mask], g.L); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run(Sturdyc, func(b *testing.B) {
		g := NewSturdyc(fetch)
		prefill(b, g)
		seq := sequence()
		runtime.GC() // the prefill's garbage is not the hit path's
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Start()
			for pb.Next() {
				if _, err := g.Get(ctx, seq.Keys[i&seq.Mask]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run(SFMap, func(b *testing.B) {
		g := NewSFMapCache(fetch)
		prefill(b, g)
		seq := sequence()
		runtime.GC() // the prefill's garbage is not the hit path's
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Start()
			for pb.Next() {
				if _, err := g.Get(ctx, seq.Keys[i&seq.Mask]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run(Limit, func(b *testing.B) {
		var m sync.Map
		for _, k := range keys {
			m.Store(k, vals[k])
		}
		seq := sequence()
		runtime.GC()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Start()
			for pb.Next() {
				if _, ok := m.Load(seq.Keys[i&seq.Mask]); !ok {
					b.Error("missing key")
					return
				}
				i++
			}
		})
	})
}

// ---------- W2: miss storm ----------

const (
	stormGoroutines = 512
	stormFetch      = 2 * time.Millisecond
)

// BenchmarkW2Storm runs b.N storms (run it with -benchtime=1000x): each
// releases 512 goroutines at once on one cold key whose fetch takes 2 ms.
// ns/op is one storm including starting its goroutines; ms/storm is the
// wall time from release to the last answer, fetch-ms the fetch's own time
// as measured inside it.
func BenchmarkW2Storm(b *testing.B) {
	for _, lib := range Libs {
		b.Run(lib, func(b *testing.B) {
			src := &SlowSource{Delay: stormFetch}
			g := NewGetter(lib, src.Fetch)
			defer g.Close()
			ctx := context.Background()
			var wall time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				w, err := Storm(ctx, g, fmt.Sprintf("storm-%d", i), stormGoroutines)
				if err != nil {
					b.Fatal(err)
				}
				wall += w
			}
			b.StopTimer()
			storms := float64(b.N)
			b.ReportMetric(float64(src.Calls())/storms, "fetches/storm")
			b.ReportMetric(wall.Seconds()*1e3/storms, "ms/storm")
			b.ReportMetric(src.MeanFetch().Seconds()*1e3, "fetch-ms")
		})
	}
}

// ---------- W3: memory per entry ----------

const w3Entries = 100_000

// BenchmarkW3Memory measures each library's heap per entry at 100,000
// entries (run it with -benchtime=1x; see MemoryPerEntry for what is
// subtracted).
func BenchmarkW3Memory(b *testing.B) {
	for _, lib := range Libs {
		b.Run(lib, func(b *testing.B) {
			var sum float64
			for range b.N {
				sum += MemoryPerEntry(lib, w3Entries)
			}
			b.ReportMetric(sum/float64(b.N), "B/entry")
		})
	}
}

// ---------- W4: SetData → observers ----------

// BenchmarkW4Notify measures, for qcache only (the others have no
// observers), the time from SetData until every observer's Changes channel
// has delivered the new value to its reader.
func BenchmarkW4Notify(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("%s/observers=%d", Qcache, n), func(b *testing.B) {
			nb := NewNotify(n)
			defer nb.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				nb.SetAndWait()
			}
		})
	}
}

// ---------- W5: invalidation of a prefix ----------

const (
	w5Groups   = 100
	w5PerGroup = 1_000
)

// BenchmarkW5Invalidate ends the freshness of one group (1% of 100,000
// entries) per op, picked by key prefix; the group is restored outside the
// timer.
func BenchmarkW5Invalidate(b *testing.B) {
	for _, lib := range Libs {
		b.Run(lib, func(b *testing.B) {
			p := NewPrefix(lib, w5Groups, w5PerGroup)
			defer p.Close()
			ctx := context.Background()
			// One untimed round first (every library alike): qcache builds
			// a query's key index on its first match by key, a one-time
			// pass that BenchmarkIndexBuild in the root measures.
			if _, err := p.Invalidate(ctx, w5Groups-1); err != nil {
				b.Fatal(err)
			}
			p.Restore(w5Groups - 1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				g := i % w5Groups
				n, err := p.Invalidate(ctx, g)
				if err != nil || n != w5PerGroup {
					b.Fatalf("group %d: %d entries, %v", g, n, err)
				}
				b.StopTimer()
				p.Restore(g)
				b.StartTimer()
			}
		})
	}
}

// ---------- W6: polling observers ----------

const (
	w6Observers = 10_000
	w6Deep      = 100_000 // goroutines with deep stacks run before after-deep
)

// BenchmarkW6Polling measures, for qcache only, the memory (heap and stacks)
// and goroutines per observer polling its own key every second (run it with
// -benchtime=1x): first in a fresh process, then with the observers started
// after 100,000 goroutines with deep stacks have run (after-deep), which
// raises the runtime's initial stack size.
func BenchmarkW6Polling(b *testing.B) {
	for _, deep := range []int{0, w6Deep} {
		name := Qcache
		if deep > 0 {
			name += "/after-deep"
		}
		b.Run(name, func(b *testing.B) {
			var bytes, stack, gs, entry, start float64
			for range b.N {
				fp := PollingFootprintAfterDeep(w6Observers, time.Second, deep)
				start += float64(fp.StartStack)
				bytes += fp.Bytes
				stack += fp.Stack
				gs += fp.Goroutines
				entry += fp.Entry
			}
			b.ReportMetric(bytes/float64(b.N), "B/observer")
			if entry > 0 {
				b.ReportMetric((bytes+entry)/float64(b.N), "B/observer+entry")
			}
			b.ReportMetric(stack/float64(b.N), "stack-B/observer")
			b.ReportMetric(gs/float64(b.N), "goroutines/observer")
			b.ReportMetric(start/float64(b.N), "start-stack-B")
		})
	}
	// The floor: a bare goroutine per subscriber, parked on a channel of
	// its own (ParkedFootprint), in a fresh process.
	b.Run("floor", func(b *testing.B) {
		var bytes, stack, gs, start float64
		for range b.N {
			fp := ParkedFootprint(w6Observers, 0)
			start += float64(fp.StartStack)
			bytes += fp.Bytes
			stack += fp.Stack
			gs += fp.Goroutines
		}
		b.ReportMetric(bytes/float64(b.N), "B/observer")
		b.ReportMetric(stack/float64(b.N), "stack-B/observer")
		b.ReportMetric(gs/float64(b.N), "goroutines/observer")
		b.ReportMetric(start/float64(b.N), "start-stack-B")
	})
}
