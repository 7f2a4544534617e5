package qcache

import (
	"context"
	"runtime/metrics"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(5*time.Second))
		time.Sleep(20 * time.Second)
		o.Close()
		// Mount at 0 (settles at 1), then 5 s after each settle.
		assert.Equal(t, secs(0, 6, 12, 18), src.starts())
		time.Sleep(time.Minute)
		assert.Len(t, src.starts(), 4, "unsubscribing stops polling")
	})
}

// TestPollingCountsFromEveryChange: SetData moves the next tick to one
// interval after it, and a change never restarts polling that options
// switched off.
func TestPollingCountsFromEveryChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(5*time.Second))
		defer o.Close()
		time.Sleep(3 * time.Second)
		q.SetData("a", "pushed") // the tick due at 6 s moves to 8 s
		time.Sleep(7500 * time.Millisecond)
		assert.Equal(t, secs(0, 8), src.starts())

		o.SetOptions(RefetchInterval(0)) // 10.5 s
		time.Sleep(time.Second)
		q.SetData("a", "pushed again")
		time.Sleep(20 * time.Second)
		assert.Equal(t, secs(0, 8), src.starts(), "polling switched off stays off")

		o.SetOptions(Enabled(false), RefetchInterval(5*time.Second)) // 31.5 s
		q.SetData("a", "and again")
		time.Sleep(20 * time.Second)
		assert.Equal(t, secs(0, 8), src.starts(), "a disabled observer does not poll")

		o.SetOptions(Enabled(true)) // 51.5 s: fetches on mount, settles at 52.5
		time.Sleep(7 * time.Second)
		assert.Equal(t, secs(0, 8, 51.5, 57.5), src.starts())
	})
}

func TestObserversOfOneEntryShareOneFetchPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(100 * time.Millisecond))
		c, q := newFuncQuery(t, src)
		ctx, cancel := context.WithCancel(context.Background())
		for range 10 {
			q.Use(ctx, "a", RefetchInterval(5*time.Second))
		}
		time.Sleep(21 * time.Second)
		cancel()
		synctest.Wait()
		assert.Equal(t, secs(0, 5.1, 10.2, 15.3, 20.4), src.starts())
		assert.Equal(t, 0, c.Stats().Observers, "a cancelled context ends the observers")
	})
}

func TestConditionalPollingWithSetOptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src)
		active := false
		interval := func() time.Duration {
			if active {
				return 5 * time.Second
			}
			return 0
		}
		o := q.Use(context.Background(), "a", RefetchInterval(interval()))
		defer o.Close()
		time.Sleep(20 * time.Second)
		assert.Equal(t, secs(0), src.starts(), "not active: no polling")
		active = true
		o.SetOptions(RefetchInterval(interval()))
		time.Sleep(11 * time.Second)
		assert.Equal(t, secs(0, 25, 30), src.starts(), "polling starts one interval after it is switched on")
		active = false
		o.SetOptions(RefetchInterval(interval()))
		time.Sleep(time.Minute)
		assert.Len(t, src.starts(), 3, "switched off again")
	})
}

func TestRefetchOnFocus(t *testing.T) {
	cases := []struct {
		trigger Trigger
		stale   bool
		fetches int
	}{
		{WhenStale, true, 2},
		{WhenStale, false, 1},
		{Always, false, 2},
		{Never, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.trigger.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newSource(slowValue(0))
				staleTime := Forever
				if tc.stale {
					staleTime = 0
				}
				c, q := newFuncQuery(t, src, StaleTime(staleTime))
				o := q.Use(context.Background(), "a", RefetchOnFocus(tc.trigger))
				defer o.Close()
				synctest.Wait()
				c.SetFocused(true) // already focused: nothing
				synctest.Wait()
				assert.Equal(t, 1, src.count())
				c.SetFocused(false)
				assert.False(t, c.IsFocused())
				time.Sleep(time.Minute)
				c.SetFocused(true)
				synctest.Wait()
				assert.Equal(t, tc.fetches, src.count())
			})
		})
	}
}

func TestManualRefetchShowsIsRefetching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(2 * time.Second))
		_, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a", Enabled(false))
		defer o.Close()
		time.Sleep(time.Minute)
		assert.Equal(t, 0, src.count(), "disabled: no mount fetch")
		s, err := o.Refetch(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "v1:a", s.Data)
		var wg sync.WaitGroup
		wg.Go(func() {
			s, err := o.Refetch(context.Background())
			assert.NoError(t, err)
			assert.Equal(t, "v2:a", s.Data)
			assert.False(t, s.IsRefetching())
		})
		time.Sleep(time.Second)
		s = o.State()
		assert.True(t, s.IsRefetching())
		assert.False(t, s.IsLoading())
		assert.Equal(t, "v1:a", s.Data, "data is kept while refetching")
		wg.Wait()
	})
}

func TestIntervalFunctionPollsUntilAJobIsDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n < 4 {
				return "running", nil
			}
			return "done", nil
		})
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "job", RefetchIntervalFunc(func(s State[string]) time.Duration {
			if s.Data == "done" {
				return 0
			}
			return 2 * time.Second
		}))
		defer o.Close()
		time.Sleep(time.Minute)
		assert.Equal(t, secs(0, 2, 4, 6), src.starts())
		assert.Equal(t, "done", o.State().Data)
	})
}

func TestIntervalFunctionOfStaleness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src, StaleTime(30*time.Second))
		o := q.Use(context.Background(), "a", RefetchIntervalFunc(func(s State[string]) time.Duration {
			if time.Since(s.DataUpdatedAt) >= 30*time.Second {
				return 5 * time.Second
			}
			return 0
		}))
		defer o.Close()
		time.Sleep(2 * time.Minute)
		// Fresh until 30 s, then polling at 5 s: one fetch, which makes it fresh again.
		assert.Equal(t, secs(0, 35, 70, 105), src.starts())
	})
}

func TestPollingSkipsTicksWhileUnfocused(t *testing.T) {
	for _, background := range []bool{false, true} {
		t.Run(map[bool]string{false: "foreground", true: "background"}[background], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newSource(slowValue(0))
				c, q := newFuncQuery(t, src)
				o := q.Use(context.Background(), "a", RefetchInterval(10*time.Second),
					RefetchIntervalInBackground(background), RefetchOnFocus(Never))
				defer o.Close()
				time.Sleep(time.Second)
				c.SetFocused(false)
				time.Sleep(45 * time.Second)
				if background {
					assert.Equal(t, secs(0, 10, 20, 30, 40), src.starts())
				} else {
					assert.Equal(t, secs(0), src.starts())
				}
				c.SetFocused(true)
				time.Sleep(9 * time.Second)
				if !background {
					assert.Equal(t, secs(0, 50), src.starts(), "no catch-up: ticks go on from the last skipped one")
				}
			})
		})
	}
}

func TestOfflinePausesAndReconnectRefetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(100 * time.Millisecond))
		c, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(10*time.Second))
		defer o.Close()
		time.Sleep(time.Second)
		c.SetOnline(false)
		time.Sleep(35 * time.Second)
		assert.Equal(t, secs(0), src.starts(), "no call while offline")
		assert.Equal(t, FetchPaused, o.State().FetchStatus)
		c.SetOnline(true)
		time.Sleep(time.Second)
		assert.Equal(t, secs(0, 36), src.starts(), "the paused fetch runs, shared with the reconnect refetch")
		assert.Equal(t, FetchIdle, o.State().FetchStatus)
	})
}

func TestReconnectTriggers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		always := q.Use(context.Background(), "a", RefetchOnReconnect(Always))
		never := q.Use(context.Background(), "b", RefetchOnReconnect(Never))
		defer always.Close()
		defer never.Close()
		synctest.Wait()
		c.SetOnline(false)
		c.SetOnline(true)
		synctest.Wait()
		assert.Equal(t, 3, src.count(), "a twice, b once")
	})
}

func TestDisabledObserverNeverFetchesByItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", Enabled(false), RefetchInterval(time.Second), RefetchOnFocus(Always))
		defer o.Close()
		time.Sleep(10 * time.Second)
		c.SetFocused(false)
		c.SetFocused(true)
		c.SetOnline(false)
		c.SetOnline(true)
		synctest.Wait()
		assert.Equal(t, 0, src.count())
		o.SetOptions(Enabled(true))
		time.Sleep(2500 * time.Millisecond)
		assert.Equal(t, secs(10, 11, 12), src.starts(), "enabling fetches per RefetchOnMount, then polls")
	})
}

func TestChangesDeliversTheNewestState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src, StaleTime(Forever))
		q.SetData("a", "cached")
		o := q.Use(context.Background(), "a", RefetchOnMount(Always))
		s := <-o.Changes()
		assert.Equal(t, "cached", s.Data, "cached data shows at once")
		time.Sleep(time.Second)
		synctest.Wait()
		// Several changes happened (fetch start, success); the reader sees only the newest.
		s = <-o.Changes()
		assert.Equal(t, "v1:a", s.Data)
		assert.Equal(t, FetchIdle, s.FetchStatus)
		for i := range 100 {
			q.SetData("a", itoa(i)) // nobody reads: never blocks
		}
		s = <-o.Changes()
		assert.Equal(t, "99", s.Data)
		o.Close()
		_, ok := <-o.Changes()
		assert.False(t, ok, "closed when the observer ends")
	})
}

func TestClientCloseEndsEveryObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src)
		var obs []*Observer[string]
		var cols []*collected[string]
		for i := range 50 {
			o := q.Use(context.Background(), itoa(i), RefetchInterval(time.Second))
			obs = append(obs, o)
			cols = append(cols, collectStates(o))
		}
		time.Sleep(5 * time.Second)
		assert.Equal(t, 50, c.Stats().Observers)
		require.NoError(t, c.Close())
		for _, col := range cols {
			<-col.done // Changes closed
		}
		n := src.count()
		time.Sleep(time.Minute)
		assert.Equal(t, n, src.count())
		assert.Equal(t, 0, c.Stats().Observers)
		_, err := obs[0].Refetch(context.Background())
		assert.ErrorIs(t, err, ErrClosed)
		o := q.Use(context.Background(), "late")
		_, ok := <-o.Changes()
		assert.True(t, ok)
		assert.ErrorIs(t, o.State().Err, ErrClosed)
	})
}

func TestRemoveResetsAnObservedEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a")
		defer o.Close()
		synctest.Wait()
		assert.Equal(t, "v1:a", o.State().Data)
		q.Remove("a")
		synctest.Wait()
		assert.Equal(t, "v2:a", o.State().Data, "refetched for its observer")
	})
}

func TestRefetchIntervalFuncOfAnotherTypePanics(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil })
	assert.Panics(t, func() {
		q.Use(context.Background(), 1, RefetchIntervalFunc(func(State[string]) time.Duration { return 0 }))
	})
}

func TestPanickingIntervalFunctionStopsPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchIntervalFunc(func(s State[string]) time.Duration {
			if s.Data == "v2:a" {
				panic("bad interval")
			}
			return time.Second
		}))
		defer o.Close()
		time.Sleep(time.Minute)
		assert.Equal(t, secs(0, 1), src.starts(), "polls until the function panics, then stops")
		s, err := o.Refetch(context.Background())
		require.NoError(t, err, "the observer lives on")
		assert.Equal(t, "v3:a", s.Data)
	})
}

func TestChangesMadeLateHoldTheStateAsItIs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a")
		time.Sleep(time.Second)
		synctest.Wait()
		q.SetData("a", "pushed")
		ch := o.Changes() // first called after several changes
		assert.Equal(t, ch, o.Changes(), "one channel")
		s := <-ch
		assert.Equal(t, "pushed", s.Data)
		assert.Equal(t, o.State(), s, "the state as it is, which is the last one delivered")
		q.SetData("a", "again")
		s = <-ch
		assert.Equal(t, "again", s.Data)
		o.Close()
		_, ok := <-ch
		assert.False(t, ok, "closed when the observer ends")

		// First called after the end: the last state the observer saw,
		// then closed; later changes of the entry are not the observer's.
		o = q.Use(context.Background(), "b")
		time.Sleep(time.Second)
		synctest.Wait()
		o.Close()
		q.SetData("b", "after the end")
		s, ok = <-o.Changes()
		require.True(t, ok)
		assert.Equal(t, value(2, "b"), s.Data)
		_, ok = <-o.Changes()
		assert.False(t, ok)
	})
}

func TestChangesKeepTheLastDeliveryWhenNotifyOnNarrows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a")
		time.Sleep(time.Second)
		synctest.Wait()
		o.SetOptions(NotifyOn(DataChanged))
		_, err := o.Refetch(context.Background()) // new data: delivered
		require.NoError(t, err)
		go func() { _, _ = o.Refetch(context.Background()) }()
		synctest.Wait() // fetching: not delivered
		require.True(t, o.State().IsFetching())
		s := <-o.Changes()
		assert.Equal(t, value(2, "a"), s.Data)
		assert.Equal(t, FetchIdle, s.FetchStatus, "the last state delivered, not the current one")
		o.Close()
	})
}

func TestUseStartsTheMountFetchBeforeItReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(time.Minute))
		assert.True(t, o.State().IsFetching(), "fixed interval")
		o2 := q.Use(context.Background(), "b", RefetchIntervalFunc(func(State[string]) time.Duration { return time.Minute }))
		assert.True(t, o2.State().IsFetching(), "interval function")
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		assert.Equal(t, secs(0, 0, 61, 61), src.starts(), "both poll a minute after their fetch landed")
		o.Close()
		o2.Close()
	})
}

// An observer's mount must not start goroutines of its own besides the
// observer's (and the fetch's): the runtime keeps the record of every
// goroutine that was alive at one time, and observers start by thousands.
func TestUseStartsOneGoroutine(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(context.Context, int) (int, error) { return 0, nil }, StaleTime(Forever))
	const n = 200
	for i := range n {
		q.SetData(i, i) // fresh: no mount fetch
	}
	created := func() uint64 {
		s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := created()
	obs := make([]*Observer[int], n)
	for i := range n {
		obs[i] = q.Use(context.Background(), i, RefetchInterval(time.Hour))
	}
	got := created() - before
	for _, o := range obs {
		o.Close()
	}
	assert.Less(t, got, uint64(n+n/2), "one goroutine per observer (a mount step on a goroutine of its own made it two)")
}

// TestTickInstantsAreExact pins, to the nanosecond of virtual time, when
// interval ticks start their fetches, and the deadline each one is queued
// for in the client's deadline queue (an offset from its epoch plus one):
// no fetch starts 1 ns before it is due, and one starts when it is. The
// durations are odd on purpose: a deadline rounded or off by one shows.
func TestTickInstantsAreExact(t *testing.T) {
	const took = 100*time.Millisecond + 3*time.Nanosecond
	t.Run("fixed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const d = time.Second + 7*time.Nanosecond
			src := newSource(slowValue(took))
			c, q := newFuncQuery(t, src)
			o := q.Use(context.Background(), "a", RefetchInterval(d))
			defer o.Close()
			synctest.Wait()
			assert.Equal(t, []time.Duration{0}, src.starts(), "the mount")
			time.Sleep(took)
			synctest.Wait()
			assertQueuedTick(t, c, src, o, took+d)
			expectFetchAt(t, src, took+d)
			expectFetchAt(t, src, 2*(took+d))
		})
	})
	t.Run("moved by a change", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const d = time.Second + 7*time.Nanosecond
			src := newSource(slowValue(took))
			c, q := newFuncQuery(t, src)
			o := q.Use(context.Background(), "a", RefetchInterval(d))
			defer o.Close()
			time.Sleep(took + 300*time.Millisecond + 11*time.Nanosecond)
			at := time.Since(src.t0)
			q.SetData("a", "pushed") // the tick due at took+d moves to at+d
			synctest.Wait()
			assertQueuedTick(t, c, src, o, at+d)
			expectFetchAt(t, src, at+d)
			expectFetchAt(t, src, at+d+took+d)

			time.Sleep(time.Second)
			o.SetOptions(RefetchInterval(0))
			synctest.Wait()
			assertQueuedTick(t, c, src, o, 0)
			time.Sleep(time.Minute)
			assert.Len(t, src.starts(), 3, "polling switched off")
			time.Sleep(13 * time.Nanosecond)
			at = time.Since(src.t0)
			o.SetOptions(RefetchInterval(d)) // the first tick is one interval away
			synctest.Wait()
			assertQueuedTick(t, c, src, o, at+d)
			expectFetchAt(t, src, at+d)
		})
	})
	t.Run("RefetchIntervalFunc", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// 1 s + 4 ns for "v<n>:a", 1.75 s + 7 ns for "pushed!"; no
			// polling before the first data.
			const unit = 250*time.Millisecond + time.Nanosecond
			src := newSource(slowValue(took))
			c, q := newFuncQuery(t, src)
			o := q.Use(context.Background(), "a", q.RefetchIntervalFunc(func(s State[string]) time.Duration {
				return time.Duration(len(s.Data)) * unit
			}))
			defer o.Close()
			d := 4 * unit
			time.Sleep(took)
			synctest.Wait()
			assertQueuedTick(t, c, src, o, took+d)
			expectFetchAt(t, src, took+d)
			expectFetchAt(t, src, 2*(took+d))
			time.Sleep(took + 500*time.Millisecond + 17*time.Nanosecond)
			at := time.Since(src.t0)
			q.SetData("a", "pushed!")
			synctest.Wait()
			assertQueuedTick(t, c, src, o, at+7*unit)
			expectFetchAt(t, src, at+7*unit)
		})
	})
}

// expectFetchAt sleeps to 1 ns before at (virtual time since src started)
// and checks that no fetch has started by then, then to at, and checks
// that one started at at.
func expectFetchAt(t *testing.T, src *source, at time.Duration) {
	t.Helper()
	n := src.count()
	time.Sleep(time.Until(src.t0.Add(at - 1)))
	synctest.Wait()
	require.Equal(t, n, src.count(), "no fetch starts 1 ns before %v", at)
	time.Sleep(time.Nanosecond)
	synctest.Wait()
	starts := src.starts()
	require.Len(t, starts, n+1, "a fetch starts at %v", at)
	assert.Equal(t, at, starts[n])
}

// assertQueuedTick checks that o's next tick is queued in c's deadline
// queue for at (virtual time since src started), or not queued for 0.
func assertQueuedTick[T any](t *testing.T, c *Client, src *source, o *Observer[T], at time.Duration) {
	t.Helper()
	c.gc.mu.Lock()
	defer c.gc.mu.Unlock()
	if at == 0 {
		assert.Zero(t, o.tickPos, "no tick queued")
		return
	}
	require.NotZero(t, o.tickPos, "a tick is queued")
	it := c.gc.items[o.tickPos-1]
	require.Same(t, o, it.e.(*Observer[T]))
	assert.Equal(t, at, c.gc.epoch.Add(it.at-1).Sub(src.t0), "the tick's deadline")
}

// TestPollingObserverHasNoTimerOfItsOwn: a polling observer costs no
// allocation more than one that does not poll. Its ticks are items of the
// client's deadline queue; a *time.Timer of its own (and its function)
// would be allocations more.
func TestPollingObserverHasNoTimerOfItsOwn(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(context.Context, int) (int, error) { return 0, nil }, StaleTime(Forever))
	q.SetData(1, 1) // fresh: no mount fetch
	allocs := func(opts ...UseOption) float64 {
		return testing.AllocsPerRun(200, func() {
			q.Use(context.Background(), 1, opts...).Close()
		})
	}
	plain := allocs()
	polling := allocs(RefetchInterval(time.Hour))
	assert.Less(t, polling, plain+1, "allocations of a polling observer (%v) against a plain one (%v)", polling, plain)
}
