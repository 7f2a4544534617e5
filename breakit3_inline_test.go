package qcache

// Tests a third reviewer wrote to break the inline fetch (a Get or Fetch
// whose context cannot end runs the fetch on its own goroutine: cache.go
// runCounted, claimInlineLocked; query.go getSlow) and the paths around it.
// Each comment names the rule (shared/DESIGN.md, docs/semantics.md or a
// doc comment) that the test holds the code to.

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
)

// runCounted's doc: "Should run end abnormally (runtime.Goexit in the fetch
// function ...), op is abandoned, so that its joiners do not wait for
// ever", and docs/semantics.md: the inline path changes nothing else. The
// same function on the goroutine path (a Get whose context can end, or
// Prefetch) was not covered: its goroutine had no such guard, so the op never
// settled: every caller waited until its own context ended, and the entry
// showed Fetching until the last of them had left. Both paths now share
// runCounted.
func TestBreak3GoexitOnTheFetchGoroutineAbandonsTheFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			time.Sleep(time.Second)
			runtime.Goexit()
			return p, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		t0 := time.Now()
		_, err := q.Get(ctx, "a")
		assert.ErrorIs(t, err, errFetchAborted, "as on the inline path")
		assert.Equal(t, time.Second, time.Since(t0), "the caller hears of it when the function's goroutine exits")
		assert.Equal(t, FetchIdle, q.State("a").FetchStatus)
	})
}

// WithMaxConcurrentFetches: "A slot is held for one attempt". run takes
// the slot in acquireSlot and gave it back with a plain call after the
// attempt, not a deferred one: a fetch function that ended its goroutine
// (runtime.Goexit; require.FailNow in a test's fetch function on the
// inline path does exactly that) kept the slot for ever, and with a
// bound of one every later fetch of the client waited in FetchQueued for
// ever, although the op was abandoned.
func TestBreak3GoexitInAFetchGivesItsSlotBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithMaxConcurrentFetches(1))
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			if p == "exit" {
				runtime.Goexit()
			}
			return p, nil
		})
		var wg sync.WaitGroup
		wg.Go(func() { q.Get(context.Background(), "exit") }) //nolint:errcheck // its goroutine exits inside
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		var err error
		wg.Go(func() { _, err = q.Get(ctx, "b") })
		time.Sleep(time.Minute)
		st := q.State("b").FetchStatus
		cancel()
		wg.Wait()
		assert.NoError(t, err, "the next fetch gets the slot back")
		assert.NotEqual(t, FetchQueued, st, "queued a minute behind a fetch that is gone")
	})
}
