// Package wait has the two timed waits qcache needs, a sleep that a context
// can cut short and a ticker, built on time.AfterFunc instead of timer
// channels.
//
// The reason is a bug of Go's runtime, seen with Go 1.26.8; its failure is
// the one that the open golang/go#78156 reports. Inside a testing/synctest
// bubble, a receive from the channel of a timer that has expired runs the
// timer on the receiving goroutine, under a race-detector context that every timer of the bubble
// shares. Under -race, two such receives at the same moment corrupt the race
// detector's state, and the test binary dies with a segmentation fault or
// "ThreadSanitizer: CHECK failed". AfterFunc timers of a bubble run only from
// the bubble's own timer loop, one at a time, so code that waits through this
// package can be tested in bubbles with -race, ours and our users' alike.
package wait

import (
	"context"
	"sync"
	"time"
)

// Sleep waits for d to pass or ctx to end, whichever comes first, and
// reports whether d passed. It returns false at once if ctx has ended, and
// true at once if d is not positive.
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	if d <= 0 {
		return true
	}
	elapsed := make(chan struct{})
	t := time.AfterFunc(d, func() { close(elapsed) })
	select {
	case <-elapsed:
		return true
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

// Ticker delivers a tick on C every period, like time.Ticker: ticks keep to
// the grid of multiples of the period from its start, and a tick the reader
// was too slow to take is dropped rather than delivered late.
type Ticker struct {
	// C receives the ticks.
	C <-chan struct{}

	c      chan struct{}
	period time.Duration

	mu      sync.Mutex
	t       *time.Timer
	next    time.Time // when the armed tick is due
	stopped bool
}

// NewTicker starts a ticker whose first tick comes one period from now. It
// panics if period is not positive, as time.NewTicker does.
func NewTicker(period time.Duration) *Ticker {
	if period <= 0 {
		panic("wait: NewTicker: period not positive")
	}
	c := make(chan struct{}, 1)
	k := &Ticker{C: c, c: c, period: period}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.next = time.Now().Add(period)
	k.t = time.AfterFunc(period, k.fire)
	return k
}

func (k *Ticker) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	select {
	case k.c <- struct{}{}:
	default: // the reader has not taken the last tick: drop this one
	}
	now := time.Now()
	if late := now.Sub(k.next); late >= 0 {
		k.next = k.next.Add((late/k.period + 1) * k.period)
	}
	k.t.Reset(k.next.Sub(now))
}

// Stop ends the ticks. A tick already on C stays there; none comes after
// Stop returns.
func (k *Ticker) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}
