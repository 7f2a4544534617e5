package qcachetest_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcachetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newUsers(t *testing.T, up *qcachetest.Upstream, opts ...qcache.QueryOption) (*qcache.Client, *qcache.Query[string, User]) {
	t.Helper()
	c := qcache.NewClient(qcache.WithBaseURL("http://api.test"), qcache.WithHTTPClient(up.Client()))
	t.Cleanup(func() { c.Close() })
	return c, qcache.NewQuery[string, User](c, qcache.Endpoint{URL: "/users/$id"}, opts...)
}

// TestWaitIdleOnTheRealClock: WaitIdle returns once the background fetches
// have settled, successes and failures alike.
func TestWaitIdleOnTheRealClock(t *testing.T) {
	var up qcachetest.Upstream
	up.Script("/users/1", qcachetest.Reply{Body: User{ID: "1"}, Latency: 30 * time.Millisecond})
	up.Script("/users/2", qcachetest.Reply{Status: 404, Latency: 20 * time.Millisecond})
	c, q := newUsers(t, &up, qcache.Retry(0))

	qcachetest.WaitIdle(c) // nothing started yet
	start := time.Now()
	q.Prefetch("1")
	q.Prefetch("2")
	qcachetest.WaitIdle(c)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
	s := c.Stats()
	assert.EqualValues(t, 2, s.Fetches)
	assert.EqualValues(t, 1, s.FetchSuccesses)
	assert.EqualValues(t, 1, s.FetchErrors)
	_, ok := q.Peek("1")
	assert.True(t, ok)
	assert.Error(t, q.State("2").Err)
}

// TestWaitIdleContextGivesUp: a fetch that does not settle makes
// WaitIdleContext return its context's error, saying how many are in
// flight; cancelling the fetch ends the wait.
func TestWaitIdleContextGivesUp(t *testing.T) {
	var up qcachetest.Upstream
	up.Script("/users/{id}", qcachetest.Reply{Body: User{}, Latency: time.Hour})
	c, q := newUsers(t, &up)
	q.Prefetch("1")
	q.Prefetch("2")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := qcachetest.WaitIdleContext(ctx, c)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "2 fetches still in flight")

	c.Cancel(qcache.Filter{}) // cancelled fetches count as settled at once
	require.NoError(t, qcachetest.WaitIdleContext(ctx, c), "idle even with an ended context")
	assert.EqualValues(t, 2, c.Stats().FetchCancelled)
}

// TestWaitIdleInABubble: WaitIdle works in virtual time too, to within its
// polling step; a fetch paused while offline is in flight.
func TestWaitIdleInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var up qcachetest.Upstream
		up.Script("/users/1",
			qcachetest.Reply{Status: 503, Latency: time.Second},
			qcachetest.Reply{Body: User{ID: "1"}, Latency: time.Second})
		c, q := newUsers(t, &up)
		start := time.Now()
		q.Prefetch("1")
		qcachetest.WaitIdle(c)
		// 1 s, the retry delay of 1 s, 1 s; WaitIdle looks every millisecond.
		assert.GreaterOrEqual(t, time.Since(start), 3*time.Second)
		assert.LessOrEqual(t, time.Since(start), 3*time.Second+time.Millisecond)
		assert.EqualValues(t, 1, c.Stats().FetchSuccesses)

		c.SetOnline(false)
		q.Invalidate(t.Context(), "1")
		q.Prefetch("1")
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		assert.ErrorIs(t, qcachetest.WaitIdleContext(ctx, c), context.DeadlineExceeded, "paused while offline")
		assert.Equal(t, qcache.FetchPaused, q.State("1").FetchStatus)
		c.SetOnline(true)
		qcachetest.WaitIdle(c)
		assert.Equal(t, 3, up.Count("/users/1"))
	})
}
