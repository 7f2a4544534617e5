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
func BenchmarkInvalidateIndex(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			const groups = 100
			per := n / groups
			c := NewClient()
			defer c.Close()
			q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, p groupItem) (string, error) {
				return p.Item, nil
			}, StaleTime(Forever))
			for g := range groups {
				for i := range per {
					q.SetData(groupItem{groupName(g), strconv.Itoa(i)}, "v")
				}
			}
			ctx := context.Background()
			run := func(f func(g int) Filter, want int) func(b *testing.B) {
				return func(b *testing.B) {
					if got := len(c.Keys(f(7))); got != want {
						b.Fatalf("filter matches %d entries, want %d", got, want)
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						if err := c.Invalidate(ctx, f(i%groups)); err != nil {
							b.Fatal(err)
						}
						i++
					}
				}
			}
			names := make([]string, groups)
			for g := range names {
				names[g] = groupName(g)
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
			b.Run("prefix", run(func(g int) Filter {
				return Filter{Key: Key{"items", names[g]}, Refetch: RefetchNone}
			}, per))
			b.Run("scan", run(func(g int) Filter {
				return Filter{Refetch: RefetchNone, Predicate: func(k Key) bool { return k[1] == names[g] }}
			}, per))
			b.Run("exact", run(func(g int) Filter {
				return Filter{Key: Key{"items", names[g], "42"}, Exact: true, Refetch: RefetchNone}
			}, 1))
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
