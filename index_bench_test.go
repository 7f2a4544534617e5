package qcache

import (
	"context"
	"fmt"
	"strconv"
	"testing"
)

// groupItem is a key of two path segments: a group, then an item.
type groupItem struct{ Group, Item string }

func groupName(g int) string { return fmt.Sprintf("g%03d", g) }

// BenchmarkInvalidateIndex invalidates, without refetching, 1% of the
// entries of one query by a key prefix (prefix), the same entries by a
// Predicate, which makes every entry be looked at (scan), and one entry by
// its exact key (exact), with 100,000 and 1,000,000 entries; and the
// one-time build of the index (build).
//
// Every timed invalidation hits entries that are fresh and not
// invalidated: prefix and scan take the groups in turn and make the group
// they invalidated fresh again (SetData) with the timer stopped, so that
// the group an op hits was restored 99 ops before, as cold as the others;
// exact takes the entries in turn, and makes them all fresh again when it
// has been through them.
func BenchmarkInvalidateIndex(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			const groups = 100
			per := n / groups
			c := NewClient()
			defer c.Close()
			q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, p groupItem) (string, error) {
				return p.Item, nil
			}, StaleTime(Forever), GCTime(Forever)) // the build sub-benchmark may run for minutes
			names := make([]string, groups)
			for g := range names {
				names[g] = groupName(g)
			}
			items := make([]string, per)
			for i := range items {
				items[i] = strconv.Itoa(i)
			}
			restore := func(g int) {
				for _, it := range items {
					q.SetData(groupItem{names[g], it}, "v")
				}
			}
			for g := range groups {
				restore(g)
			}
			ctx := context.Background()
			// invalidated checks, untimed, that the op hit (g, item) as a
			// fresh entry and left it invalidated.
			invalidated := func(b *testing.B, g, item int) {
				if s := q.State(groupItem{names[g], items[item]}); !s.IsInvalidated || !s.IsStale {
					b.Fatalf("(%d, %d) after its invalidation: %+v", g, item, s)
				}
			}
			group := func(f func(g int) Filter) func(b *testing.B) {
				return func(b *testing.B) {
					if got := len(c.Keys(f(7))); got != per {
						b.Fatalf("filter matches %d entries, want %d", got, per)
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						g := i % groups
						if err := c.Invalidate(ctx, f(g)); err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						invalidated(b, g, i%per)
						restore(g)
						b.StartTimer()
						i++
					}
				}
			}
			// build: the one-time pass of a query's first match by key,
			// which indexes every entry (their keys built from P).
			b.Run("build", func(b *testing.B) {
				for b.Loop() {
					q.entries.mu.Lock()
					q.entries.index = nil
					q.entries.mu.Unlock()
					c.Keys(Filter{Key: Key{"items", names[0]}})
				}
			})
			b.Run("prefix", group(func(g int) Filter {
				return Filter{Key: Key{"items", names[g]}, Refetch: RefetchNone}
			}))
			b.Run("scan", group(func(g int) Filter {
				return Filter{Refetch: RefetchNone, Predicate: func(k Key) bool { return k[1] == names[g] }}
			}))
			b.Run("exact", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					// Entry i of the n, group by group: consecutive ops
					// hit entries of different groups.
					g, item := i%groups, i/groups%per
					f := Filter{Key: Key{"items", names[g], items[item]}, Exact: true, Refetch: RefetchNone}
					if err := c.Invalidate(ctx, f); err != nil {
						b.Fatal(err)
					}
					i++
					if i%n == 0 || i%1000 == 0 {
						b.StopTimer()
						invalidated(b, g, item)
						if i%n == 0 {
							for g := range groups {
								restore(g)
							}
						}
						b.StartTimer()
					}
				}
			})
		})
	}
}

// BenchmarkInsert measures SetData of new keys, the insert path, before a
// filter by key has built the query's index (unindexed: what every insert
// paid before the index) and after (indexed), which the index must not
// slow down by more than a fifth.
func BenchmarkInsert(b *testing.B) {
	for _, indexed := range []bool{false, true} {
		name := "unindexed"
		if indexed {
			name = "indexed"
		}
		b.Run(name, func(b *testing.B) {
			c := NewClient()
			defer c.Close()
			q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, p groupItem) (string, error) {
				return p.Item, nil
			}, StaleTime(Forever))
			if indexed {
				c.Keys(Filter{Key: Key{"items", "g000"}}) // builds the index
			}
			ps := make([]groupItem, b.N)
			for i := range ps {
				ps[i] = groupItem{groupName(i % 100), strconv.Itoa(i)}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				q.SetData(ps[i], "v")
			}
		})
	}
}
