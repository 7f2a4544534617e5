package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// SlowSource is a fetcher that takes Delay and counts its calls.
type SlowSource struct {
	Delay time.Duration
	calls atomic.Int64
	nanos atomic.Int64 // time spent in Fetch, summed
}

// Fetch sleeps for Delay and returns the key's value.
func (s *SlowSource) Fetch(ctx context.Context, key string) (string, error) {
	t := time.Now()
	s.calls.Add(1)
	time.Sleep(s.Delay)
	s.nanos.Add(int64(time.Since(t)))
	return "v:" + key, nil
}

// Calls returns how many times Fetch was called.
func (s *SlowSource) Calls() int64 { return s.calls.Load() }

// MeanFetch returns the time one Fetch took on average, as measured inside
// it: the fetch's own time, against which a storm's wall time is compared.
func (s *SlowSource) MeanFetch() time.Duration {
	n := s.calls.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(s.nanos.Load() / n)
}

// Storm releases n goroutines at once, all asking g for the same cold key,
// and returns the wall time from the release until the last one has its
// value. The goroutines are started, and parked at the gate, before the
// clock starts.
func Storm(ctx context.Context, g Getter, key string, n int) (time.Duration, error) {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	errs := make(chan error, n)
	want := "v:" + key
	ready.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-gate
			v, err := g.Get(ctx, key)
			if err == nil && v != want {
				err = fmt.Errorf("got %q, want %q", v, want)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	ready.Wait()
	t := time.Now()
	close(gate)
	done.Wait()
	wall := time.Since(t)
	close(errs)
	return wall, <-errs
}
