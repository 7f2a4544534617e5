package qcache

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fetch a Get or Fetch starts runs on the caller's goroutine when the
// caller's context can never end (Done() == nil): nothing can cut its wait
// short, so a goroutine of its own would only cost. These tests hold the
// inline path to the semantics of the goroutine path.

// onCallersGoroutine reports whether the fetch function calling it runs
// under getSlow or Fetch, that is on the goroutine of the Get or Fetch.
func onCallersGoroutine() bool {
	buf := make([]byte, 64<<10)
	st := string(buf[:runtime.Stack(buf, false)])
	return strings.Contains(st, ").getSlow(") || strings.Contains(st, ").Fetch(")
}

func TestInlineFetchRunsOnTheCallersGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inline []bool
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			inline = append(inline, onCallersGoroutine())
			return p, nil
		})
		_, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		_, err = q.Fetch(context.Background(), "a")
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err = q.Get(ctx, "b")
		require.NoError(t, err)
		_, err = q.Fetch(ctx, "b")
		require.NoError(t, err)
		assert.Equal(t, []bool{true, true, false, false}, inline,
			"Get and Fetch with a context that cannot end run the fetch; with one that can, a goroutine does")
	})
}

// Close cancels an inline fetch as any other: the function's context ends
// with ErrClosed as its cause, a joiner hears of it at once, and the inline
// caller when its function returns, which Close waits for.
func TestInlineFetchClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		var cause error
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			<-ctx.Done()
			cause = context.Cause(ctx)
			time.Sleep(time.Second) // a function slow to notice
			return "late", nil
		})
		var wg sync.WaitGroup
		var inlineErr, joinErr error
		var inlineAt, joinAt time.Duration
		t0 := time.Now()
		wg.Go(func() {
			_, inlineErr = q.Get(context.Background(), "a")
			inlineAt = time.Since(t0)
		})
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wg.Go(func() {
			_, joinErr = q.Get(ctx, "a")
			joinAt = time.Since(t0)
		})
		synctest.Wait()
		require.NoError(t, c.Close())
		assert.Equal(t, time.Second, time.Since(t0), "Close waits for the inline fetch's function")
		wg.Wait()
		assert.ErrorIs(t, cause, ErrClosed, "the function's context ends with ErrClosed")
		assert.ErrorIs(t, inlineErr, ErrClosed)
		assert.ErrorIs(t, joinErr, ErrClosed)
		assert.Equal(t, time.Duration(0), joinAt, "a joiner gets ErrClosed at once")
		assert.Equal(t, time.Second, inlineAt, "the inline caller, when its function returns")
		st := c.Stats()
		assert.Equal(t, uint64(1), st.FetchCancelled)
		assert.Equal(t, uint64(0), st.FetchSuccesses, "the late answer is dropped")
	})
}

// A fetch function that calls Close on the inline path: Close does not
// wait for its own caller (it runs under runOwned), and the Get returns
// ErrClosed.
func TestInlineFetchClosesTheClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			require.NoError(t, c.Close())
			return p, ctx.Err()
		})
		_, err := q.Get(context.Background(), "a")
		assert.ErrorIs(t, err, ErrClosed)
		require.NoError(t, c.Close())
	})
}

// Joiners of an inline fetch share it: one call of the function, its
// result for all of them; a joiner whose context ends leaves at once and
// the fetch goes on for the inline caller, and Cancel ends it for all.
func TestInlineFetchJoiners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		var wg sync.WaitGroup
		vals := make([]string, 3)
		errs := make([]error, 3)
		for i := range 3 {
			wg.Go(func() { vals[i], errs[i] = q.Get(context.Background(), "a") })
			synctest.Wait()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var leftErr error
		wg.Go(func() { _, leftErr = q.Get(ctx, "a") })
		time.Sleep(500 * time.Millisecond)
		cancel()
		synctest.Wait()
		assert.ErrorIs(t, leftErr, context.Canceled, "a joiner whose context ends leaves at once")
		assert.True(t, q.State("a").IsFetching(), "and the fetch goes on")
		wg.Wait()
		for i := range 3 {
			assert.NoError(t, errs[i])
			assert.Equal(t, "v1:a", vals[i])
		}
		assert.Equal(t, 1, src.count())
		assert.Equal(t, uint64(3), c.Stats().Deduplicated)

		// Cancel: the entry reverts at once and every caller hears of it.
		require.NoError(t, q.Invalidate(context.Background(), "a"))
		var inlineErr, joinErr error
		wg.Go(func() { _, inlineErr = q.Get(context.Background(), "a") })
		synctest.Wait()
		wg.Go(func() { _, joinErr = q.Get(context.Background(), "a") })
		synctest.Wait()
		c.Cancel(Filter{})
		assert.Equal(t, FetchIdle, q.State("a").FetchStatus, "reverted at once")
		wg.Wait()
		assert.ErrorIs(t, inlineErr, context.Canceled)
		assert.ErrorIs(t, joinErr, context.Canceled)
		assert.Equal(t, "v1:a", q.State("a").Data, "the data before the fetch stays")
	})
}

// A panic in an inline fetch is an error for its caller and its joiners;
// a fetch function that ends its goroutine (runtime.Goexit) leaves no
// joiner waiting and the entry idle.
func TestInlineFetchPanicAndGoexit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mode atomic.Value
		mode.Store("panic")
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			time.Sleep(time.Second)
			switch mode.Load() {
			case "panic":
				panic("boom")
			case "goexit":
				runtime.Goexit()
			}
			return p, nil
		})
		var wg sync.WaitGroup
		var inlineErr, joinErr error
		wg.Go(func() { _, inlineErr = q.Get(context.Background(), "a") })
		synctest.Wait()
		wg.Go(func() { _, joinErr = q.Get(context.Background(), "a") })
		wg.Wait()
		assert.ErrorContains(t, inlineErr, "panicked: boom")
		assert.ErrorContains(t, joinErr, "panicked: boom")

		mode.Store("goexit")
		returned := false
		wg.Go(func() {
			q.Get(context.Background(), "b") //nolint:errcheck // its goroutine exits inside
			returned = true
		})
		synctest.Wait()
		wg.Go(func() { _, joinErr = q.Get(context.Background(), "b") })
		wg.Wait()
		assert.False(t, returned, "the inline caller's goroutine exited in the fetch function")
		assert.ErrorIs(t, joinErr, errFetchAborted)
		assert.Equal(t, FetchIdle, q.State("b").FetchStatus)

		mode.Store("value")
		v, err := q.Get(context.Background(), "b")
		require.NoError(t, err, "the next Get fetches again")
		assert.Equal(t, "b", v)
	})
}

// Retries of an inline fetch keep their delays, in virtual time, and each
// attempt its Timeout; while offline the inline fetch waits in FetchPaused.
func TestInlineFetchRetriesTimeoutsAndOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n == 2 {
				return "", sleepCtx(ctx, time.Hour) // cut by Timeout
			}
			if n < 4 {
				return "", errors.New("down")
			}
			return value(n, p), nil
		})
		c, q := newFuncQuery(t, src, Timeout(10*time.Second), Retry(3))
		v, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "v4:a", v)
		// 0: fails; 1 s later the second attempt, cut at 10 s; 2 s later
		// the third fails; 4 s later the fourth.
		assert.Equal(t, secs(0, 1, 13, 17), src.starts())

		c.SetOnline(false)
		var wg sync.WaitGroup
		wg.Go(func() { v, err = q.Fetch(context.Background(), "a") })
		synctest.Wait()
		assert.Equal(t, FetchPaused, q.State("a").FetchStatus)
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, 4, src.count(), "no call while offline")
		c.SetOnline(true)
		wg.Wait()
		require.NoError(t, err)
		assert.Equal(t, "v5:a", v)
	})
}

// The attempt's context of an inline fetch: Err and Deadline without Done,
// exact in virtual time; Canceled once the attempt has returned; contexts
// and AfterFuncs derived from it end with it, leaving no goroutine
// (synctest.Test fails on one left blocked).
func TestInlineAttemptContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type seen struct {
			deadline      time.Time
			errBefore     error
			errAfter      error
			causeAfter    error
			deadlineExact bool
		}
		var got seen
		var kept context.Context
		var childDone, afterFired atomic.Bool
		c := NewClient()
		defer c.Close()
		start := time.Now()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			d, ok := ctx.Deadline()
			got.deadline, got.deadlineExact = d, ok && d.Equal(start.Add(5*time.Second))
			got.errBefore = ctx.Err()
			time.Sleep(5 * time.Second)
			got.errAfter = ctx.Err() // no Done asked for: no timer, yet exact
			got.causeAfter = context.Cause(ctx)
			kept = ctx
			return p, nil
		}, Timeout(5*time.Second), Retry(0))
		_, err := q.Get(context.Background(), "a")
		require.NoError(t, err, "a function that returns a value after its deadline still succeeds")
		assert.True(t, got.deadlineExact, "deadline %v", got.deadline)
		assert.NoError(t, got.errBefore)
		assert.ErrorIs(t, got.errAfter, context.DeadlineExceeded)
		assert.ErrorIs(t, got.causeAfter, context.DeadlineExceeded)

		q2 := NewQueryFunc(c, Key{"k2"}, func(ctx context.Context, p string) (string, error) {
			child, cancel := context.WithCancel(ctx)
			go func() {
				<-child.Done()
				childDone.Store(true)
			}()
			context.AfterFunc(ctx, func() { afterFired.Store(true) })
			kept = ctx
			_ = cancel // ended by the attempt's end, not by the function
			return p, nil
		})
		_, err = q2.Get(context.Background(), "a")
		require.NoError(t, err)
		synctest.Wait()
		assert.True(t, childDone.Load(), "a child context ends when the attempt returns")
		assert.True(t, afterFired.Load(), "an AfterFunc runs when the attempt returns")
		assert.ErrorIs(t, kept.Err(), context.Canceled)
		<-kept.Done()
	})
}

// TestStressInlineFetches: goroutines mix Get and Fetch with contexts that
// cannot end (inline), Gets with contexts that end, Cancel, Remove,
// SetData and Invalidate on a few keys, against an upstream that fails,
// panics, stalls deaf to cancellation and exits its goroutine never. A
// bounded number of operations; run it with -race. Nothing may hang, every
// value must be one its key could hold, and Stats must add up after Close.
func TestStressInlineFetches(t *testing.T) {
	const (
		workers = 8
		ops     = 400
		keys    = 4
	)
	c := NewClient()
	var calls atomic.Int64
	q := NewQueryFunc(c, Key{"s"}, func(ctx context.Context, k int) (string, error) {
		n := calls.Add(1)
		switch n % 20 {
		case 0:
			panic("stress: upstream panicked")
		case 1, 2:
			return "", errors.New("stress: upstream failed")
		case 3:
			for range 100 {
				runtime.Gosched() // deaf to cancellation
			}
		case 4, 5:
			for range 100 {
				if ctx.Err() != nil {
					return "", ctx.Err()
				}
				runtime.Gosched()
			}
		}
		return "f:" + strconv.Itoa(k), nil
	}, Retry(1), RetryDelay(func(int, error) time.Duration { return 0 }))
	var bad atomic.Int64
	var badSample atomic.Value
	check := func(what string, k int, v string, err error) {
		ok := err == nil && (v == "f:"+strconv.Itoa(k) || v == "s:"+strconv.Itoa(k)) ||
			err != nil && (strings.Contains(err.Error(), "stress: upstream") || errors.Is(err, context.Canceled) ||
				errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrClosed))
		if !ok {
			bad.Add(1)
			badSample.Store(what + " of " + strconv.Itoa(k) + ": " + strconv.Quote(v) + " " + errString(err))
		}
	}
	noHang(t, "the stress run", func() {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 17))
				for range ops {
					k := rng.IntN(keys)
					switch rng.IntN(10) {
					case 0, 1, 2, 3:
						v, err := q.Get(context.Background(), k)
						check("Get", k, v, err)
					case 4:
						v, err := q.Fetch(context.Background(), k)
						check("Fetch", k, v, err)
					case 5:
						ctx, cancel := context.WithCancel(context.Background())
						if rng.IntN(2) == 0 {
							go cancel()
						}
						v, err := q.Get(ctx, k)
						check("Get(ctx)", k, v, err)
						cancel()
					case 6:
						c.Cancel(Filter{Key: q.Key(k), Exact: true})
					case 7:
						q.Remove(k)
					case 8:
						q.SetData(k, "s:"+strconv.Itoa(k))
					case 9:
						q.Invalidate(context.Background(), k) //nolint:errcheck // its result is the entry's
					}
				}
			})
		}
		wg.Wait()
		require.NoError(t, c.Close())
	})
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d bad answers, e.g. %v", n, badSample.Load())
	}
	st := c.Stats()
	assert.Equal(t, st.Fetches, st.FetchSuccesses+st.FetchErrors+st.FetchCancelled, "%+v", st)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
