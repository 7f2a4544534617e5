package bench

import (
	"context"
	"runtime"
	"runtime/metrics"
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
	StartStack uint64  // the runtime's initial stack size when the goroutines started (adaptive since Go 1.19)
}

// startStack returns the size new goroutines' stacks start with now.
func startStack() uint64 {
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
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

// deepStack uses about depth*300 bytes of stack, tells ready, then waits
// for release.
//
//go:noinline
func deepStack(depth int, ready *sync.WaitGroup, release <-chan struct{}) byte {
	var pad [256]byte
	if depth > 0 {
		pad[depth] = deepStack(depth-1, ready, release)
		return pad[depth/2]
	}
	ready.Done()
	<-release
	return pad[0]
}

// startDeep starts deep goroutines and returns once all of them wait with
// deep stacks (so that the next collections scan them so), with the
// function that releases them and waits for their end.
func startDeep(deep int) (release func()) {
	ch := make(chan struct{})
	var done, ready sync.WaitGroup
	ready.Add(deep)
	for range deep {
		done.Go(func() { deepStack(10, &ready, ch) })
	}
	ready.Wait()
	return func() {
		close(ch)
		done.Wait()
	}
}

// ParkedFootprint measures the floor under W6, what a goroutine per
// subscriber costs before any of the subscriber's own state: n goroutines,
// each parked in a receive on a channel of its own (the smallest way for a
// goroutine to wait until it is woken), measured as W6 measures observers,
// after deep other goroutines started (0: none). The runtime keeps a
// parked goroutine's g record (about 480 bytes), its sudog and its stack.
func ParkedFootprint(n, deep int) Footprint {
	defer startDeep(deep)()
	wake := make([]chan struct{}, n)
	var parked, ended sync.WaitGroup
	fp, _ := measureFootprint(n, func() {
		for i := range wake {
			wake[i] = make(chan struct{}, 1)
			parked.Add(1)
			ended.Add(1)
			go func(ch <-chan struct{}) {
				defer ended.Done()
				parked.Done()
				<-ch
			}(wake[i])
		}
		parked.Wait()
		time.Sleep(50 * time.Millisecond) // as W6: let them all reach the receive
	})
	for _, ch := range wake {
		ch <- struct{}{}
	}
	ended.Wait()
	return fp
}

// measureFootprint measures what start, which starts n of something and
// returns once they have settled, left in use: HeapInuse + StackInuse and
// goroutines after collections, before and after, per one of the n, and
// the initial stack size they started with. before is HeapInuse +
// StackInuse before start.
func measureFootprint(n int, start func()) (fp Footprint, before uint64) {
	g0 := runtime.NumGoroutine()
	h0, s0 := inUse() // its collections set the initial stack size
	fp.StartStack = startStack()
	start()
	h1, s1 := inUse()
	g1 := runtime.NumGoroutine()
	fp.Bytes = (float64(h1+s1) - float64(h0+s0)) / float64(n)
	fp.Stack = (float64(s1) - float64(s0)) / float64(n)
	fp.Goroutines = float64(g1-g0) / float64(n)
	return fp, h0 + s0
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
	defer startDeep(deep)()
	f0 := c.Stats().Fetches
	fp, before := measureFootprint(n, func() {
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
	})
	fp.Fetches = c.Stats().Fetches - f0
	if deep == 0 {
		fp.Entry = (float64(before) - float64(he+se)) / float64(n)
	}
	runtime.KeepAlive(obs)
	return fp
}
