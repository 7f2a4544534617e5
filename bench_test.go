package qcache

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

type benchParams struct{ ID string }

// BenchmarkGetHit measures Get of fresh data for one hot key under
// contention; BenchmarkSyncMapLoad is the same lookup on a bare sync.Map, the
// physical limit it is compared with.
func BenchmarkGetHit(b *testing.B) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"users"}, func(ctx context.Context, p benchParams) (string, error) {
		return "user " + p.ID, nil
	}, StaleTime(Forever))
	ctx := context.Background()
	p := benchParams{ID: strconv.Itoa(42)}
	if _, err := q.Get(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Get(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSyncMapLoad(b *testing.B) {
	var m sync.Map
	p := benchParams{ID: strconv.Itoa(42)}
	m.Store(p, "user 42")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := m.Load(p); !ok {
				b.Fatal("missing")
			}
		}
	})
}

// BenchmarkGetHitSpread measures Get of fresh data spread over 1,000,000
// string keys in a random order, one reader: what the CPU cache misses of
// the map, the entry and its snapshot cost (the entry's layout matters).
func BenchmarkGetHitSpread(b *testing.B) {
	const n = 1_000_000
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"items"}, func(_ context.Context, k string) (string, error) {
		return k, nil
	}, StaleTime(Forever), GCTime(Forever))
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
		if _, err := q.Get(ctx, keys[i]); err != nil {
			b.Fatal(err)
		}
	}
	for range q.All() { // merges the entry maps: every lookup takes the read map
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := q.Get(ctx, keys[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == n {
			i = 0
		}
	}
}
