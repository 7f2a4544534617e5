package qcache

// Tests a reviewer wrote to break the cache. Each one failed on the code it
// was written against; the comment above it names the rule of
// shared/DESIGN.md (or the README, or TanStack Query's behaviour) that it
// showed broken. Where the fix chose a rule of its own, the comment says so.

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type breakCtxKey struct{}

// DESIGN, Fetching / fetch context: "the fetch runs under its own
// cancellation, carrying the **values** of the context of the call that
// started it (trace spans, request IDs)". startLocked derives the fetch's
// context from context.Background(), so the fetch function sees none of the
// caller's values.
func TestBreakFetchContextCarriesCallerValues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var seen []any
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			mu.Lock()
			seen = append(seen, ctx.Value(breakCtxKey{}))
			mu.Unlock()
			return p, nil
		})
		ctx := context.WithValue(context.Background(), breakCtxKey{}, "req-42")
		_, err := q.Get(ctx, "a")
		require.NoError(t, err)
		_, err = q.Fetch(ctx, "b")
		require.NoError(t, err)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []any{"req-42", "req-42"}, seen, "the fetch function sees the starter's values")
	})
}

// DESIGN, "When the last waiter and the last observer leave, the fetch is
// cancelled": Client.Refetch is still waiting for the fetch it started (it
// "returns when those fetches have settled"), yet the last observer leaving
// cancels that fetch (unwatchedLocked ignores pinned fetches, cache.go
// unwatchedLocked), and Refetch then returns nil as if it had refetched: the
// data is the old one and nothing says so.
func TestBreakLastObserverLeavingCancelsAFetchClientRefetchWaitsFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		q.SetData("a", "old")
		o := q.Use(context.Background(), "a", RefetchOnMount(Never))
		synctest.Wait()
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			err = c.Refetch(context.Background(), Filter{})
		}()
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, Fetching, q.State("a").FetchStatus)
		o.Close() // the observer leaves; Refetch still waits
		<-done
		if err == nil {
			v, _ := q.Peek("a")
			assert.Equal(t, "v1:a", v, "Refetch returned nil: it must have refetched")
		}
		assert.Equal(t, uint64(0), c.Stats().FetchCancelled, "a fetch someone waits for is not cancelled")
	})
}

// DESIGN, Observers: "An observer ends on Close ... then its goroutine is
// gone" and a fetch is "cancelled when no caller and no observer wants it".
// Observer.cleanup detaches the observer from its entry before it sets
// stopped under stepMu (refetch.go cleanup), so an interval tick that runs
// in between still polls: it starts a fetch for an entry that has no
// observer and no waiter, after Close returned, which nobody ever cancels.
// The state hook only widens the window (it runs under the entry's lock
// inside detach); the interleaving is possible without it.
func TestBreakObserverTickBetweenDetachAndStopStartsAnOrphanFetch(t *testing.T) {
	c := NewClient()
	defer c.Close()
	var calls atomic.Int32
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
		calls.Add(1)
		<-ctx.Done()
		return "", ctx.Err()
	})
	var closing atomic.Bool
	var once sync.Once
	c.stateHook = func(_ Key, s any) {
		if closing.Load() && s.(State[string]).FetchStatus == FetchIdle {
			// detach is reverting the fetch the observer leaves behind
			once.Do(func() { time.Sleep(300 * time.Millisecond) })
		}
	}
	o := q.Use(context.Background(), "a", RefetchInterval(10*time.Millisecond))
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	closing.Store(true)
	o.Close()
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, int32(1), calls.Load(), "no poll after Close")
	assert.Equal(t, FetchIdle, q.State("a").FetchStatus, "no fetch nobody wants")
}

// DESIGN, Fetching: "While offline (SetOnline(false)) a fetch waits in
// FetchPaused, without calling the fetch function, and continues when back
// online." startLocked publishes FetchPaused when the client is offline; when
// the client comes back online before the fetch's goroutine reaches
// waitOnline, waitOnline returns at once without publishing Fetching
// (cache.go waitOnline), and the entry shows FetchPaused for the whole
// attempt while the fetch function runs. The hook makes the interleaving
// deterministic: it turns the client online as startLocked publishes
// FetchPaused, before the fetch's goroutine starts.
func TestBreakFetchShowsPausedWhileTheFunctionRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int32
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			calls.Add(1)
			<-release
			return p, nil
		})
		var once sync.Once
		c.stateHook = func(_ Key, s any) {
			if s.(State[string]).FetchStatus == FetchPaused {
				once.Do(func() { c.SetOnline(true) })
			}
		}
		c.SetOnline(false)
		q.Prefetch("a")
		synctest.Wait()
		require.Equal(t, int32(1), calls.Load(), "back online: the fetch function runs")
		assert.Equal(t, Fetching, q.State("a").FetchStatus, "a fetch whose function runs is not paused")
		close(release)
		synctest.Wait()
	})
}

// TanStack Query v5 (query.ts destroy → cancel({silent: true})): removing a
// query cancels its fetch. qcache keeps running the fetch of a removed entry
// that no caller waits for (a Prefetch's), although its result can never be
// served (docs/semantics.md, Removal) — "a fetch not cancelled when nobody wants it".
// DESIGN does not declare this difference. Worse, the result is counted as a
// success.
func TestBreakRemoveKeepsAnUnwantedFetchRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var cancelled atomic.Int32
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if err := sleepCtx(ctx, time.Hour); err != nil {
				cancelled.Add(1)
				return "", err
			}
			return value(n, p), nil
		})
		c, q := newFuncQuery(t, src)
		q.Prefetch("a")
		synctest.Wait()
		q.Remove("a")
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, int32(1), cancelled.Load(), "the fetch of a removed entry that nobody waits for is cancelled")
		st := c.Stats()
		assert.Equal(t, st.Fetches, st.FetchCancelled+st.FetchErrors+st.FetchSuccesses, "nothing left in flight: %+v", st)
	})
}

// Client.Close: "cancels fetches in flight (their waiters get ErrClosed),
// and waits for the client's goroutines to return". Close finds the fetches
// to abort by walking the entry maps (client.go Close → eachEntry →
// abortFetch); a removed entry has left its map while its fetch still runs,
// so Close neither cancels that fetch nor wakes its waiter: it blocks until
// the fetch ends (here four 30 s attempts and their backoff: 2 min 7 s),
// and the waiter gets the fetch's own outcome, not ErrClosed.
func TestBreakCloseDoesNotCancelTheFetchOfARemovedEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Hour))
		c := NewClient()
		q := NewQueryFunc(c, Key{"items"}, src.fetch)
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err = q.Get(context.Background(), "a")
		}()
		synctest.Wait()
		q.Remove("a") // the Get still waits for the fetch, which goes on
		start := time.Now()
		c.Close()
		assert.Equal(t, time.Duration(0), time.Since(start), "Close cancels fetches in flight instead of waiting for them")
		<-done
		// The fix: Remove cancels the fetch of the entry it removes (as
		// TanStack's removeQueries does), so no fetch outlives its entry
		// and the waiter hears of it at once.
		assert.ErrorIs(t, err, context.Canceled, "the waiter of a fetch that Remove cancelled")
	})
}

// TanStack Query v5 (queryObserver.ts shouldFetchOnMount/shouldLoadOnMount):
// refetchOnMount: false only skips a refetch of data that is there; an
// observer of an entry without data always loads it. qcache's
// RefetchOnMount(Never) leaves such an observer pending for ever (refetch.go
// mountFetch → eventFetch → shouldFetch). DESIGN does not declare the
// difference.
func TestBreakRefetchOnMountNeverStillLoadsMissingData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchOnMount(Never))
		defer o.Close()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, 1, src.count(), "an observer of an empty entry loads it")
		assert.Equal(t, "v1:a", o.State().Data)
	})
}

// TanStack Query v5 (queryObserver.ts setOptions → shouldFetchOptionally):
// an observer switched from enabled: false to true fetches when the data is
// stale, whatever refetchOnMount says. qcache asks RefetchOnMount instead
// (refetch.go SetOptions → evRemount → mountFetch): with Never, enabling an
// observer of stale data fetches nothing. Undeclared difference.
func TestBreakEnablingAnObserverFetchesStaleData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		q.SetData("a", "old") // StaleTime 0: stale at once
		o := q.Use(context.Background(), "a", Enabled(false), RefetchOnMount(Never))
		defer o.Close()
		synctest.Wait()
		require.True(t, o.State().IsStale)
		o.SetOptions(Enabled(true))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, 1, src.count(), "enabling an observer of stale data fetches")
	})
}

// DESIGN, Observers/State: "Every state delivered existed as one state of
// the entry", and Get answers data that was the entry's data. The lock-free
// hit path checks the fresh flag and then loads the snapshot in a second,
// separate load (query.go Get: e.servable() then e.snap.Load().data). A
// Remove of an observed entry resets it in place (cache.go remove: flag
// cleared, then an empty snapshot published), so a Get between the two loads
// answers the zero value with a nil error: data the entry never held. The
// test races Get against SetData+Remove; it stops at the first bad answer
// (on the author's 2-core machine, a few per second).
func TestBreakHitPathAnswersTheZeroValueOfAReset(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3 s real-clock race, skipped in -short mode")
	}
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return "fetched", nil },
		StaleTime(time.Hour))
	o := q.Use(context.Background(), "a", Enabled(false)) // observed: Remove resets instead of removing
	defer o.Close()
	q.SetData("a", "x")
	c.Keys(Filter{}) // into the lock-free read map
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			q.SetData("a", "x")
			q.Remove("a")
		}
	}()
	defer func() { stop.Store(true); <-done }()
	deadline := time.Now().Add(3 * time.Second) // it fails within 0.2 s; a consistent read passes in 3 s
	for time.Now().Before(deadline) {
		for range 1000 {
			v, err := q.Get(context.Background(), "a")
			require.Falsef(t, err == nil && v == "", "Get answered %q with no error: the entry never held it", v)
		}
	}
}

// DESIGN, Fetching: explicit refetches wait for a follow-up because "a
// request that left before a write must not answer for after it", and "a
// result counts as fresh only if its fetch started after the entry's last
// invalidation". A Get after Invalidate (the write is done, the data is
// stale) still joins the fetch that left before the invalidation
// (cache.go joinLocked joins any inflight op not older than a reset) and
// answers its pre-write result as if it were current. TanStack restarts an
// active query's fetch on invalidation, so its fetchQuery does not see the
// old answer either. Not declared; at least a gap in the rule.
func TestBreakGetAfterInvalidateAnswersAFetchThatLeftBeforeIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		q.Prefetch("a") // fetch 1 leaves at t=0
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, q.Invalidate(context.Background(), "a")) // a write was made
		v, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "v2:a", v, "Get after Invalidate answers data requested after it")
	})
}

// WithMaxEntries / gc: "bounds memory when keys come from user input". A
// P with a float field that is NaN never finds its own entry (NaN != NaN as a map key), so
// every Get of NaN inserts a new entry and fetches; and once removed, such
// an entry can never be deleted from the entry map (entrymap.go delete looks
// it up by p), so the map grows without bound although Stats.Entries says 0.
func TestBreakNaNKeyNeverFindsItsEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		c := NewClient()
		defer c.Close()
		type point struct{ X float64 }
		q := NewQueryFunc(c, Key{"f"}, func(ctx context.Context, p point) (string, error) {
			calls.Add(1)
			return "x", nil
		}, StaleTime(time.Hour), GCTime(time.Second))
		nan := point{math.NaN()}
		// The fix: such a value is refused with ErrNaNParams, before any
		// entry or fetch.
		for range 10 {
			_, err := q.Get(context.Background(), nan)
			require.ErrorIs(t, err, ErrNaNParams)
		}
		q.SetData(nan, "x")
		assert.Equal(t, int32(0), calls.Load(), "no fetch for a key that can never be found again")
		time.Sleep(2 * time.Second) // gc removes them
		q.entries.mu.Lock()
		held := len(q.entries.added) + len(q.entries.readOnly().m)
		q.entries.mu.Unlock()
		assert.Equal(t, 0, c.Stats().Entries)
		assert.Zero(t, held, "removed entries leave the entry map")
	})
}
