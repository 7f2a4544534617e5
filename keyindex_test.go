package qcache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type idxPair struct{ X, Y string }

type idxSearch struct {
	X string
	Q string `query:"q"`
}

// TestKeyIndexMatchesScan runs seeded random sequences of inserts, removals
// (by parameter and by filter), gc, evictions and observers over queries
// whose keys overlap and differ in length, and after every step checks
// that the key index holds exactly the live entries and that a random
// filter selects through it the same keys, each once, as a scan of every
// entry does. A failing seed prints its operations.
func TestKeyIndexMatchesScan(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := range uint64(seeds) {
		checkIndexSeed(t, seed)
	}
}

func checkIndexSeed(t *testing.T, seed uint64) {
	synctest.Test(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(seed, 17))
		var ops []string
		op := func(format string, args ...any) { ops = append(ops, fmt.Sprintf(format, args...)) }
		fail := func(format string, args ...any) {
			t.Helper()
			require.FailNowf(t, "index differs from a scan", "seed %d: %s\noperations:\n  %s",
				seed, fmt.Sprintf(format, args...), strings.Join(ops, "\n  "))
		}
		ctx := context.Background()
		c := NewClient(WithMaxEntries(30 + r.IntN(30)))
		defer c.Close()
		gc := GCTime(time.Duration(1+r.IntN(20)) * time.Second)
		one := func(context.Context, idxPair) (int, error) { return 1, nil }
		pairs := NewQueryFunc(c, Key{"a"}, one, gc)                                                              // {"a", X, Y}
		strs := NewQueryFunc(c, Key{"a", "b"}, func(context.Context, string) (int, error) { return 2, nil }, gc) // {"a", "b", s}
		search := NewQueryFunc(c, Key{"a"}, func(context.Context, idxSearch) (int, error) { return 3, nil }, gc) // {"a", X} or {"a", X, "?q=…"}
		bare := NewQueryFunc(c, Key{"c"}, func(context.Context, struct{}) (int, error) { return 4, nil }, gc)    // {"c"}
		segs := []string{"a", "b", "c"}
		seg := func() string { return segs[r.IntN(len(segs))] }
		randFilter := func() Filter {
			f := Filter{Exact: r.IntN(3) == 0}
			n := r.IntN(5)
			for i := range n {
				switch {
				case i == 0:
					f.Key = append(f.Key, []string{"a", "a", "c", "x"}[r.IntN(4)])
				case i == n-1 && r.IntN(3) == 0:
					f.Key = append(f.Key, "?q="+seg())
				default:
					f.Key = append(f.Key, seg())
				}
			}
			return f
		}
		var observers []*Observer[int]
		for step := range 200 {
			switch k := r.IntN(12); {
			case k < 4:
				switch r.IntN(4) {
				case 0:
					p := idxPair{seg(), seg()}
					op("pairs.SetData(%v)", p)
					pairs.SetData(p, step)
				case 1:
					p := seg()
					op("strs.SetData(%q)", p)
					strs.SetData(p, step)
				case 2:
					p := idxSearch{seg(), []string{"", "a", "b"}[r.IntN(3)]}
					op("search.SetData(%v)", p)
					search.SetData(p, step)
				default:
					op("bare.SetData")
					bare.SetData(struct{}{}, step)
				}
			case k == 4:
				p := idxPair{seg(), seg()}
				op("pairs.Remove(%v)", p)
				pairs.Remove(p)
			case k == 5:
				f := randFilter()
				op("c.Remove(%q, exact %v)", f.Key, f.Exact)
				c.Remove(f)
			case k == 6:
				d := time.Duration(r.IntN(10)) * time.Second
				op("sleep %v", d)
				time.Sleep(d)
				synctest.Wait()
			case k == 7:
				p := idxPair{seg(), seg()}
				op("pairs.Use(%v)", p)
				observers = append(observers, pairs.Use(ctx, p))
				synctest.Wait()
			case k == 8 && len(observers) > 0:
				i := r.IntN(len(observers))
				op("observer %d Close", i)
				observers[i].Close()
				observers = slices.Delete(observers, i, i+1)
				synctest.Wait()
			default:
				f := randFilter()
				op("c.Invalidate(%q, exact %v)", f.Key, f.Exact)
				f.Refetch = RefetchNone
				require.NoError(t, c.Invalidate(ctx, f))
			}
			for _, err := range []error{indexConsistent(pairs), indexConsistent(strs),
				indexConsistent(search), indexConsistent(bare)} {
				if err != nil {
					fail("after step %d: %v", step, err)
				}
			}
			for range 3 {
				f := randFilter()
				byKey := Filter{Key: f.Key, Exact: f.Exact}
				got := c.Keys(f)
				want := c.Keys(Filter{Predicate: byKey.Match}) // no Key: every entry is looked at
				if !slices.EqualFunc(got, want, slices.Equal) {
					fail("after step %d: filter %q exact %v: index %q, scan %q", step, f.Key, f.Exact, got, want)
				}
			}
		}
		for _, o := range observers {
			o.Close()
		}
	})
}

// indexConsistent checks q's key index, when built, against its entry map:
// it holds every live entry exactly once, and nothing else; each set's
// count is its slots' and each entry is found from its home slot.
func indexConsistent[P comparable, T any](q *Query[P, T]) error {
	m := &q.entries
	m.mu.Lock()
	defer m.mu.Unlock()
	x := m.index
	if x == nil {
		return nil
	}
	live := map[*entry[P, T]]bool{}
	for _, e := range m.readOnly().m {
		if !e.isGone() {
			live[e] = true
		}
	}
	for _, e := range m.added {
		if !e.isGone() {
			live[e] = true
		}
	}
	var all []*entry[P, T]
	all = append(all, x.odd...)
	all = append(all, x.bare...)
	var walk func(n *indexNode[P, T], d int) error
	walk = func(n *indexNode[P, T], d int) error {
		s := &n.leaves
		count := 0
		for _, x := range s.slots {
			if x.e == nil {
				continue
			}
			count++
			k := x.e.entryKey()
			if x.h != segHash(k[d]) {
				return fmt.Errorf("entry %q kept with the hash of another segment", k)
			}
			if found := s.appendSeg(nil, k[d], d); !slices.Contains(found, x.e) {
				return fmt.Errorf("entry %q not found from its home slot", k)
			}
		}
		if count != s.n {
			return fmt.Errorf("a set counts %d entries and holds %d", s.n, count)
		}
		if len(s.slots) > 0 && 4*s.n > 3*len(s.slots) {
			return fmt.Errorf("a set holds %d entries in %d slots", s.n, len(s.slots))
		}
		all = s.appendAll(all)
		for sg, ch := range n.children {
			if ch.leaves.n == 0 && len(ch.children) == 0 {
				return fmt.Errorf("an empty node is kept under %q", sg)
			}
			if err := walk(ch, d+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(&x.root, len(x.static)); err != nil {
		return err
	}
	seen := map[*entry[P, T]]bool{}
	for _, e := range all {
		if seen[e] {
			return fmt.Errorf("entry %q indexed twice", e.entryKey())
		}
		seen[e] = true
		if !live[e] {
			return fmt.Errorf("entry %q indexed but not live (gone: %v)", e.entryKey(), e.isGone())
		}
	}
	if len(seen) != len(live) {
		return fmt.Errorf("%d entries indexed, %d live", len(seen), len(live))
	}
	return nil
}

// TestEntrySetRemove adds and removes entries of few distinct segments, so
// that probe sequences collide and wrap, and checks after each removal
// that every entry left is found.
func TestEntrySetRemove(t *testing.T) {
	type segID struct {
		Seg string
		ID  int
	}
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(context.Context, segID) (int, error) { return 0, nil })
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var s entrySet[segID, int]
		var in []*entry[segID, int]
		for i := range 1 + r.IntN(60) {
			p := segID{fmt.Sprint(r.IntN(8)), round*100 + i}
			q.SetData(p, 1)
			e := q.entries.load(p)
			require.NotNil(t, e)
			s.add(e, p.Seg)
			in = append(in, e)
		}
		for len(in) > 0 {
			i := r.IntN(len(in))
			s.remove(in[i], in[i].p.Seg)
			in = slices.Delete(in, i, i+1)
			require.Equal(t, len(in), s.n, "round %d", round)
			for _, e := range in {
				assert.Contains(t, s.appendSeg(nil, e.p.Seg, 1), e, "round %d: %v lost", round, e.p)
			}
		}
		assert.Nil(t, s.slots, "an empty set holds no slots")
	}
}

// TestKeyIndexExactAndPrefix shows what a filter selects through the
// index: a prefix takes the key itself and the longer ones under it, Exact
// the key only, and a prefix that is a segment's start takes nothing.
func TestKeyIndexExactAndPrefix(t *testing.T) {
	c := NewClient()
	defer c.Close()
	users := NewQueryFunc(c, Key{"users"}, func(context.Context, string) (int, error) { return 0, nil })
	q := NewQueryFunc(c, Key{"users"}, func(context.Context, idxSearch) (int, error) { return 0, nil })
	for _, id := range []string{"4", "42", "420"} {
		users.SetData(id, 1)
	}
	q.SetData(idxSearch{"42", "a"}, 1)
	assert.Equal(t, []Key{{"users", "42"}, {"users", "42", "?q=a"}}, c.Keys(Filter{Key: Key{"users", "42"}}))
	assert.Equal(t, []Key{{"users", "42"}}, c.Keys(Filter{Key: Key{"users", "42"}, Exact: true}))
	assert.Equal(t, []Key{{"users", "42", "?q=a"}}, c.Keys(Filter{Key: Key{"users", "42", "?q=a"}}))
	assert.Empty(t, c.Keys(Filter{Key: Key{"users", "4", "?q=a"}}))
	assert.Empty(t, c.Keys(Filter{Key: Key{"users"}, Exact: true}))
	assert.Len(t, c.Keys(Filter{Key: Key{"users"}}), 4)
	q.Remove(idxSearch{"42", "a"})
	assert.Equal(t, []Key{{"users", "42"}}, c.Keys(Filter{Key: Key{"users", "42"}}))
	require.NoError(t, indexConsistent(users))
	require.NoError(t, indexConsistent(q))
}
