package qcache

import (
	"context"
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
