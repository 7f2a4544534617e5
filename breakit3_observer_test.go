package qcache

// Tests a third reviewer wrote to break observers (refetch.go, select.go)
// on top of the entry's live part (entryExt.live, made on first use). Each
// comment names the rule that the test holds the code to.

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// DESIGN, Observers: "the next interval fetch fires RefetchInterval after
// the entry's last state change (so a slow fetch never stacks)". The
// entry keeps lastChange only once it is live (observed, or with a
// follow-up): an entry that nobody observed had none, and an observer
// moved onto it by SetParams counted its interval from its last tick on
// the old entry. The live part now starts from the time its data (or
// error) landed. Here "y" was written at 9 s and the observer moved there
// at 9.5 s: its interval of 10 s fires at 10 s, half a second after the
// move, and refetched data one second old. Had "y" had another observer
// (a live part) the tick would come at 19 s; TanStack restarts the
// interval on a key change (19.5 s). Either way, not at 10 s.
func TestBreak3SetParamsOntoAnEntryNobodyObservedCountsFromItsLastChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var fetches atomic.Int32
		var at atomic.Int64
		t0 := time.Now()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			if fetches.Add(1) == 1 {
				at.Store(int64(time.Since(t0)))
			}
			return "f:" + p, nil
		}, StaleTime(time.Hour))
		q.SetData("x", "x0")
		o := q.Use(context.Background(), "x", RefetchInterval(10*time.Second))
		defer o.Close()
		time.Sleep(9 * time.Second)
		q.SetData("y", "y0")
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, o.SetParams("y"))
		time.Sleep(5 * time.Second) // to 14.5 s
		synctest.Wait()
		assert.Zero(t, fetches.Load(), "polled y %v after the start, %v after it was written",
			time.Duration(at.Load()), time.Duration(at.Load())-9*time.Second)
	})
}
