package qcacheotel_test

import (
	"context"
	"testing"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheotel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// benchHooks returns no hooks, or the hooks of a Telemetry on the SDK's
// providers (every span sampled and recorded, then dropped; metrics
// aggregated by a manual reader).
func benchHooks(b *testing.B, otel bool) qcache.Hooks {
	if !otel {
		return qcache.Hooks{}
	}
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		tp.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	tel, err := qcacheotel.New(qcacheotel.WithTracerProvider(tp), qcacheotel.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	return tel.Hooks()
}

// BenchmarkGetHit is the hit path with and without the hooks installed: it
// calls no hook, so it must not change (0 allocs/op).
func BenchmarkGetHit(b *testing.B) {
	for _, name := range []string{"no_hooks", "otel"} {
		b.Run(name, func(b *testing.B) {
			c := qcache.NewClient(qcache.WithHooks(benchHooks(b, name == "otel")))
			defer c.Close()
			q := qcache.NewQueryFunc(c, qcache.Key{"users"}, func(ctx context.Context, id int) (int, error) {
				return id, nil
			}, qcache.StaleTime(qcache.Forever))
			ctx := context.Background()
			if _, err := q.Get(ctx, 42); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := q.Get(ctx, 42); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkFetch is one fetch (of a function that answers at once) per op,
// its FetchEnd hooks included: the cost of a span and the metrics per
// fetch is the difference between the two.
func BenchmarkFetch(b *testing.B) {
	for _, name := range []string{"no_hooks", "otel"} {
		b.Run(name, func(b *testing.B) {
			ended := make(chan struct{}, 1)
			c := qcache.NewClient(qcache.WithHooks(qcache.JoinHooks(
				benchHooks(b, name == "otel"),
				qcache.Hooks{FetchEnd: func(context.Context, qcache.FetchResult) { ended <- struct{}{} }},
			)))
			defer c.Close()
			q := qcache.NewQueryFunc(c, qcache.Key{"users"}, func(ctx context.Context, id int) (int, error) {
				return id, nil
			})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := q.Fetch(ctx, 42); err != nil {
					b.Fatal(err)
				}
				<-ended
			}
		})
	}
}
