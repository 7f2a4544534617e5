package qcache

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sync/singleflight"
)

// heapLive returns the bytes of live heap objects once full collections
// stop freeing anything (within 0.1%).
func heapLive() uint64 {
	var m runtime.MemStats
	last := uint64(0)
	for range 20 {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		if last != 0 && m.HeapAlloc >= last-last/1000 {
			break
		}
		last = m.HeapAlloc
		time.Sleep(10 * time.Millisecond)
	}
	return m.HeapAlloc
}

// BenchmarkEntryMemory is bench/'s W3 for qcache alone, at 100,000 and
// 1,000,000 entries: the live heap a Query[string, string] holds per entry
// filled through Get (each a miss answered at once), beyond the keys' and
// values' bytes, which are made before the first measurement and kept
// alive past the second; their two string headers, stored inline, are
// subtracted (32 B). W3 uses StaleTime(Forever); the stale=1m cases use
// a finite StaleTime, the usual configuration, where fresh data is queued
// to turn stale. B/closed is what the client leaves on the heap once it is
// closed and dropped (runtime timers linger in the runtime's timer heaps).
// Run it with -benchtime=1x.
func BenchmarkEntryMemory(b *testing.B) {
	for _, st := range []struct {
		name string
		d    time.Duration
	}{{"", Forever}, {"stale=1m,", time.Minute}} {
		for _, n := range []int{100_000, 1_000_000} {
			b.Run(fmt.Sprintf("%sentries=%d", st.name, n), func(b *testing.B) {
				var sum, closed float64
				for range b.N {
					per, left := entryMemory(n, st.d)
					sum += per
					closed += left
				}
				b.ReportMetric(sum/float64(b.N), "B/entry")
				b.ReportMetric(closed/float64(b.N), "B/closed")
			})
		}
	}
}

// entryMemory returns the bytes per entry of n entries filled by Get with
// StaleTime st, and the bytes left on the heap after the client is closed
// and dropped.
func entryMemory(n int, st time.Duration) (perEntry, closed float64) {
	keys := make([]string, n)
	vals := make(map[string]string, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
		vals[keys[i]] = "value-" + strconv.Itoa(i)
	}
	ctx := context.Background()
	before := heapLive()
	c := NewClient()
	q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, k string) (string, error) {
		return vals[k], nil
	}, StaleTime(st))
	for _, k := range keys {
		if _, err := q.Get(ctx, k); err != nil {
			panic(err)
		}
	}
	after := heapLive()
	runtime.KeepAlive(q)
	c.Close()
	c, q = nil, nil
	left := heapLive()
	runtime.KeepAlive(keys)
	runtime.KeepAlive(vals)
	own := float64(unsafe.Sizeof(keys[0]) + unsafe.Sizeof(vals[keys[0]]))
	return (float64(after)-float64(before))/float64(n) - own, float64(left) - float64(before)
}

// BenchmarkMiss measures the miss path: a Get of a key never asked before,
// answered by a fetch function that returns at once (entry creation, the
// fetch, publishing its result), against the hand-written equivalent,
// singleflight.Group.Do and a sync.Map store. Each op uses a new key.
// qcache is measured twice: with context.Background(), a context that
// never ends, and with a cancellable one, as a request's context is (made
// once, never cancelled), since Get may only run the fetch on the caller's
// goroutine when the caller's context cannot end.
func BenchmarkMiss(b *testing.B) {
	ctx := context.Background()
	qcacheMiss := func(ctx context.Context) func(b *testing.B) {
		return func(b *testing.B) {
			c := NewClient()
			defer c.Close()
			q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, k int) (int, error) {
				return k, nil
			}, StaleTime(Forever))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if v, err := q.Get(ctx, i); err != nil || v != i {
					b.Fatal(v, err)
				}
			}
			b.StopTimer() // the deferred Close is teardown, which the baseline has none of
		}
	}
	b.Run("qcache", qcacheMiss(ctx))
	reqCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("qcache-cancellable", qcacheMiss(reqCtx))
	b.Run("singleflight", func(b *testing.B) {
		var g singleflight.Group
		var m sync.Map
		fetch := func(_ context.Context, k int) (int, error) { return k, nil }
		get := func(ctx context.Context, k int) (int, error) {
			if v, ok := m.Load(k); ok {
				return v.(int), nil
			}
			v, err, _ := g.Do(strconv.Itoa(k), func() (any, error) {
				v, err := fetch(ctx, k)
				if err == nil {
					m.Store(k, v)
				}
				return v, err
			})
			if err != nil {
				return 0, err
			}
			return v.(int), nil
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if v, err := get(ctx, i); err != nil || v != i {
				b.Fatal(v, err)
			}
		}
	})
	// The hand-written equivalent of a Get with a cancellable context:
	// the caller stops waiting at once when its context ends, so the fetch
	// runs on a goroutine of its own (singleflight.Group.DoChan).
	b.Run("singleflight-cancellable", func(b *testing.B) {
		var g singleflight.Group
		var m sync.Map
		fetch := func(_ context.Context, k int) (int, error) { return k, nil }
		get := func(ctx context.Context, k int) (int, error) {
			if v, ok := m.Load(k); ok {
				return v.(int), nil
			}
			ch := g.DoChan(strconv.Itoa(k), func() (any, error) {
				v, err := fetch(context.WithoutCancel(ctx), k)
				if err == nil {
					m.Store(k, v)
				}
				return v, err
			})
			select {
			case r := <-ch:
				if r.Err != nil {
					return 0, r.Err
				}
				return r.Val.(int), nil
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if v, err := get(reqCtx, i); err != nil || v != i {
				b.Fatal(v, err)
			}
		}
	})
}
