package qcache

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFilterOnTheEntryState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(slowValue(time.Second))
		c, q := newFuncQuery(t, src, StaleTime(time.Minute))
		q.SetData("fresh", "f")
		q.SetData("stale", "s")
		require.NoError(t, q.Invalidate(context.Background(), "stale")) // unobserved: marked only
		q.Prefetch("fetching")
		o := q.Use(context.Background(), "observed", Enabled(false))
		defer o.Close()
		synctest.Wait()

		keys := func(f Filter) []string {
			var out []string
			for _, k := range c.Keys(f) {
				out = append(out, k[len(k)-1])
			}
			return out
		}
		assert.Equal(t, []string{"fetching", "observed", "stale"}, keys(Filter{Stale: Only}), "no data is stale")
		assert.Equal(t, []string{"fresh"}, keys(Filter{Stale: Not}))
		assert.Equal(t, []string{"fetching", "fresh", "observed", "stale"}, keys(Filter{Stale: Either}))
		assert.Equal(t, []string{"fetching"}, keys(Filter{FetchStatus: []FetchStatus{Fetching, FetchPaused}}))
		assert.Equal(t, []string{"fresh", "observed", "stale"}, keys(Filter{FetchStatus: []FetchStatus{FetchIdle}}))
		assert.Equal(t, []string{"observed"}, keys(Filter{Where: func(i EntryInfo) bool { return i.Observers > 0 }}))
		assert.Equal(t, []string{"stale"}, keys(Filter{Stale: Only, Where: func(i EntryInfo) bool { return i.HasData }}))
		assert.Equal(t, []string{"stale"}, keys(Filter{Key: Key{"items"}, Predicate: func(k Key) bool { return k[1] != "fetching" },
			Stale: Only, FetchStatus: []FetchStatus{FetchIdle}, Where: func(i EntryInfo) bool { return i.IsInvalidated }}))

		// The other verbs take the same filter.
		c.Cancel(Filter{FetchStatus: []FetchStatus{Fetching}})
		assert.Equal(t, FetchIdle, q.State("fetching").FetchStatus)
		require.NoError(t, c.Refetch(context.Background(), Filter{Stale: Only, Where: func(i EntryInfo) bool { return i.HasData }}))
		assert.Equal(t, secs(0, 0), src.starts(), "the Prefetch, then the refetch of the stale entry only")
		assert.Equal(t, "v2:stale", q.State("stale").Data)
		c.Remove(Filter{Stale: Not})
		assert.Equal(t, []string{"fetching", "observed"}, keys(Filter{}), "fresh and stale (refetched: fresh) are gone")
	})
}

func TestFilterMatchEntry(t *testing.T) {
	info := EntryInfo{Key: Key{"users", "1"}, Status: StatusSuccess, FetchStatus: Fetching, HasData: true, IsStale: true, Observers: 2}
	for _, tc := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"zero", Filter{}, true},
		{"key", Filter{Key: Key{"users"}}, true},
		{"other key", Filter{Key: Key{"orders"}}, false},
		{"stale", Filter{Stale: Only}, true},
		{"fresh", Filter{Stale: Not}, false},
		{"fetching", Filter{FetchStatus: []FetchStatus{Fetching}}, true},
		{"idle", Filter{FetchStatus: []FetchStatus{FetchIdle, FetchPaused}}, false},
		{"where", Filter{Where: func(i EntryInfo) bool { return i.Observers == 2 && i.Key.String() == "users/1" }}, true},
		{"predicate", Filter{Predicate: func(Key) bool { return false }}, false},
	} {
		assert.Equal(t, tc.want, tc.f.MatchEntry(info), tc.name)
	}
	assert.True(t, Filter{Stale: Not}.Match(info.Key), "Match looks at the key only")
}

// TestBusStateConditionsDoNotTravel: a removal with a condition on the
// state is an invalidation elsewhere, as one with a Predicate is.
func TestBusStateConditionsDoNotTravel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := new(MemoryBus)
		a, b := newReplica(t, bus, "A"), newReplica(t, bus, "B")
		for _, r := range []*replica{a, b} {
			r.q.SetData("1", "x")
		}
		synctest.Wait()
		a.c.Remove(Filter{Key: Key{"items"}, Stale: Not})
		synctest.Wait()
		_, ok := a.q.Peek("1")
		assert.False(t, ok)
		s := b.q.State("1")
		assert.True(t, s.HasData)
		assert.True(t, s.IsInvalidated)
	})
}
