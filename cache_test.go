package qcache

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGetSharesOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		var wg sync.WaitGroup
		got := make([]string, 10)
		for i := range got {
			wg.Go(func() {
				v, err := q.Get(context.Background(), "a")
				assert.NoError(t, err)
				got[i] = v
			})
		}
		wg.Wait()
		assert.Equal(t, 1, src.count())
		for _, v := range got {
			assert.Equal(t, "v1:a", v)
		}
		st := c.Stats()
		assert.EqualValues(t, 9, st.Deduplicated)
		assert.EqualValues(t, 10, st.Misses)
		assert.EqualValues(t, 1, st.Fetches)
	})
}

func TestGetAnswersFreshDataFromMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src, StaleTime(10*time.Second))
		ctx := context.Background()
		v, err := q.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, "v1:a", v)
		time.Sleep(9 * time.Second)
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "v1:a", v)
		assert.False(t, q.State("a").IsStale)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.True(t, q.State("a").IsStale, "stale once StaleTime has passed")
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "v2:a", v)
		assert.Equal(t, secs(0, 10), src.starts())
		assert.EqualValues(t, 1, c.Stats().Hits)
		assert.EqualValues(t, 2, c.Stats().Misses)
	})
}

func TestStaleTimeZeroFetchesEveryGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src)
		for i := 1; i <= 3; i++ {
			v, err := q.Get(context.Background(), "a")
			require.NoError(t, err)
			assert.Equal(t, value(i, "a"), v)
		}
		assert.True(t, q.State("a").IsStale)
	})
}

func TestFetchWaitsForAFollowUpFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(2 * time.Second))
		c, q := newFuncQuery(t, src, StaleTime(time.Minute))
		ctx := context.Background()
		var wg sync.WaitGroup
		var first string
		wg.Go(func() { first, _ = q.Get(ctx, "a") })
		time.Sleep(500 * time.Millisecond)
		results := make([]string, 5)
		for i := range results {
			wg.Go(func() {
				v, err := q.Fetch(ctx, "a")
				assert.NoError(t, err)
				results[i] = v
			})
		}
		synctest.Wait()
		assert.Equal(t, 1, src.count(), "the fetch in flight is neither cancelled nor joined")
		wg.Wait()
		assert.Equal(t, "v1:a", first, "the Get gets the fetch it joined")
		for _, v := range results {
			assert.Equal(t, "v2:a", v, "Fetch gets data from a fetch that started after it asked")
		}
		assert.Equal(t, secs(0, 2), src.starts(), "one follow-up, started when the first settled")
		assert.EqualValues(t, 4, c.Stats().Deduplicated)
	})
}

func TestFetchStormCostsOneInFlightPlusOneWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		ctx := context.Background()
		var wg sync.WaitGroup
		// A Fetch every 100 ms for 10 s, against an upstream that takes 1 s.
		for i := range 100 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 100 * time.Millisecond)
				asked := time.Now()
				_, err := q.Fetch(ctx, "a")
				assert.NoError(t, err)
				assert.Less(t, time.Since(asked), 2*time.Second+time.Millisecond, "nobody starves")
			})
		}
		wg.Wait()
		starts := src.starts()
		assert.Len(t, starts, 11)
		for i := 1; i < len(starts); i++ {
			assert.Equal(t, time.Second, starts[i]-starts[i-1], "fetches run back to back, never two at once")
		}
	})
}

func TestSetDataWinsOverAnOlderFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src, StaleTime(time.Minute))
		var got string
		var wg sync.WaitGroup
		wg.Go(func() { got, _ = q.Get(context.Background(), "a") })
		time.Sleep(500 * time.Millisecond)
		q.SetData("a", "pushed")
		wg.Wait()
		assert.Equal(t, "pushed", got, "waiters of the older fetch get the entry's data")
		v, ok := q.Peek("a")
		assert.True(t, ok)
		assert.Equal(t, "pushed", v)
		s := q.State("a")
		assert.False(t, s.IsStale)
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.Equal(t, 1, src.count())
	})
}

func TestFetchStartedAfterSetDataIsStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src, StaleTime(time.Minute))
		q.SetData("a", "pushed")
		v, err := q.Fetch(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "v1:a", v)
		v, _ = q.Peek("a")
		assert.Equal(t, "v1:a", v)
	})
}

func TestInvalidationDuringAFetchKeepsItsResultStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src, StaleTime(time.Minute))
		var wg sync.WaitGroup
		wg.Go(func() { q.Get(context.Background(), "a") })
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, q.Invalidate(context.Background(), "a"))
		wg.Wait()
		s := q.State("a")
		assert.Equal(t, "v1:a", s.Data, "the result is stored")
		assert.True(t, s.IsInvalidated)
		assert.True(t, s.IsStale, "but it does not count as fresh")
		v, _ := q.Get(context.Background(), "a")
		assert.Equal(t, "v2:a", v, "the next Get refetches")
	})
}

var errFlaky = errors.New("upstream down")

func TestRetriesBackOffExponentially(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) { return "", errFlaky })
		c, q := newFuncQuery(t, src)
		_, err := q.Get(context.Background(), "a")
		require.ErrorIs(t, err, errFlaky)
		assert.Contains(t, err.Error(), "items/a")
		assert.Equal(t, secs(0, 1, 3, 7), src.starts())
		s := q.State("a")
		assert.Equal(t, StatusError, s.Status)
		assert.Equal(t, 4, s.FailureCount)
		assert.ErrorIs(t, s.Err, errFlaky)
		assert.True(t, s.IsInvalidated)
		assert.Equal(t, time.Now(), s.ErrorUpdatedAt)
		st := c.Stats()
		assert.EqualValues(t, 3, st.Retries)
		assert.EqualValues(t, 1, st.FetchErrors)
		assert.EqualValues(t, 1, st.Fetches)
		assert.EqualValues(t, 0, st.FetchSuccesses)
	})
}

func TestRetryDelayCapsAtThirtySeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) { return "", errFlaky })
		_, q := newFuncQuery(t, src, Retry(7))
		q.Get(context.Background(), "a")
		assert.Equal(t, secs(0, 1, 3, 7, 15, 31, 61, 91), src.starts())
	})
}

func TestRetryDelayOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) { return "", errFlaky })
		var seen []int
		_, q := newFuncQuery(t, src, Retry(2), RetryDelay(func(n int, err error) time.Duration {
			seen = append(seen, n)
			assert.ErrorIs(t, err, errFlaky)
			return 10 * time.Second
		}))
		q.Get(context.Background(), "a")
		assert.Equal(t, secs(0, 10, 20), src.starts())
		assert.Equal(t, []int{0, 1}, seen)
	})
}

func TestErrorsThatAreNotRetried(t *testing.T) {
	cases := map[string]struct {
		err     error
		retried bool
	}{
		"404":         {&HTTPError{StatusCode: 404, Status: "404 Not Found"}, false},
		"400":         {&HTTPError{StatusCode: 400}, false},
		"408":         {&HTTPError{StatusCode: 408}, true},
		"429":         {&HTTPError{StatusCode: 429}, true},
		"500":         {&HTTPError{StatusCode: 500}, true},
		"decode":      {&DecodeError{URL: "x", Err: errors.New("bad json")}, false},
		"plain error": {errFlaky, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newSource(func(ctx context.Context, n int, p string) (string, error) { return "", tc.err })
				_, q := newFuncQuery(t, src)
				_, err := q.Get(context.Background(), "a")
				require.ErrorIs(t, err, tc.err)
				want := 1
				if tc.retried {
					want = 4
				}
				assert.Equal(t, want, src.count())
			})
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n == 1 {
				return "", &HTTPError{StatusCode: 503, Header: http.Header{"Retry-After": {"5"}}}
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src)
		v, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "v2:a", v)
		assert.Equal(t, secs(0, 5), src.starts())
	})
}

func TestFailureKeepsDataAndSuccessClearsTheError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := true
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n > 1 && fail {
				return "", errFlaky
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src, StaleTime(time.Minute), Retry(0))
		ctx := context.Background()
		_, err := q.Get(ctx, "a")
		require.NoError(t, err)
		_, err = q.Fetch(ctx, "a")
		require.ErrorIs(t, err, errFlaky)
		s := q.State("a")
		assert.Equal(t, "v1:a", s.Data, "the last good data stays")
		assert.True(t, s.HasData)
		assert.Equal(t, StatusError, s.Status)
		assert.Equal(t, 1, s.FailureCount)
		assert.True(t, s.IsStale, "an error makes the entry stale whatever StaleTime says")
		fail = false
		v, err := q.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, "v3:a", v)
		s = q.State("a")
		assert.NoError(t, s.Err)
		assert.Equal(t, 0, s.FailureCount)
		assert.Equal(t, StatusSuccess, s.Status)
		assert.False(t, s.IsInvalidated)
	})
}

func TestCallerContextEndsItsOwnWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled time.Duration
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			start := time.Now()
			if err := sleepCtx(ctx, 5*time.Second); err != nil {
				cancelled = time.Since(start)
				return "", err
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := q.Get(ctx, "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		synctest.Wait()
		assert.Equal(t, time.Second, cancelled, "nobody waits any more: the fetch is cancelled")
		s := q.State("a")
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.Equal(t, StatusPending, s.Status, "a cancelled fetch is no error")
		st := q.c.Stats()
		assert.Equal(t, Stats{Entries: 1, Misses: 1, Fetches: 1, FetchCancelled: 1}, st)
	})
}

// TestGetAfterAnAbandonedFetchGetsData: the last waiter left, so the fetch
// was cancelled, but the upstream notices only later. A Get in between must
// not join the cancelled fetch (and get its "context canceled"): the
// cancelled fetch left the entry at once, so the Get starts a fresh one.
func TestGetAfterAnAbandonedFetchGetsData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			time.Sleep(time.Second) // an upstream that notices cancellation late
			if err := ctx.Err(); err != nil {
				return "", err
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := q.Get(ctx, "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)

		time.Sleep(100 * time.Millisecond)
		asked := time.Now()
		v, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "v2:a", v)
		assert.Equal(t, time.Second, time.Since(asked), "a new fetch starts at once and takes 1 s")
		assert.Equal(t, secs(0, 0.2), src.starts())
		st := q.c.Stats()
		assert.EqualValues(t, 1, st.FetchCancelled)
		assert.EqualValues(t, 1, st.FetchSuccesses)
	})
}

func TestFetchGoesOnWhileSomeoneWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(5 * time.Second))
		_, q := newFuncQuery(t, src)
		var wg sync.WaitGroup
		var other string
		wg.Go(func() { other, _ = q.Get(context.Background(), "a") })
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := q.Get(ctx, "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		wg.Wait()
		assert.Equal(t, "v1:a", other)
		assert.Equal(t, 1, src.count())
	})
}

func TestPrefetchIsNotCancelledByLeavingCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(5 * time.Second))
		_, q := newFuncQuery(t, src, StaleTime(time.Minute))
		q.Prefetch("a")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		q.Get(ctx, "a")
		time.Sleep(5 * time.Second)
		v, ok := q.Peek("a")
		assert.True(t, ok)
		assert.Equal(t, "v1:a", v)
		q.Prefetch("a") // fresh: no fetch
		synctest.Wait()
		assert.Equal(t, 1, src.count())
	})
}

func TestPanicInFetchBecomesAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) { panic("boom") })
		_, q := newFuncQuery(t, src)
		_, err := q.Get(context.Background(), "a")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "panicked: boom")
		assert.Equal(t, 1, src.count(), "a panic is not retried")
	})
}

func TestTimeoutBoundsEachAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Hour))
		_, q := newFuncQuery(t, src, Timeout(2*time.Second), Retry(1))
		_, err := q.Get(context.Background(), "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, secs(0, 3), src.starts(), "2 s attempt, 1 s delay, then the retry")
	})
}

func TestStaleWhileRevalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src, StaleWhileRevalidate(), StaleTime(10*time.Second))
		ctx := context.Background()
		v, _ := q.Get(ctx, "a") // no data: waits
		assert.Equal(t, "v1:a", v)
		time.Sleep(20 * time.Second)
		start := time.Now()
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "v1:a", v, "stale data at once")
		assert.Equal(t, start, time.Now())
		assert.True(t, q.State("a").IsFetching())
		time.Sleep(time.Second)
		synctest.Wait()
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "v2:a", v)
		assert.Equal(t, 2, src.count())
	})
}

func TestGCRemovesUnobservedEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src, GCTime(time.Minute), StaleTime(Forever))
		q.Get(context.Background(), "a") // created at 0, settled at 1 s
		time.Sleep(59*time.Second + 500*time.Millisecond)
		_, ok := q.Peek("a")
		assert.True(t, ok, "gc counts from the last settled fetch")
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		_, ok = q.Peek("a")
		assert.False(t, ok)
		assert.Equal(t, 0, c.Stats().Entries)
	})
}

func TestGCWaitsForObserversAndFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(90 * time.Second))
		c, q := newFuncQuery(t, src, GCTime(time.Minute))
		q.Prefetch("a")
		time.Sleep(80 * time.Second)
		assert.Equal(t, 1, c.Stats().Entries, "never removed while a fetch is in flight")
		o := q.Use(context.Background(), "a", RefetchOnMount(Never))
		time.Sleep(5 * time.Minute)
		assert.Equal(t, 1, c.Stats().Entries, "never removed while observed")
		o.Close()
		time.Sleep(time.Minute - time.Millisecond)
		assert.Equal(t, 1, c.Stats().Entries)
		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.Equal(t, 0, c.Stats().Entries, "removed GCTime after the last observer left")
	})
}

func TestMaxEntriesEvictsLeastRecentlyUsed(t *testing.T) {
	t.Run("start", func(t *testing.T) { testEvictsLeastRecentlyUsed(t, 0) })
	// Entries keep the low 32 bits of the use clock: ages must be compared
	// across the wrap (the recently used entry 0 has the smallest stamp).
	t.Run("across the use clock's wrap", func(t *testing.T) { testEvictsLeastRecentlyUsed(t, 1<<32-60) })
}

func testEvictsLeastRecentlyUsed(t *testing.T, clock uint64) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithMaxEntries(20))
		defer c.Close()
		c.useClock.Store(clock)
		var zeroFetches atomic.Int32
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) {
			if p == 0 {
				zeroFetches.Add(1)
			}
			return p * 2, nil
		}, StaleTime(Forever))
		ctx := context.Background()
		o := q.Use(ctx, 1000)
		synctest.Wait() // the mount fetch has run
		for i := range 100 {
			_, err := q.Get(ctx, i)
			require.NoError(t, err)
			q.Get(ctx, 0) // keep 0 recently used
			assert.LessOrEqual(t, c.Stats().Entries, 21)
		}
		_, ok := q.Peek(0)
		assert.True(t, ok, "the recently used entry stays")
		assert.Equal(t, int32(1), zeroFetches.Load(), "the recently used entry was never evicted")
		_, ok = q.Peek(1000)
		assert.True(t, ok, "observed entries are never evicted")
		_, ok = q.Peek(1)
		assert.False(t, ok, "an old entry is evicted")
		assert.Greater(t, c.Stats().Evictions, uint64(70))
		o.Close()
	})
}

func TestSetDataUpdateRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src, StaleTime(time.Minute))
		ctx := context.Background()
		q.Update("a", func(old string, ok bool) string {
			assert.False(t, ok)
			return "first"
		})
		v, err := q.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, "first", v, "SetData data is fresh")
		q.Update("a", func(old string, ok bool) string { return old + "+1" })
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "first+1", v)
		assert.Equal(t, 0, src.count())
		s := q.State("a")
		assert.Equal(t, StatusSuccess, s.Status)
		assert.Equal(t, time.Now(), s.DataUpdatedAt)
		q.Remove("a")
		_, ok := q.Peek("a")
		assert.False(t, ok)
		v, _ = q.Get(ctx, "a")
		assert.Equal(t, "v1:a", v)
	})
}

func TestCloseFailsCallsAndWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Hour))
		c, q := newFuncQuery(t, src)
		var wg sync.WaitGroup
		var err error
		wg.Go(func() { _, err = q.Get(context.Background(), "a") })
		synctest.Wait()
		require.NoError(t, c.Close())
		wg.Wait()
		assert.ErrorIs(t, err, ErrClosed)
		_, err = q.Get(context.Background(), "a")
		assert.ErrorIs(t, err, ErrClosed)
		_, err = q.Fetch(context.Background(), "a")
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, c.Invalidate(context.Background(), Filter{}), ErrClosed)
		assert.NoError(t, c.Close(), "Close is idempotent")
	})
}

func TestOfflineFetchesPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		c.SetOnline(false)
		assert.False(t, c.IsOnline())
		var wg sync.WaitGroup
		var v string
		wg.Go(func() { v, _ = q.Get(context.Background(), "a") })
		time.Sleep(time.Minute)
		assert.Equal(t, 0, src.count(), "no call while offline")
		assert.Equal(t, FetchPaused, q.State("a").FetchStatus)
		c.SetOnline(true)
		wg.Wait()
		assert.Equal(t, "v1:a", v)
		assert.Equal(t, secs(60), src.starts())
	})
}

func TestKeysOfFunctionQueries(t *testing.T) {
	c := NewClient()
	defer c.Close()
	type page struct {
		User string
		Page int `query:"page"`
	}
	q := NewQueryFunc(c, Key{"posts"}, func(ctx context.Context, p page) (string, error) { return "", nil }, KeyPrefix("svc"))
	assert.Equal(t, Key{"svc", "posts", "ann", "?page=2"}, q.Key(page{"ann", 2}))
	q2 := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (string, error) { return "", nil })
	assert.Equal(t, Key{"n", strconv.Itoa(7)}, q2.Key(7))
}
