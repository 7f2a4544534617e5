package qcache

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAllListsTheEntriesThatExist(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) {
			if p < 0 {
				return 0, errors.New("negative")
			}
			return p * 10, nil
		}, Retry(0))
		q.SetData(1, 10)
		_, err := q.Get(context.Background(), -1)
		require.Error(t, err)
		o := q.Use(context.Background(), 2, Enabled(false)) // an entry without data
		defer o.Close()

		got := maps.Collect(q.All())
		require.Len(t, got, 3)
		assert.Equal(t, 10, got[1].Data)
		assert.Equal(t, StatusSuccess, got[1].Status)
		assert.Equal(t, StatusError, got[-1].Status)
		assert.False(t, got[2].HasData)
		assert.Equal(t, StatusPending, got[2].Status)
		_, ok := q.Peek(3)
		assert.False(t, ok)

		n := 0
		for range q.All() {
			n++
			break
		}
		assert.Equal(t, 1, n, "the loop may stop early")
		assert.Len(t, maps.Collect(q.All()), 3, "All creates nothing")

		for p := range q.All() {
			q.Remove(p) // the body runs without locks held
		}
		left := maps.Collect(q.All())
		assert.Equal(t, []int{2}, slices.Collect(maps.Keys(left)), "removed, but 2, which is reset for its observer")
	})
}

func TestAllAllocatesNothingPerEntry(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil }, StaleTime(Forever))
	for i := range 1000 {
		q.SetData(i, i)
	}
	sum := 0
	for _, s := range q.All() { // the first merges the entry map
		sum += s.Data
	}
	allocs := testing.AllocsPerRun(10, func() {
		for _, s := range q.All() {
			sum += s.Data
		}
	})
	assert.LessOrEqual(t, allocs, 3.0, "a few for the iterator, none per entry")
}

type item struct {
	ID   int
	Name string
}

// TestUpdateWhereAcross1000Entries: a push renames one item in every
// cached list that holds it (setQueriesData), and observers of those lists
// see it.
func TestUpdateWhereAcross1000Entries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		list := func(page int) []item {
			out := []item{{ID: 1000 + page, Name: "own"}}
			if page%10 == 0 {
				out = append(out, item{ID: 7, Name: "seven"})
			}
			return out
		}
		q := NewQueryFunc(c, Key{"lists"}, func(ctx context.Context, page int) ([]item, error) { return list(page), nil },
			StaleTime(Forever))
		for page := range 1000 {
			q.SetData(page, list(page))
		}
		o := q.Use(context.Background(), 30, NotifyOn(DataChanged), DeepEqual())
		defer o.Close()
		got := collectStates(o)
		synctest.Wait()

		holds7 := func(_ int, s State[[]item]) bool {
			return slices.ContainsFunc(s.Data, func(it item) bool { return it.ID == 7 })
		}
		var calls int
		n := q.UpdateWhere(holds7, func(old []item) []item {
			calls++
			out := slices.Clone(old) // old is shared with the cache
			for i := range out {
				if out[i].ID == 7 {
					out[i].Name = "SEVEN"
				}
			}
			return out
		})
		assert.Equal(t, 100, n)
		assert.Equal(t, 100, calls)
		for page, s := range q.All() {
			assert.Equal(t, list(page)[0], s.Data[0], "page %d keeps its own item", page)
			if page%10 == 0 {
				assert.Equal(t, item{ID: 7, Name: "SEVEN"}, s.Data[1], "page %d", page)
			} else {
				assert.Len(t, s.Data, 1, "page %d", page)
			}
		}
		states := got.received()
		require.Len(t, states, 2, "the observer of page 30 saw the patch")
		assert.Equal(t, "SEVEN", states[1].Data[1].Name)
		assert.Zero(t, q.UpdateWhere(func(int, State[[]item]) bool { return false }, nil))
	})
}

func TestUpdateWhereSkipsEntriesWithoutDataAndRetriesOnAChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) { return p, nil }, StaleTime(Forever))
		o := q.Use(context.Background(), 1, Enabled(false))
		defer o.Close()
		q.SetData(2, 20)
		var olds []int
		n := q.UpdateWhere(func(int, State[int]) bool { return true }, func(old int) int {
			olds = append(olds, old)
			if len(olds) == 1 {
				q.SetData(2, 21) // the data changes while f runs: f runs again
			}
			return old + 1
		})
		assert.Equal(t, 1, n, "entry 1 has no data")
		assert.Equal(t, []int{20, 21}, olds)
		v, _ := q.Peek(2)
		assert.Equal(t, 22, v)
		_, ok := q.Peek(1)
		assert.False(t, ok)
	})
}

func TestCloneHandsOutCopies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"l"}, func(ctx context.Context, p int) ([]int, error) { return []int{p}, nil },
			Clone(slices.Clone[[]int]), StaleTime(Forever))
		v, err := q.Get(context.Background(), 1)
		require.NoError(t, err)
		v[0] = 99
		v, err = q.Get(context.Background(), 1) // the hit path
		require.NoError(t, err)
		assert.Equal(t, []int{1}, v)
		v[0] = 99
		p, _ := q.Peek(1)
		p[0] = 99
		s := q.State(1)
		s.Data[0] = 99
		for _, s := range q.All() {
			s.Data[0] = 99
		}
		q.Update(1, func(old []int, ok bool) []int {
			old[0] = 99
			return []int{2}
		})
		o := q.Use(context.Background(), 1)
		defer o.Close()
		synctest.Wait()
		st := <-o.Changes()
		st.Data[0] = 99
		o.State().Data[0] = 99
		f, err := q.Fetch(context.Background(), 1)
		require.NoError(t, err)
		assert.Equal(t, []int{1}, f)
		f[0] = 99
		q.UpdateWhere(func(int, State[[]int]) bool { return true }, func(old []int) []int { old[0] = 99; return old })
		v, _ = q.Peek(1)
		assert.Equal(t, []int{99}, v, "UpdateWhere stored its (copied) result")
		q.SetData(1, []int{3})
		q.UpdateWhere(func(_ int, s State[[]int]) bool { s.Data[0] = 99; return false }, nil)
		v, _ = q.Peek(1)
		assert.Equal(t, []int{3}, v)
	})
	c := NewClient()
	defer c.Close()
	assert.PanicsWithValue(t, "qcache: l: Clone takes func(string) string; the query needs func([]int) []int", func() {
		NewQueryFunc(c, Key{"l"}, func(ctx context.Context, p int) ([]int, error) { return nil, nil },
			Clone(func(s string) string { return s }))
	})
}
