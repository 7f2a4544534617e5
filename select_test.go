package qcache

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sameEvery20ms starts an observer polling data that never changes, every
// 20 ms with 10 ms fetches, on an entry that holds that data already, and
// returns the number of fetches and the states delivered after 10 polls.
func sameEvery20ms(t *testing.T, opts ...UseOption) (fetches int, states []State[string]) {
	src := newSource(func(ctx context.Context, n int, p string) (string, error) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return "", err
		}
		return "same", nil
	})
	_, q := newFuncQuery(t, src)
	q.SetData("a", "same")
	o := q.Use(context.Background(), "a", append([]UseOption{RefetchInterval(20 * time.Millisecond), RefetchOnMount(Never)}, opts...)...)
	got := collectStates(o)
	// Fetches start 20 ms after the last change: at 20, 50, 80, … 290 ms.
	time.Sleep(305 * time.Millisecond)
	states = got.received()
	o.Close()
	<-got.done
	return src.count(), states
}

func TestNotifyOnDataChangedIgnoresIdenticalPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fetches, states := sameEvery20ms(t)
		assert.Equal(t, 10, fetches)
		assert.Len(t, states, 21, "Use's default: the start, then fetching and settled for every poll")
	})
	synctest.Test(t, func(t *testing.T) {
		fetches, states := sameEvery20ms(t, NotifyOn(DataChanged))
		assert.Equal(t, 10, fetches)
		require.Len(t, states, 1, "only the state at the start: the data never changed")
		assert.Equal(t, "same", states[0].Data)
	})
}

type job struct {
	ID       string
	Status   string
	Progress int
}

// TestUseSelectWakesOnlyWhenTheSelectedValueChanges: polls that change
// other fields, a failed fetch, an invalidation and fetch-state flips
// deliver nothing; sel runs once per new data, not once per delivery.
func TestUseSelectWakesOnlyWhenTheSelectedValueChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var status atomic.Value
		status.Store("running")
		var fail atomic.Bool
		c := NewClient()
		defer c.Close()
		var fetches atomic.Int32
		q := NewQueryFunc(c, Key{"jobs"}, func(ctx context.Context, id string) (job, error) {
			n := int(fetches.Add(1))
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return job{}, err
			}
			if fail.Load() {
				return job{}, errors.New("upstream down")
			}
			return job{ID: id, Status: status.Load().(string), Progress: n}, nil
		}, Retry(0))
		_, err := q.Fetch(context.Background(), "j1")
		require.NoError(t, err)

		var selects atomic.Int32
		o := UseSelect(q, context.Background(), "j1", func(j job) string {
			selects.Add(1)
			return j.Status
		}, RefetchInterval(time.Second))
		got := collectStates(o)
		require.Len(t, got.received(), 1, "the state at the start")
		assert.Equal(t, "running", o.State().Data)

		time.Sleep(5500 * time.Millisecond) // the mount fetch and 5 polls, each with a new Progress
		fail.Store(true)
		time.Sleep(time.Second) // a failed poll: Status and Err change, the selected value does not
		assert.Equal(t, StatusError, o.State().Status)
		require.NoError(t, q.Invalidate(context.Background(), "j1"), "refetched, and failed again")
		fail.Store(false)
		assert.Len(t, got.received(), 1, "nothing delivered: the selected value did not change")
		assert.Equal(t, int32(9), fetches.Load(), "the Fetch before Use, the mount fetch, 5 polls, a failed poll, the failed refetch of the invalidation")
		assert.Equal(t, int32(7), selects.Load(), "sel runs once per new data: the 7 fetches that succeeded")

		status.Store("done")
		time.Sleep(1500 * time.Millisecond)
		states := got.received()
		require.Len(t, states, 2, "the status changed")
		assert.Equal(t, "done", states[1].Data)
		assert.Equal(t, StatusSuccess, states[1].Status)
		o.Close()
	})
}

func TestSelectPanicIsAnErrorState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil }, StaleTime(Forever))
		q.SetData(1, 10)
		o := UseSelect(q, context.Background(), 1, func(v int) int {
			if v == 13 {
				panic("unlucky")
			}
			return v * 2
		})
		defer o.Close()
		got := collectStates(o)
		synctest.Wait()
		q.SetData(1, 13)
		synctest.Wait()
		s := o.State()
		assert.Equal(t, StatusError, s.Status)
		require.Error(t, s.Err)
		assert.Contains(t, s.Err.Error(), "select function panicked: unlucky")
		assert.Equal(t, 20, s.Data, "the last good selection stays")
		assert.True(t, s.HasData)

		q.SetData(1, 14)
		s = o.State()
		assert.Equal(t, StatusSuccess, s.Status)
		require.NoError(t, s.Err)
		assert.Equal(t, 28, s.Data)
		states := got.received()
		require.Len(t, states, 3, "start, the error, the recovery")
		assert.Equal(t, StatusError, states[1].Status)
	})
}

// TestNotifyOnEachKind counts deliveries for each Notify over one script
// of changes.
func TestNotifyOnEachKind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		notify []Notify
		want   int
	}{
		// The script after the start: SetData "a" (status pending→success,
		// data), fetch start and settle with "a" again, fetch start and
		// failure, SetData "b" (status error→success, error gone, data).
		{"DataChanged", []Notify{DataChanged}, 2},
		{"StatusChanged", []Notify{StatusChanged}, 3},
		{"FetchStatusChanged", []Notify{FetchStatusChanged}, 4},
		{"ErrorChanged", []Notify{ErrorChanged}, 2},
		{"DataChanged|ErrorChanged", []Notify{DataChanged, ErrorChanged}, 3},
		{"AnyChange", []Notify{AnyChange}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var fail atomic.Bool
				src := newSource(func(ctx context.Context, n int, p string) (string, error) {
					if err := sleepCtx(ctx, time.Second); err != nil {
						return "", err
					}
					if fail.Load() {
						return "", errors.New("down")
					}
					return "a", nil
				})
				_, q := newFuncQuery(t, src, Retry(0), StaleTime(Forever))
				// Disabled: no mount fetch (an empty entry is always loaded at
				// mount otherwise); the script fetches explicitly.
				o := q.Use(context.Background(), "k", NotifyOn(tc.notify...), Enabled(false))
				got := collectStates(o)
				time.Sleep(time.Second)
				q.SetData("k", "a")
				time.Sleep(time.Second)
				_, err := q.Fetch(context.Background(), "k")
				require.NoError(t, err)
				synctest.Wait() // the collector reads every state
				fail.Store(true)
				_, err = q.Fetch(context.Background(), "k")
				require.Error(t, err)
				synctest.Wait()
				q.SetData("k", "b")
				states := got.received()
				assert.Len(t, states, 1+tc.want, "the start, then %d", tc.want)
				assert.Equal(t, "b", o.State().Data)
				o.Close()
			})
		})
	}
}

func TestEqualAndDeepEqual(t *testing.T) {
	list := func(n int) []string { return []string{"x", "y"}[:n] }
	run := func(t *testing.T, opts ...UseOption) []State[[]string] {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"l"}, func(ctx context.Context, p int) ([]string, error) { return list(p), nil }, StaleTime(Forever))
		q.SetData(2, list(2))
		o := q.Use(context.Background(), 2, append([]UseOption{NotifyOn(DataChanged)}, opts...)...)
		got := collectStates(o)
		synctest.Wait()
		for range 3 {
			q.SetData(2, list(2)) // equal, not identical
			synctest.Wait()       // the collector reads every state
		}
		q.SetData(2, list(1))
		states := got.received()
		o.Close()
		<-got.done
		return states
	}
	synctest.Test(t, func(t *testing.T) {
		assert.Len(t, run(t), 5, "a slice is not comparable: without DeepEqual every new value is a change")
	})
	synctest.Test(t, func(t *testing.T) {
		states := run(t, DeepEqual())
		require.Len(t, states, 2, "start, then the shorter list")
		assert.Equal(t, []string{"x"}, states[1].Data)
	})
	synctest.Test(t, func(t *testing.T) {
		states := run(t, Equal(func(a, b []string) bool { return len(a) == len(b) }))
		assert.Len(t, states, 2)
	})
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil })
	assert.PanicsWithValue(t, "qcache: Equal takes func(string, string) bool; this observer needs func(a, b int) bool", func() {
		q.Use(context.Background(), 1, Equal(func(a, b string) bool { return a == b }))
	})
}

// TestEqualKeepsTheHeldValue: a new value equal to the held one leaves the
// held one in the observer's state (structural sharing).
func TestEqualKeepsTheHeldValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"j"}, func(ctx context.Context, p int) (*job, error) { return nil, nil }, StaleTime(Forever))
		first := &job{ID: "1", Status: "running", Progress: 1}
		q.SetData(1, first)
		o := q.Use(context.Background(), 1, NotifyOn(DataChanged), Equal(func(a, b *job) bool { return a.Status == b.Status }))
		defer o.Close()
		q.SetData(1, &job{ID: "1", Status: "running", Progress: 2})
		assert.Same(t, first, o.State().Data)
		done := &job{ID: "1", Status: "done", Progress: 3}
		q.SetData(1, done)
		assert.Same(t, done, o.State().Data)
	})
}

// TestSetParamsKeepsPreviousData is the paginated flow: moving to a page
// without data shows the previous page as a placeholder until the new one
// lands; moving back to a cached page shows it at once.
func TestSetParamsKeepsPreviousData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "p1")
		defer o.Close()
		time.Sleep(time.Second)
		synctest.Wait() // the fetch due now has settled
		require.Equal(t, "v1:p1", o.State().Data)
		got := collectStates(o)
		got.received()

		require.NoError(t, o.SetParams("p2"))
		synctest.Wait()
		s := o.State()
		assert.True(t, s.IsPlaceholder)
		assert.True(t, s.HasData)
		assert.Equal(t, "v1:p1", s.Data)
		assert.Equal(t, StatusSuccess, s.Status)
		assert.Equal(t, Fetching, s.FetchStatus, "the new page is fetched: it is stale")

		time.Sleep(time.Second)
		synctest.Wait() // the fetch due now has settled
		s = o.State()
		assert.False(t, s.IsPlaceholder)
		assert.Equal(t, "v2:p2", s.Data)
		assert.Equal(t, StatusSuccess, s.Status)

		require.NoError(t, o.SetParams("p1"))
		s = o.State()
		assert.False(t, s.IsPlaceholder, "p1 has data of its own")
		assert.Equal(t, "v1:p1", s.Data)
		assert.True(t, s.IsRefetching())
		time.Sleep(time.Second)
		synctest.Wait() // the fetch due now has settled
		assert.Equal(t, "v3:p1", o.State().Data)

		states := got.received()
		var seen []string
		for _, s := range states {
			mark := ""
			if s.IsPlaceholder {
				mark = " (placeholder)"
			}
			seen = append(seen, s.Data+" "+s.FetchStatus.String()+mark)
		}
		assert.Equal(t, []string{
			"v1:p1 idle",
			"v1:p1 fetching (placeholder)", // after the move
			"v2:p2 idle",
			"v1:p1 fetching", // back on p1, refetched: stale
			"v3:p1 idle",
		}, seen)
		assert.Equal(t, 1, c.Stats().Observers)
		assert.Equal(t, []time.Duration{0, time.Second, 2 * time.Second}, src.starts())

		require.NoError(t, o.SetParams("p1"), "the current params: nothing to do")
		synctest.Wait()
		assert.Len(t, got.received(), 5)
		assert.Panics(t, func() { _ = o.SetParams(2) })
	})
}

// TestSetParamsLeavesTheOldEntry: the old entry loses the observer, so it
// stops polling and its fetch in flight, which nobody wants, is cancelled.
func TestSetParamsLeavesTheOldEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src)
		o := q.Use(context.Background(), "a", RefetchInterval(5*time.Second))
		time.Sleep(6500 * time.Millisecond) // a: mount at 0, poll at 6
		require.NoError(t, o.SetParams("b"))
		time.Sleep(20 * time.Second)
		o.Close()
		assert.Equal(t, secs(0, 6, 6.5, 12.5, 18.5, 24.5), src.starts(), "b polls, a does not")
		a := q.State("a")
		assert.Equal(t, "v1:a", a.Data, "a's poll, which nobody wanted any more, was cancelled")
		assert.Equal(t, FetchIdle, a.FetchStatus)
		assert.Equal(t, uint64(1), c.Stats().FetchCancelled)
	})
}

func TestSetParamsToAFailingEntryShowsTheError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if p == "bad" {
				return "", errors.New("no such page")
			}
			return "ok", nil
		})
		_, q := newFuncQuery(t, src, Retry(0))
		o := UseSelect(q, context.Background(), "good", func(s string) int { return len(s) })
		defer o.Close()
		synctest.Wait()
		require.Equal(t, 2, o.State().Data)
		require.NoError(t, o.SetParams("bad"))
		synctest.Wait()
		s := o.State()
		assert.Equal(t, StatusError, s.Status)
		assert.False(t, s.HasData)
		assert.False(t, s.IsPlaceholder)
		assert.Zero(t, s.Data)
		assert.ErrorContains(t, s.Err, "no such page")
	})
}

func TestSetParamsErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithBaseURL("http://example.invalid"))
		q := NewQuery[string, string](c, Endpoint{URL: "/users/$id"}, Retry(0))
		o := q.Use(context.Background(), "42", Enabled(false))
		err := o.SetParams("")
		require.Error(t, err, "an empty path value cannot be bound")
		assert.Equal(t, 1, c.Stats().Observers, "the observer stays where it was")
		o.Close()
		assert.ErrorIs(t, o.SetParams("7"), ErrClosed)
		c.Close()
		o = q.Use(context.Background(), "42")
		assert.ErrorIs(t, o.SetParams("7"), ErrClosed, "an observer that did not start")
	})
}

// TestSetParamsRacesWithClose: moving while the observer ends and the
// client closes leaves no observer behind and no goroutine.
func TestSetParamsRacesWithClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Millisecond))
		c, q := newFuncQuery(t, src)
		obs := make([]*Observer[string], 20)
		for i := range obs {
			obs[i] = q.Use(context.Background(), "a", RefetchInterval(time.Millisecond))
		}
		done := make(chan struct{})
		for i, o := range obs {
			go func() {
				defer func() { done <- struct{}{} }()
				for j := range 20 {
					_ = o.SetParams(string(rune('a' + (i+j)%5)))
					time.Sleep(time.Millisecond)
				}
			}()
		}
		time.Sleep(7 * time.Millisecond)
		for _, o := range obs[:10] {
			o.Close()
		}
		for range obs {
			<-done
		}
		for _, o := range obs[10:] {
			o.Close()
		}
		assert.Zero(t, c.Stats().Observers)
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			if e := q.lookup(k); e != nil {
				e.mu.Lock()
				assert.Empty(t, e.observersLocked(), k)
				e.mu.Unlock()
			}
		}
	})
}

// TestUseSelectWithSetParams: the placeholder of a selecting observer is
// the selected value it showed.
func TestUseSelectWithSetParams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		_, q := newFuncQuery(t, src)
		o := UseSelect(q, context.Background(), "p1", func(s string) string { return "<" + s + ">" })
		defer o.Close()
		time.Sleep(time.Second)
		synctest.Wait() // the fetch due now has settled
		got := collectStates(o)
		synctest.Wait()
		require.NoError(t, o.SetParams("p2"))
		time.Sleep(time.Second)
		synctest.Wait() // the fetch due now has settled
		states := got.received()
		require.Len(t, states, 3, "the current state, the placeholder, the new page")
		assert.Equal(t, State[string]{Data: "<v1:p1>", HasData: true, Status: StatusSuccess, FetchStatus: Fetching,
			IsStale: true, IsPlaceholder: true}, states[1])
		assert.Equal(t, "<v2:p2>", states[2].Data)
		assert.False(t, states[2].IsPlaceholder)
	})
}

// TestTypedIntervalFuncSeesTheEntryState: Query.RefetchIntervalFunc polls
// a selecting observer by the entry's own data.
func TestTypedIntervalFuncSeesTheEntryState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var calls atomic.Int32
		q := NewQueryFunc(c, Key{"jobs"}, func(ctx context.Context, id string) (job, error) {
			n := int(calls.Add(1))
			if n < 4 {
				return job{ID: id, Status: "running", Progress: n}, nil
			}
			return job{ID: id, Status: "done", Progress: n}, nil
		})
		var asked atomic.Int32 // the Progress of the last state the function saw
		o := UseSelect(q, context.Background(), "j", func(j job) bool { return j.Status == "done" },
			q.RefetchIntervalFunc(func(s State[job]) time.Duration {
				asked.Store(int32(s.Data.Progress))
				if s.Data.Status == "done" {
					return 0
				}
				return time.Second
			}))
		defer o.Close()
		time.Sleep(time.Minute)
		assert.Equal(t, int32(4), calls.Load(), "mount, then polls until the entry's status is done")
		assert.True(t, o.State().Data)
		assert.Equal(t, int32(4), asked.Load(), "the entry's data, not the selected bool")
	})
}

// TestNotifyOnChangesLive: SetOptions switches what wakes an observer.
func TestNotifyOnChangesLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil }, StaleTime(Forever))
		q.SetData(1, 1)
		o := q.Use(context.Background(), 1)
		defer o.Close()
		got := collectStates(o)
		synctest.Wait()
		q.SetData(1, 1)
		require.Len(t, got.received(), 2, "AnyChange: the same data is a change")

		o.SetOptions(NotifyOn(DataChanged))
		for range 3 {
			q.SetData(1, 1)
			synctest.Wait()
		}
		assert.LessOrEqual(t, len(got.received()), 3, "at most one extra delivery right after the switch")
		n := len(got.received())
		q.SetData(1, 1)
		assert.Len(t, got.received(), n, "then none for the same data")
		q.SetData(1, 2)
		assert.Len(t, got.received(), n+1)

		o.SetOptions(NotifyOn()) // back to Use's default
		q.SetData(1, 2)
		assert.Len(t, got.received(), n+2)
	})
}
