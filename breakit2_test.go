package qcache

// Tests a second reviewer wrote to break the code added for GetMany,
// NewQueryBatch, the fetch bounds, conditional requests, selecting,
// SetParams, UpdateWhere/UpdateExisting, Clone, the failure policies and the
// hooks. Each one failed on the code it was written against; the comment
// above it names the rule (shared/DESIGN.md, docs/semantics.md or the doc
// comment) that it showed broken. All are fixed.

import (
	"context"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// docs/semantics.md, Switching parameters: "Until it has data, the state
// shows the data the observer showed before ... the new one is fetched"; an
// observer's state is its entry's. A State() read while SetParams is between
// the old entry and the new one (here from the ObserverRemoved hook, which
// runs then, deterministically; any concurrent State() does the same)
// selects the OLD entry's data into the link and marks it as seen at that
// entry's dataVer. The new entry's dataVer is compared against it as if it
// were the same entry (select.go viewLocked, `l.ver != e.dataVer`): both are
// 1, so the observer of "2" shows "one" for good.
func TestBreak2SetParamsStateDuringMoveShowsOtherKeysData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var obsp atomic.Pointer[Observer[string]]
		c := NewClient(WithHooks(Hooks{ObserverRemoved: func(string, Key) {
			if o := obsp.Load(); o != nil {
				o.State() // a reader of the observer's state, as any goroutine may be
			}
		}}))
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			return "fetched:" + p, nil
		}, StaleTime(Forever))
		q.SetData("1", "one")
		q.SetData("2", "two")
		obs := q.Use(context.Background(), "1")
		defer obs.Close()
		synctest.Wait()
		obsp.Store(obs)
		require.NoError(t, obs.SetParams("2"))
		obsp.Store(nil)
		synctest.Wait()
		s := obs.State()
		assert.Equal(t, "two", s.Data, "the observer of key 2 shows key 1's data")
		assert.False(t, s.IsPlaceholder)
	})
}

// Stats (stats.go / observability): the per-query counters add up to the
// client's. When Client.Close lands while SetParams is between the two
// entries, move returns (its second lockedEntry fails) after having counted
// the observer as removed (select.go move: old.observerEvent(false)), and
// then the observer's cleanup detaches it from the old entry again
// (select.go detach: l.closed is still false), counting it removed twice:
// the query reports -1 observers, and ObserverRemoved fires twice.
func TestBreak2SetParamsRacingCloseCountsObserverRemovedTwice(t *testing.T) {
	var c *Client
	var armed atomic.Bool
	var removed atomic.Int32
	c = NewClient(WithHooks(Hooks{ObserverRemoved: func(string, Key) {
		removed.Add(1)
		if armed.CompareAndSwap(true, false) {
			go c.Close() // Close lands now, from anywhere
			for !c.closed.Load() {
				runtime.Gosched()
			}
		}
	}}))
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
		return p, nil
	}, StaleTime(Forever))
	q.SetData("1", "one")
	obs := q.Use(context.Background(), "1")
	armed.Store(true)
	err := obs.SetParams("2")
	c.Close()
	obs.Close()
	assert.Equal(t, 0, c.Stats().Observers)
	assert.Equal(t, 0, q.Stats().Observers, "the query's observers must add up to the client's")
	// The fix runs the hooks after the move, so Close lands after it or,
	// when it lands during it, the move fails and the observer has left its
	// entry once: ObserverRemoved fires once per entry left.
	if err != nil {
		require.ErrorIs(t, err, ErrClosed)
		assert.Equal(t, int32(1), removed.Load(), "left key 1 and ended: ObserverRemoved once")
	} else {
		assert.Equal(t, int32(2), removed.Load(), "left key 1, then ended on key 2: twice")
	}
}

// DESIGN, Observability: "Hooks (WithHooks) are called outside every lock";
// docs/semantics.md, Callbacks: callbacks (hooks on the caller's goroutine)
// "may call any method, including Observer.Close ... without deadlocking".
// SetParams calls ObserverRemoved while it holds the link's moveMu
// (select.go move); Observer.Close waits for the observer's goroutine, whose
// cleanup needs moveMu (select.go detach): deadlock.
func TestBreak2HookClosingObserverDuringSetParamsDeadlocks(t *testing.T) {
	var obsp atomic.Pointer[Observer[string]]
	c := NewClient(WithHooks(Hooks{ObserverRemoved: func(string, Key) {
		if o := obsp.Swap(nil); o != nil {
			o.Close() // e.g. "a view that leaves page 1 is done"
		}
	}}))
	defer func() {
		done := make(chan struct{})
		go func() { c.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}()
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
		return p, nil
	}, StaleTime(Forever))
	q.SetData("1", "one")
	obs := q.Use(context.Background(), "1")
	obsp.Store(obs)
	done := make(chan error, 1)
	go func() { done <- obs.SetParams("2") }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		require.FailNow(t, "SetParams deadlocked: the ObserverRemoved hook runs under moveMu, and Observer.Close needs it")
	}
}

// docs/semantics.md, Callbacks: a fetch function "may call any method"
// without deadlocking; WithMaxConcurrentFetches only bounds fetches in
// flight. A fetch function that reads another query (a dependent query:
// the user, then its org) holds the client's only slot while the inner
// fetch waits in FetchQueued for that same slot (cache.go acquireSlot is
// held across q.attempt): the outer Get can only end by its deadline.
func TestBreak2FetchBoundDeadlocksNestedGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithMaxConcurrentFetches(1))
		defer c.Close()
		org := NewQueryFunc(c, Key{"org"}, func(ctx context.Context, p string) (string, error) {
			return "org-of-" + p, nil
		})
		user := NewQueryFunc(c, Key{"user"}, func(ctx context.Context, p string) (string, error) {
			o, err := org.Get(ctx, p)
			if err != nil {
				return "", err
			}
			return p + "@" + o, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v, err := user.Get(ctx, "u1")
		require.NoError(t, err, "a fetch function that calls Get must not deadlock on the fetch bound")
		assert.Equal(t, "u1@org-of-u1", v)
	})
}

// NewQueryBatch: "fetch gets a context ... it ends when the client closes,
// or when every key of the batch has been given up". When every waiter of
// the gathering batch leaves, fetchOne cancels the batch's context but the
// batch stays b.pending (batch.go fetchOne, ctx.Done branch): a key fetched
// later in the same window joins a batch that is already cancelled, and
// fails with context.Canceled although its caller cancelled nothing (with
// the default Retry it only succeeds a retry delay later).
func TestBreak2BatchGivenUpPoisonsLaterKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var calledDone atomic.Int32
		q := NewQueryBatch(c, Key{"b"}, func(ctx context.Context, ps []string) (map[string]string, error) {
			if ctx.Err() != nil {
				calledDone.Add(1)
				return nil, ctx.Err()
			}
			m := map[string]string{}
			for _, p := range ps {
				m[p] = "v:" + p
			}
			return m, nil
		}, BatchWindow(10*time.Millisecond), Retry(0))
		short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_, err := q.Get(short, "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		time.Sleep(time.Millisecond) // 2 ms: still inside the first batch's window
		v, err := q.Get(context.Background(), "b")
		require.NoError(t, err, "b's caller cancelled nothing")
		assert.Equal(t, "v:b", v)
		assert.Zero(t, calledDone.Load(), "the batch function was called with a context already ended")
	})
}

// Entries / Clone: "Clone ... makes every read a copy"; Update and
// UpdateWhere pass f a copy as old. UpdateExisting passes the cache's own
// value (query.go UpdateExisting: f(old) without q.out), so an f written
// for a Clone query (modify the copy, return it) changes the value the
// observer holds in place: with NotifyOn(DataChanged) and DeepEqual the
// change [1] -> [2] compares equal to itself and never wakes the observer.
func TestBreak2UpdateExistingBypassesCloneAndHidesChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var clones atomic.Int32
		q := NewQueryFunc(c, Key{"l"}, func(ctx context.Context, p string) ([]int, error) {
			return []int{0}, nil
		}, StaleTime(Forever), Clone(func(v []int) []int { clones.Add(1); return slices.Clone(v) }))
		q.SetData("a", []int{1})
		obs := q.Use(context.Background(), "a", NotifyOn(DataChanged), DeepEqual())
		defer obs.Close()
		s := <-obs.Changes()
		require.Equal(t, []int{1}, s.Data)
		synctest.Wait()
		before := clones.Load()
		require.True(t, q.UpdateExisting("a", func(old []int) []int {
			old[0] = 2 // old is a copy under Clone
			return old
		}))
		assert.Greater(t, clones.Load(), before, "UpdateExisting's old did not go through Clone")
		synctest.Wait()
		select {
		case s := <-obs.Changes():
			assert.Equal(t, []int{2}, s.Data)
		default:
			require.FailNow(t, "the data changed from [1] to [2] and the DataChanged observer was not woken")
		}
	})
}

// Clone: "every T it returns (Get, Fetch, Peek, State, All, ...)" is a copy.
// GetMany's hit path stores the cache's own value in its map (batch.go
// GetMany: out[p] = v, without q.out), so a caller who modifies the map's
// value, as Clone allows, modifies the cache.
func TestBreak2GetManyHitBypassesClone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"l"}, func(ctx context.Context, p string) ([]int, error) {
			return []int{0}, nil
		}, StaleTime(Forever), Clone(slices.Clone[[]int]))
		q.SetData("a", []int{1})
		for range 3 { // lookups that promote the entry to the read map, as any busy key is
			q.Peek("a")
		}
		m, err := q.GetMany(context.Background(), []string{"a"})
		require.NoError(t, err)
		m["a"][0] = 99 // allowed: with Clone, every read is a copy
		v, _ := q.Peek("a")
		assert.Equal(t, []int{1}, v, "GetMany handed out the cache's own value")
	})
}

// DESIGN, Invalidation: "Marks matching entries stale ... Unobserved
// entries refetch on their next Get or Use." With CacheErrors, a Get after
// Invalidate still answers the cached error without fetching
// (query.go getSlow: cachedErrLocked ignores s.invalidated / invalidSeq),
// so a service that learns the missing key now exists (a push, a
// mutation's Invalidates) keeps serving 404 for the whole TTL.
func TestBreak2CacheErrorsSurvivesInvalidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n == 1 {
				return "", &HTTPError{StatusCode: http.StatusNotFound}
			}
			return value(n, p), nil
		})
		c, q := newFuncQuery(t, src, Retry(0), CacheErrors(time.Minute, nil))
		ctx := context.Background()
		_, err := q.Get(ctx, "a")
		require.Error(t, err)
		require.NoError(t, c.Invalidate(ctx, Filter{Key: Key{"items"}}))
		v, err := q.Get(ctx, "a")
		require.NoError(t, err, "invalidated: the next Get fetches")
		assert.Equal(t, "v2:a", v)
		assert.Equal(t, 2, src.count())
	})
}

// Switching parameters: "The old entry loses the observer (... a fetch that
// nobody else wants is cancelled)"; DESIGN: "the fetch itself is cancelled
// when no caller and no observer wants it any more". While SetParams is
// between the entries, the link still points at the old entry (l.e is
// stored only after the new entry is locked), so an observer step that runs
// then (a focus regained here, from the hook; a tick or reconnect does the
// same) starts a fetch on the entry it has just left (select.go autoFetch ->
// joinLocked(wantObserver)). Nobody observes or waits for that fetch, and
// nothing cancels it: it runs to the end, and the entry cannot be
// collected meanwhile.
func TestBreak2SetParamsStartsOrphanFetchOnOldEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var armed atomic.Bool
		var c *Client
		c = NewClient(WithHooks(Hooks{ObserverRemoved: func(string, Key) {
			if armed.CompareAndSwap(true, false) {
				c.SetFocused(false)
				c.SetFocused(true)
				synctest.Wait() // the observer's focus step runs now
			}
		}}))
		defer c.Close()
		var calls atomic.Int32
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			if calls.Add(1) == 1 {
				return "first:" + p, nil
			}
			if err := sleepCtx(ctx, time.Hour); err != nil {
				return "", err
			}
			return "late:" + p, nil
		}, Timeout(0))
		obs := q.Use(context.Background(), "1", RefetchOnFocus(Always))
		defer obs.Close()
		synctest.Wait()
		require.Equal(t, "first:1", obs.State().Data)
		q.SetData("2", "two")
		armed.Store(true)
		require.NoError(t, obs.SetParams("2"))
		synctest.Wait()
		assert.Equal(t, FetchIdle, q.State("1").FetchStatus,
			"a fetch of the entry the observer left runs, wanted by nobody")
	})
}

// MaxBatch: "how many keys a NewQueryBatch query's function gets at most in
// one call". fetchOne decides that the batch is full under b.mu, unlocks,
// and only then flushes it (batch.go fetchOne: `full := ...; b.mu.Unlock();
// if full { b.flush(bt) }`): a key that arrives in between joins the same
// batch, so the function gets MaxBatch+1 keys (or more).
func TestBreak2BatchExceedsMaxBatch(t *testing.T) {
	c := NewClient()
	defer c.Close()
	var biggest atomic.Int32
	q := NewQueryBatch(c, Key{"b"}, func(ctx context.Context, ps []int) (map[int]int, error) {
		for {
			b := biggest.Load()
			if int32(len(ps)) <= b || biggest.CompareAndSwap(b, int32(len(ps))) {
				break
			}
		}
		m := map[int]int{}
		for _, p := range ps {
			m[p] = p
		}
		return m, nil
	}, MaxBatch(2), BatchWindow(5*time.Millisecond))
	ctx := context.Background()
	rounds := 5000 // with the race it was written against, it failed within the first rounds
	if testing.Short() {
		rounds = 200
	}
	for round := 0; round < rounds && biggest.Load() <= 2; round++ {
		ps := make([]int, 64)
		for i := range ps {
			ps[i] = round*64 + i
		}
		_, err := q.GetMany(ctx, ps[:len(ps)-len(ps)%2])
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, int(biggest.Load()), 2, "a batch function call got more than MaxBatch keys")
}

// NewQueryBatch: "keys fetched at about the same time ... reach fetch as one
// call" — each key once. A key whose waiter left stays in bt.keys with
// wanted 0, and a new fetch of that key in the same window appends it again
// (batch.go fetchOne: `if bt.wanted[p] == 0 { bt.keys = append(...) }`):
// the batch function gets the key twice, and the duplicate counts toward
// MaxBatch.
func TestBreak2BatchKeyTwiceInOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var got [][]string
		q := NewQueryBatch(c, Key{"b"}, func(ctx context.Context, ps []string) (map[string]string, error) {
			got = append(got, slices.Clone(ps))
			m := map[string]string{}
			for _, p := range ps {
				m[p] = "v:" + p
			}
			return m, nil
		}, BatchWindow(10*time.Millisecond))
		ctx := context.Background()
		go q.Get(ctx, "c") // keeps the batch wanted
		synctest.Wait()
		short, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		_, err := q.Get(short, "a")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		synctest.Wait()           // the abandoned fetch of "a" has left the batch
		v, err := q.Get(ctx, "a") // at 1 ms, same window
		require.NoError(t, err)
		assert.Equal(t, "v:a", v)
		require.Len(t, got, 1)
		assert.ElementsMatch(t, []string{"c", "a"}, got[0], "each key once per call")
	})
}
