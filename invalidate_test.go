package qcache

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyStringAndHasPrefix(t *testing.T) {
	k := Key{"users", "42", "?page=2"}
	assert.Equal(t, "users/42?page=2", k.String())
	assert.Equal(t, "", Key{}.String())
	tests := []struct {
		prefix Key
		want   bool
	}{
		{nil, true},
		{Key{"users"}, true},
		{Key{"users", "42"}, true},
		{Key{"users", "42", "?page=2"}, true},
		{Key{"users", "4"}, false},
		{Key{"users", "42", "?page=2", "x"}, false},
		{Key{"posts"}, false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, k.HasPrefix(tt.prefix), "prefix %v", tt.prefix)
	}
}

func TestFilterMatchesAcrossQueries(t *testing.T) {
	c := NewClient()
	defer c.Close()
	fetch := func(ctx context.Context, p string) (string, error) { return p, nil }
	users := NewQueryFunc(c, Key{"users"}, fetch)
	type postParams struct {
		User string
		Page int `query:"page"`
	}
	posts := NewQueryFunc(c, Key{"users"}, func(ctx context.Context, p postParams) (string, error) { return "", nil }, KeyPrefix("v2"))
	users.SetData("42", "a")
	users.SetData("7", "b")
	posts.SetData(postParams{"42", 2}, "c")
	other := NewQueryFunc(c, Key{"orders"}, fetch)
	other.SetData("42", "d")

	assert.Equal(t, []Key{{"orders", "42"}, {"users", "42"}, {"users", "7"}, {"v2", "users", "42", "?page=2"}}, c.Keys(Filter{}))
	assert.Equal(t, []Key{{"users", "42"}, {"users", "7"}}, c.Keys(Filter{Key: Key{"users"}}))
	assert.Equal(t, []Key{{"users", "42"}}, c.Keys(Filter{Key: Key{"users", "42"}, Exact: true}))
	assert.Empty(t, c.Keys(Filter{Key: Key{"users"}, Exact: true}))
	assert.Equal(t, []Key{{"orders", "42"}, {"users", "42"}}, c.Keys(Filter{Predicate: func(k Key) bool { return k[len(k)-1] == "42" }}))
	assert.Equal(t, []Key{{"v2", "users", "42", "?page=2"}}, c.Keys(Filter{Key: Key{"v2", "users", "42"}}))
}

func TestInvalidateRefetchTypes(t *testing.T) {
	cases := []struct {
		rt                         RefetchType
		active, inactive, disabled int // fetches after the invalidation
	}{
		{RefetchActive, 1, 0, 0},
		{RefetchInactive, 0, 1, 1},
		{RefetchAll, 1, 1, 1},
		{RefetchNone, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(int(tc.rt)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newSource(slowValue(time.Second))
				c, q := newFuncQuery(t, src, StaleTime(Forever))
				ctx := context.Background()
				o1 := q.Use(ctx, "active")
				o2 := q.Use(ctx, "disabled", Enabled(false))
				defer o1.Close()
				defer o2.Close()
				q.SetData("disabled", "x")
				q.SetData("inactive", "x")
				time.Sleep(time.Minute)
				before := src.count()
				start := time.Now()
				require.NoError(t, c.Invalidate(ctx, Filter{Key: Key{"items"}, Refetch: tc.rt}))
				if tc.rt != RefetchNone {
					assert.Equal(t, time.Second, time.Since(start), "Invalidate waits for its refetches")
				}
				counts := map[string]int{}
				synctest.Wait()
				for _, p := range []string{"active", "inactive", "disabled"} {
					s := q.State(p)
					if s.IsInvalidated {
						counts[p] = 0
					} else {
						counts[p] = 1
					}
					assert.Equal(t, s.IsInvalidated, s.IsStale, p)
				}
				assert.Equal(t, map[string]int{"active": tc.active, "inactive": tc.inactive, "disabled": tc.disabled}, counts)
				assert.Equal(t, before+tc.active+tc.inactive+tc.disabled, src.count())
				// Unrefetched entries refetch on their next Get, whatever their StaleTime.
				v, _ := q.Get(ctx, "inactive")
				if tc.inactive == 0 {
					assert.NotEqual(t, "x", v)
				}
			})
		})
	}
}

func TestInvalidationRacingAFetchUsesTheFollowUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(2 * time.Second))
		_, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a") // mount fetch 0..2
		defer o.Close()
		time.Sleep(time.Second)
		require.NoError(t, q.Invalidate(context.Background(), "a"))
		assert.Equal(t, secs(0, 2), src.starts(), "the follow-up starts when the fetch in flight settles")
		s := o.State()
		assert.Equal(t, "v2:a", s.Data)
		assert.False(t, s.IsStale)
	})
}

func TestInvalidationStormStillDeliversData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a")
		defer o.Close()
		// Invalidate every 100 ms for 10 s, against an upstream that takes 1 s.
		stop := c.InvalidateEvery(context.Background(), 100*time.Millisecond, Filter{Key: Key{"items"}})
		var datas []string
		for range 10 {
			time.Sleep(time.Second)
			datas = append(datas, o.State().Data)
		}
		stop()
		starts := src.starts()
		for i := 1; i < len(starts); i++ {
			assert.GreaterOrEqual(t, starts[i]-starts[i-1], time.Second, "never two fetches at once")
		}
		assert.GreaterOrEqual(t, len(starts), 9, "data keeps arriving")
		assert.NotEqual(t, datas[0], datas[len(datas)-1])
	})
}

func TestInvalidateEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a")
		defer o.Close()
		stop := c.InvalidateEvery(context.Background(), 30*time.Second, Filter{Key: q.Key("a")})
		time.Sleep(95 * time.Second)
		assert.Equal(t, secs(0, 30, 60, 90), src.starts())
		stop()
		stop() // twice is fine
		time.Sleep(time.Minute)
		assert.Len(t, src.starts(), 4)

		ctx, cancel := context.WithCancel(context.Background())
		c.InvalidateEvery(ctx, 30*time.Second, Filter{})
		time.Sleep(31 * time.Second)
		assert.Len(t, src.starts(), 5)
		cancel()
		time.Sleep(time.Minute)
		assert.Len(t, src.starts(), 5, "ends with its context")

		c.InvalidateEvery(context.Background(), 30*time.Second, Filter{})
		// Client.Close (in cleanup) ends it; goleak checks.
		assert.Panics(t, func() { c.InvalidateEvery(context.Background(), 0, Filter{}) })
	})
}

func TestCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(10 * time.Second))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		ctx := context.Background()
		var wg sync.WaitGroup
		var err1, err2 error
		wg.Go(func() { _, err1 = q.Get(ctx, "new") })
		q.SetData("old", "kept")
		wg.Go(func() { _, err2 = q.Fetch(ctx, "old") })
		time.Sleep(time.Second)
		assert.True(t, q.State("new").IsFetching())
		c.Cancel(Filter{Key: Key{"items"}})
		wg.Wait()
		assert.ErrorIs(t, err1, context.Canceled)
		assert.ErrorIs(t, err2, context.Canceled)
		s := q.State("new")
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.Equal(t, StatusPending, s.Status)
		assert.False(t, s.HasData)
		s = q.State("old")
		assert.Equal(t, "kept", s.Data, "data kept")
		assert.Equal(t, StatusSuccess, s.Status)
		assert.Equal(t, FetchIdle, s.FetchStatus)
		assert.EqualValues(t, 0, c.Stats().FetchErrors, "a cancelled fetch is no error")
	})
}

func TestClientRefetchAndRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		ctx := context.Background()
		q.Get(ctx, "a")
		q.Get(ctx, "b")
		require.NoError(t, c.Refetch(ctx, Filter{Key: Key{"items", "a"}}))
		v, _ := q.Peek("a")
		assert.Equal(t, "v3:a", v, "refetched although fresh")
		c.Remove(Filter{Key: Key{"items", "b"}})
		assert.Equal(t, []Key{{"items", "a"}}, c.Keys(Filter{}))
		q.InvalidateAll(ctx)
		assert.True(t, q.State("a").IsStale)
	})
}

// BenchmarkInvalidatePrefix invalidates a prefix matching 1% of 100,000
// entries spread over 100 queries, without refetching. The entries an op
// invalidated are made fresh again (SetData) with the timer stopped, so
// that every op invalidates fresh entries.
func BenchmarkInvalidatePrefix(b *testing.B) {
	c := NewClient()
	defer c.Close()
	fetch := func(ctx context.Context, p int) (int, error) { return p, nil }
	qs := make([]*Query[int, int], 100)
	for i := range qs {
		qs[i] = NewQueryFunc(c, Key{"q" + strconv.Itoa(i)}, fetch, StaleTime(Forever), GCTime(Forever))
		for j := range 1000 {
			qs[i].SetData(j, j)
		}
	}
	run := func(f Filter, restore func()) func(b *testing.B) {
		return func(b *testing.B) {
			if n := len(c.Keys(f)); n != 1000 {
				b.Fatalf("filter matches %d entries, want 1000", n)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Invalidate(context.Background(), f); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				restore()
				b.StartTimer()
			}
		}
	}
	// A prefix: queries whose keys cannot match are skipped whole.
	b.Run("prefix", run(Filter{Key: Key{"q42"}, Refetch: RefetchNone}, func() {
		for j := range 1000 {
			qs[42].SetData(j, j)
		}
	}))
	// A predicate: every entry of every query is looked at.
	b.Run("scan", run(Filter{Refetch: RefetchNone, Predicate: func(k Key) bool {
		n, _ := strconv.Atoi(k[1])
		return n%100 == 7
	}}, func() {
		for _, q := range qs {
			for j := 7; j < 1000; j += 100 {
				q.SetData(j, j)
			}
		}
	}))
}

func TestInvalidateEverySurvivesAPanickingPredicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(0))
		c, q := newFuncQuery(t, src, StaleTime(Forever))
		o := q.Use(context.Background(), "a")
		defer o.Close()
		rounds := 0
		stop := c.InvalidateEvery(context.Background(), 10*time.Second, Filter{Predicate: func(Key) bool {
			rounds++
			if rounds == 1 {
				panic("bad predicate")
			}
			return true
		}})
		defer stop()
		time.Sleep(25 * time.Second)
		assert.Equal(t, secs(0, 20), src.starts(), "the panicking round is skipped, the next one runs")
	})
}
