package bench

import (
	"context"
	"runtime"
	"time"
	"unsafe"
)

// heapLive returns the bytes of live heap objects after full collections,
// once the heap has settled: a cache made and closed before (another
// library's, in the same process) may still be let go by goroutines and
// timers of its own, and freeing it during a measurement made one reading
// negative.
func heapLive() uint64 {
	var m runtime.MemStats
	last := uint64(0)
	for range 20 {
		runtime.GC()
		runtime.GC() // a second cycle frees what the first one only finalised
		runtime.ReadMemStats(&m)
		if last != 0 && m.HeapAlloc >= last-last/1000 {
			break // no longer shrinking (within 0.1%)
		}
		last = m.HeapAlloc
		time.Sleep(10 * time.Millisecond) // lets exiting goroutines drop what they hold
	}
	return m.HeapAlloc
}

// MemoryPerEntry fills lib's cache with n entries through its Get (each a
// miss answered by an instant fetch) and returns the heap it holds per
// entry beyond the keys and values themselves.
//
// The subtraction: the keys' and values' bytes are made before the first
// measurement and are kept alive until after the second, so they are in
// both and not in the difference. What the difference still holds of the
// key and value themselves is one string header each, stored inline where
// the cache keeps them; that is their own size (unsafe.Sizeof, 16 + 16
// bytes), subtracted per entry. Everything else, including a second copy of
// a header, a boxed interface or a per-entry timer, is the cache's
// overhead. The cache's fixed cost (its shards, goroutines' heap) is spread
// over the n entries.
func MemoryPerEntry(lib string, n int) float64 {
	keys := Keys(n)
	vals := Values(keys)
	ctx := context.Background()
	fetch := func(_ context.Context, k string) (string, error) { return vals[k], nil }

	before := heapLive()
	g := NewGetter(lib, fetch)
	for _, k := range keys {
		if _, err := g.Get(ctx, k); err != nil {
			panic(err)
		}
	}
	after := heapLive()
	runtime.KeepAlive(g)
	runtime.KeepAlive(keys)
	runtime.KeepAlive(vals)
	g.Close()

	own := float64(unsafe.Sizeof(keys[0]) + unsafe.Sizeof(vals[keys[0]]))
	return (float64(after)-float64(before))/float64(n) - own
}
