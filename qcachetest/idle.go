package qcachetest

import (
	"context"
	"fmt"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/wait"
)

// idlePoll is how often WaitIdleContext looks at the client's counters.
const idlePoll = time.Millisecond

// WaitIdle blocks until c has no fetch in flight: every fetch it has
// started has succeeded, failed after its retries, or been cancelled. A
// fetch waiting to retry, or paused while the client is offline, is in
// flight. WaitIdle waits as long as that takes; WaitIdleContext bounds it.
//
// WaitIdle is for tests on the real clock, where it polls c.Stats every
// millisecond. It does not stop new fetches (an observer's next poll, say),
// and a cancelled fetch counts as settled at once, though its request may
// still be winding down (Client.Close waits for those). Inside a
// testing/synctest bubble, synctest.Wait is the better tool: it returns when
// every goroutine of the bubble is blocked, fetches and handlers included,
// without moving the clock.
func WaitIdle(c *qcache.Client) {
	_ = WaitIdleContext(context.Background(), c)
}

// WaitIdleContext is WaitIdle bounded by ctx: it returns nil once c has no
// fetch in flight, or an error wrapping ctx's error, and saying how many
// fetches are still in flight, if ctx ends first.
func WaitIdleContext(ctx context.Context, c *qcache.Client) error {
	for {
		inflight := inFlight(c)
		if inflight == 0 {
			return nil
		}
		if !wait.Sleep(ctx, idlePoll) {
			return fmt.Errorf("qcachetest: WaitIdle: %d fetches still in flight: %w", inflight, ctxError(ctx))
		}
	}
}

// inFlight returns the number of fetches of c in flight, or 0 when there
// was a moment with none. Stats reads its counters one after another, so a
// fetch that starts and settles between two reads could hide one in flight;
// the second look at Fetches rules that out: when no fetch started between
// the two, the settled counters read in between cover every fetch started.
func inFlight(c *qcache.Client) uint64 {
	s := c.Stats()
	settled := s.FetchSuccesses + s.FetchErrors + s.FetchCancelled
	if settled >= s.Fetches && c.Stats().Fetches == s.Fetches {
		return 0
	}
	if settled >= s.Fetches {
		return 1 // one started since: look again
	}
	return s.Fetches - settled
}
