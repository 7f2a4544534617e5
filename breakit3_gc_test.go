package qcache

// Tests a third reviewer wrote to break garbage collection of entries
// (query.go getSlow with lockedEntryNoGC, gc.go). Each comment names the
// rule that the test holds the code to.

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// endingCtx is a context that ends between two looks at it, as a
// context.WithDeadline of the real clock does when its deadline passes
// while Get runs: Err is nil the first n times, then DeadlineExceeded.
type endingCtx struct {
	context.Context
	n    int32
	seen atomic.Int32
	done chan struct{}
}

func (c *endingCtx) Done() <-chan struct{} { return c.done }
func (c *endingCtx) Err() error {
	if c.seen.Add(1) > c.n {
		return context.DeadlineExceeded
	}
	return nil
}

// DESIGN, Garbage collection: "An entry with no observer is removed GCTime
// after ... it was created". getSlow makes the entry without a gc
// deadline (lockedEntryNoGC) and gave it one only when ctx had ended at
// its first look; when ctx ended between that look and a later one, just
// before the fetch would start, Get returned ctx's error and the new
// entry, with no fetch and no gc deadline, stayed for ever (only Remove or
// WithMaxEntries could take it): a service whose callers' deadlines run
// out under load leaked an entry each time. Whichever look ctx ends at,
// the entry goes GCTime later.
func TestBreak3GetWhoseContextEndsMidwayLeavesAnUncollectedEntry(t *testing.T) {
	for n := range int32(4) {
		synctest.Test(t, func(t *testing.T) {
			c := NewClient()
			defer c.Close()
			q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil },
				GCTime(time.Minute))
			ctx := &endingCtx{Context: context.Background(), n: n, done: make(chan struct{})}
			_, err := q.Get(ctx, "a")
			if err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
			}
			require.Equal(t, 1, c.Stats().Entries, "the entry was made")
			time.Sleep(time.Hour)
			synctest.Wait()
			assert.Equal(t, 0, c.Stats().Entries, "an hour later, with GCTime a minute (ctx ended after %d looks)", n)
		})
	}
}
