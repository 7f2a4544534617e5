package qcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for the defects of "Correct under real concurrency": each
// failed on the code before its fix.

func TestMaxEntriesNeverEvictsTheEntryBeingInserted(t *testing.T) {
	c := NewClient(WithMaxEntries(2))
	defer c.Close()
	block := make(chan struct{})
	q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) {
		if p < 2 {
			<-block // the observed entries stay fetching: nothing is evictable
		}
		return p, nil
	})
	ctx := context.Background()
	o1, o2 := q.Use(ctx, 0), q.Use(ctx, 1)
	noHang(t, "Get past a full bound", func() {
		for p := 2; p < 6; p++ {
			v, err := q.Get(ctx, p)
			assert.NoError(t, err)
			assert.Equal(t, p, v)
		}
	})
	st := c.Stats()
	assert.Positive(t, st.OverBound, "inserts past the bound are counted")
	assert.Equal(t, 3, st.Entries, "the two observed entries and the last insert")
	assert.Equal(t, uint64(3), st.Evictions, "each earlier insert went once idle")
	close(block)
	o1.Close()
	o2.Close()
}

func TestRemoveDuringFetchIsNeverServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src, StaleTime(time.Hour))
		ctx := context.Background()
		for i := range 10 {
			q.SetData(itoa(i), "other")
		}
		q.Prefetch("a")
		c.Keys(Filter{}) // merges the entries into the lock-free read map
		q.Remove("a")
		time.Sleep(2 * time.Second) // the fetch settles into the removed entry
		_, ok := q.Peek("a")
		assert.False(t, ok, "a removed entry holds nothing")
		q.SetData("a", "new")
		v, err := q.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, "new", v, "SetData after Remove wins")
		require.NoError(t, q.Invalidate(ctx, "a"))
		v, err = q.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, "v2:a", v, "invalidated data is fetched again")
	})
}

func TestCancelRevertsAtOnceAndDropsTheLateAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q := newFuncQuery(t, newSource(func(ctx context.Context, n int, p string) (string, error) {
			time.Sleep(time.Second) // ignores ctx
			return "late", nil
		}))
		q.SetData("a", "old")
		require.NoError(t, q.Invalidate(context.Background(), "a"))
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err = q.Fetch(context.Background(), "a")
		}()
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, Fetching, q.State("a").FetchStatus)
		c.Cancel(Filter{})
		<-done
		assert.ErrorIs(t, err, context.Canceled)
		s := q.State("a")
		assert.Equal(t, FetchIdle, s.FetchStatus, "reverted at once")
		assert.Equal(t, "old", s.Data)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		v, _ := q.Peek("a")
		assert.Equal(t, "old", v, "the late answer is dropped")
		st := c.Stats()
		assert.Equal(t, uint64(1), st.FetchCancelled)
		assert.Equal(t, uint64(0), st.FetchSuccesses)
	})
}

func TestLastObserverLeavingCancelsItsFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled atomic.Int32
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if err := sleepCtx(ctx, time.Second); err != nil {
				cancelled.Add(1)
				return "", err
			}
			return value(n, p), nil
		})
		c, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a")
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, Fetching, q.State("a").FetchStatus)
		o.Close()
		synctest.Wait()
		assert.Equal(t, int32(1), cancelled.Load(), "the fetch function saw its context end")
		s := q.State("a")
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.Equal(t, StatusPending, s.Status, "reverted to the state before the fetch")
		assert.Equal(t, uint64(1), c.Stats().FetchCancelled)

		o = q.Use(context.Background(), "a")
		time.Sleep(2 * time.Second)
		assert.Equal(t, "v2:a", o.State().Data, "a new observer starts a new fetch")
		o.Close()
	})
}

func TestFinalFailureIsOneChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q := newFuncQuery(t, newSource(func(ctx context.Context, n int, p string) (string, error) {
			return "", errors.New("down")
		}), Retry(1), RetryDelay(func(int, error) time.Duration { return time.Second }))
		var mu sync.Mutex
		var seen []State[string]
		c.stateHook = func(_ Key, s any) {
			mu.Lock()
			seen = append(seen, s.(State[string]))
			mu.Unlock()
		}
		_, err := q.Get(context.Background(), "a")
		require.Error(t, err)
		mu.Lock()
		defer mu.Unlock()
		for _, s := range seen {
			if s.FailureCount == 2 {
				assert.Equal(t, StatusError, s.Status, "the last failure arrives with its error: %+v", s)
				assert.Error(t, s.Err)
			}
		}
		last := seen[len(seen)-1]
		assert.Equal(t, 2, last.FailureCount)
		assert.Equal(t, FetchIdle, last.FetchStatus)
	})
}

func TestEndedContextNeverCallsUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := q.Get(ctx, "a")
		assert.ErrorIs(t, err, context.Canceled)
		_, err = q.Fetch(ctx, "a")
		assert.ErrorIs(t, err, context.Canceled)
		o := q.Use(ctx, "b")
		for range o.Changes() {
		}
		assert.ErrorIs(t, c.Refetch(ctx, Filter{}), context.Canceled)
		synctest.Wait()
		assert.Equal(t, 0, src.count(), "no call reached the fetch function")
		assert.Equal(t, uint64(0), c.Stats().Fetches)
	})
}

func TestRetryAfterPastTheCapGivesUp(t *testing.T) {
	for _, v := range []string{"3600", "Fri, 31 Dec 9999 23:59:59 GMT", "9223372037", "18446744074", "99999999999999"} {
		t.Run(v, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := NewQueryFunc(NewClient(), Key{"r"}, func(ctx context.Context, p string) (string, error) {
					return "", &HTTPError{StatusCode: 503, Header: http.Header{"Retry-After": {v}}}
				})
				defer q.c.Close()
				start := time.Now()
				_, err := q.Get(context.Background(), "a")
				var he *HTTPError
				require.ErrorAs(t, err, &he, "a wait past MaxRetryDelay gives up the retry")
				assert.Equal(t, time.Duration(0), time.Since(start), "no wrapped, short wait either")
				assert.Equal(t, uint64(0), q.c.Stats().Retries)
			})
		})
	}
}

func TestGCTimeNearForeverKeepsOtherQueriesCollected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		f := func(ctx context.Context, p string) (string, error) { return p, nil }
		long := NewQueryFunc(c, Key{"long"}, f, GCTime(Forever-time.Second))
		short := NewQueryFunc(c, Key{"short"}, f, GCTime(time.Second))
		ctx := context.Background()
		time.Sleep(2 * time.Second) // the gc clock has run: now + GCTime overflows
		_, err := long.Get(ctx, "a")
		require.NoError(t, err)
		_, err = short.Get(ctx, "a")
		require.NoError(t, err)
		time.Sleep(time.Hour)
		_, ok := long.Peek("a")
		assert.True(t, ok, "a GCTime near Forever keeps the entry")
		_, ok = short.Peek("a")
		assert.False(t, ok, "the other query's entry is collected")
		_, err = short.Get(ctx, "b")
		require.NoError(t, err)
		time.Sleep(2 * time.Second)
		_, ok = short.Peek("b")
		assert.False(t, ok, "and later ones too")
	})
}

func TestStaleAtExactlyStaleTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(10*time.Second))
		_ = c
		_, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		o := q.Use(context.Background(), "a", RefetchOnMount(Never))
		defer o.Close()
		time.Sleep(10*time.Second - 1)
		assert.False(t, q.State("a").IsStale)
		time.Sleep(1)
		assert.True(t, q.State("a").IsStale, "stale at DataUpdatedAt+StaleTime, whichever timer runs first")
		assert.True(t, o.State().IsStale)
	})
}

// ---------- callbacks may close ----------

func TestObserverCloseFromItsIntervalFunction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, q := newFuncQuery(t, newSource(slowValue(0)))
		var o *Observer[string]
		var calls atomic.Int32
		ready := make(chan struct{})
		o = q.Use(context.Background(), "a", RefetchIntervalFunc(func(s State[string]) time.Duration {
			<-ready
			if calls.Add(1) == 3 {
				o.Close()
			}
			return time.Second
		}))
		close(ready)
		for range o.Changes() {
		}
		assert.GreaterOrEqual(t, calls.Load(), int32(3))
	})
}

func TestClientCloseFromCallbacks(t *testing.T) {
	t.Run("fetch function", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := NewClient()
			q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
				c.Close()
				return p, ctx.Err()
			})
			_, err := q.Get(context.Background(), "a")
			assert.ErrorIs(t, err, ErrClosed)
			c.Close()
		})
	})
	t.Run("interval function", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := NewClient()
			q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil })
			o := q.Use(context.Background(), "a", RefetchIntervalFunc(func(s State[string]) time.Duration {
				if s.HasData {
					c.Close()
				}
				return time.Second
			}))
			for range o.Changes() {
			}
			c.Close()
		})
	})
	t.Run("predicate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c := NewClient()
			q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil })
			q.SetData("a", "x")
			stop := c.InvalidateEvery(context.Background(), time.Second, Filter{Predicate: func(Key) bool {
				c.Close()
				return true
			}})
			time.Sleep(2 * time.Second)
			stop()
			c.Close()
		})
	})
	t.Run("mutation hook", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `"ok"`)
		}))
		defer srv.Close()
		c := NewClient(WithBaseURL(srv.URL))
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil })
		o := q.Use(context.Background(), "a")
		m := NewMutation[struct{}, string, string](c, Endpoint{Method: "POST", URL: "/m"},
			MutationOnSuccess(func(ctx context.Context, r string, p struct{}, b string) { c.Close() }),
			MutationInvalidates(Filter{}))
		noHang(t, "Close from OnSuccess", func() {
			_, err := m.Do(context.Background(), struct{}{}, "b")
			assert.NoError(t, err)
			c.Close()
		})
		for range o.Changes() {
		}
	})
}

func TestRetryAfterPastTheCapReachesObservers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n == 1 {
				return "", &HTTPError{StatusCode: 429, Header: http.Header{"Retry-After": {"3600"}}}
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(time.Second))
		defer o.Close()
		synctest.Wait()
		s := o.State()
		var he *HTTPError
		require.ErrorAs(t, s.Err, &he, "the entry holds the server's answer at once")
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.Equal(t, 1, s.FailureCount)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, "v2:a", o.State().Data, "the next poll tries again")
	})
}

func TestMutationRetryAfterPastTheCapGivesUp(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	m := NewMutation[struct{}, string, string](c, Endpoint{Method: "POST", URL: "/m"})
	noHang(t, "Do", func() {
		_, err := m.Do(context.Background(), struct{}{}, "b")
		var he *HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, time.Hour, he.RetryAfter)
	})
	assert.Equal(t, int32(1), calls.Load(), "no retry")
}
