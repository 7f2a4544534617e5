package bench

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/qcache-go/qcache"
)

// Footprint is what W6 measures: the memory and goroutines that n polling
// observers hold, per observer.
type Footprint struct {
	Bytes      float64 // (HeapInuse + StackInuse) after GC, difference per observer
	Stack      float64 // the StackInuse part of Bytes
	Goroutines float64 // runtime.NumGoroutine difference per observer
	Fetches    uint64  // fetches started while the observers ran
	Entry      float64 // (HeapInuse + StackInuse) per entry made for the observers, before they start
}

// inUse returns HeapInuse and StackInuse after a full collection (which
// also frees the stacks of goroutines that have ended).
func inUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// PollingFootprint starts n observers, each on its own key with
// RefetchInterval(every), and measures what they hold once they have
// mounted. The entries are made (with SetData) before the first
// measurement, so the difference is the observers' alone: their structs,
// channels, timers, goroutines and stacks, and the client's registry.
func PollingFootprint(n int, every time.Duration) Footprint {
	return pollingFootprint(n, every, 0)
}

// PollingFootprintAfterDeep is PollingFootprint with deep other
// goroutines, each with about 3 KiB of stack in use, running throughout
// (they count in neither measurement). Collections that scan them make the
// runtime start new goroutines with stacks of their average size
// (adaptive initial stack size, on by default since Go 1.19), as in a
// service whose other goroutines have deep stacks: the observers start
// with such stacks, and keep them unless they use little of them.
func PollingFootprintAfterDeep(n int, every time.Duration, deep int) Footprint {
	return pollingFootprint(n, every, deep)
}

// deepStack uses about depth*300 bytes of stack, then waits for release.
//
//go:noinline
func deepStack(depth int, release <-chan struct{}) byte {
	var pad [256]byte
	if depth > 0 {
		pad[depth] = deepStack(depth-1, release)
		return pad[depth/2]
	}
	<-release
	return pad[0]
}

func pollingFootprint(n int, every time.Duration, deep int) Footprint {
	c := qcache.NewClient()
	defer c.Close()
	q := qcache.NewQueryFunc(c, qcache.Key{"poll"}, func(_ context.Context, id int) (int, error) {
		return id, nil
	})
	he, se := inUse()
	for i := range n {
		q.SetData(i, i)
	}
	ctx := context.Background()
	obs := make([]*qcache.Observer[int], 0, n)
	release := make(chan struct{})
	var deepDone sync.WaitGroup
	for range deep {
		deepDone.Go(func() { deepStack(10, release) })
	}
	defer deepDone.Wait()
	defer close(release)
	g0 := runtime.NumGoroutine()
	f0 := c.Stats().Fetches
	h0, s0 := inUse() // its collections set the initial stack size
	for i := range n {
		obs = append(obs, q.Use(ctx, i, qcache.RefetchInterval(every)))
	}
	// Each observer fetches once on mount (the data is stale: default
	// StaleTime 0); wait for those fetches to settle.
	deadline := time.Now().Add(30 * time.Second)
	for c.Stats().Fetches-f0 < uint64(n) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, o := range obs {
		for o.State().IsFetching() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond) // let the fetch goroutines end
	h1, s1 := inUse()
	g1 := runtime.NumGoroutine()
	fp := Footprint{
		Bytes:      (float64(h1+s1) - float64(h0+s0)) / float64(n),
		Stack:      (float64(s1) - float64(s0)) / float64(n),
		Goroutines: float64(g1-g0) / float64(n),
		Fetches:    c.Stats().Fetches - f0,
	}
	if deep == 0 {
		fp.Entry = (float64(h0+s0) - float64(he+se)) / float64(n)
	}
	runtime.KeepAlive(obs)
	return fp
}
