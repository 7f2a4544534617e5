package qcacheotel_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheotel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sleepCtx waits d or until ctx ends, on time.AfterFunc: a bubble must not
// receive from timer channels (docs/testing.md in the root module).
func sleepCtx(ctx context.Context, d time.Duration) error {
	done := make(chan struct{})
	t := time.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// otelSetup is a Telemetry on an SDK tracer provider with an in-memory
// exporter (spans exported as they end) and a meter provider with a manual
// reader.
type otelSetup struct {
	tel    *qcacheotel.Telemetry
	tp     *sdktrace.TracerProvider
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func newSetup(t *testing.T, opts ...qcacheotel.Option) *otelSetup {
	t.Helper()
	s := &otelSetup{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	tel, err := qcacheotel.New(append([]qcacheotel.Option{
		qcacheotel.WithTracerProvider(s.tp), qcacheotel.WithMeterProvider(mp)}, opts...)...)
	require.NoError(t, err)
	s.tel = tel
	t.Cleanup(func() {
		assert.NoError(t, tel.Close())
		assert.NoError(t, mp.Shutdown(context.Background()))
		assert.NoError(t, s.tp.Shutdown(context.Background()))
	})
	return s
}

// ended returns the spans that ended, by name.
func (s *otelSetup) ended(name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, sp := range s.spans.GetSpans() {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

// attrs returns a span's attributes as a map.
func attrs(kvs []attribute.KeyValue) map[attribute.Key]any {
	m := map[attribute.Key]any{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.AsInterface()
	}
	return m
}

// TestSpans checks, in virtual time, that each fetch is one span, a child
// of the span of the call that started it (shared by a caller that joins),
// with its attributes, its retry events and its status, and that the fetch
// function runs in its context.
func TestSpans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSetup(t)
		c := qcache.NewClient(qcache.WithHooks(s.tel.Hooks()))
		defer c.Close()
		inner := s.tp.Tracer("app")
		q := qcache.NewQueryFunc(c, qcache.Key{"things"}, func(ctx context.Context, p string) (string, error) {
			// What otelhttp does inside a fetch: a span from the fetch's context.
			ctx, span := inner.Start(ctx, "inner "+p)
			defer span.End()
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			if p == "bad" {
				return "", errors.New("down")
			}
			return p, nil
		}, qcache.StaleTime(time.Hour), qcache.Retry(2), qcache.RetryDelay(func(int, error) time.Duration { return time.Second }))

		app := s.tp.Tracer("app")
		ctx, request := app.Start(context.Background(), "request")
		_, err := q.Get(ctx, "a")
		require.NoError(t, err)
		_, err = q.Get(ctx, "a") // a hit: no fetch, no span
		require.NoError(t, err)
		_, err = q.Get(ctx, "bad")
		require.Error(t, err)

		// A caller that joins a fetch in flight shares the starter's span.
		ctx2, other := app.Start(context.Background(), "other request")
		var wg sync.WaitGroup
		wg.Go(func() { q.Get(ctx, "shared") })
		synctest.Wait()
		wg.Go(func() { q.Get(ctx2, "shared") })
		wg.Wait()
		other.End()
		request.End()

		// A fetch that nothing traced starts a root span.
		q.Prefetch("background")
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()

		fetchSpans := s.ended("qcache.fetch things")
		require.Len(t, fetchSpans, 4)
		byKey := map[any]tracetest.SpanStub{}
		for _, sp := range fetchSpans {
			byKey[attrs(sp.Attributes)["qcache.key"]] = sp
		}
		reqCtx := request.SpanContext()

		a := byKey["things/a"]
		assert.Equal(t, reqCtx.SpanID(), a.Parent.SpanID(), "a child of the starter's span")
		assert.Equal(t, reqCtx.TraceID(), a.SpanContext.TraceID())
		assert.Equal(t, trace.SpanKindInternal, a.SpanKind)
		assert.Equal(t, map[attribute.Key]any{
			"qcache.query":    "things",
			"qcache.key":      "things/a",
			"qcache.attempts": int64(1),
			"qcache.outcome":  "success",
		}, attrs(a.Attributes))
		assert.Equal(t, codes.Unset, a.Status.Code)
		assert.Empty(t, a.Events)
		assert.Equal(t, time.Second, a.EndTime.Sub(a.StartTime))
		innerA := s.ended("inner a")
		require.Len(t, innerA, 1)
		assert.Equal(t, a.SpanContext.SpanID(), innerA[0].Parent.SpanID(), "the fetch function runs in the fetch's span")

		bad := byKey["things/bad"]
		assert.Equal(t, reqCtx.SpanID(), bad.Parent.SpanID())
		assert.Equal(t, int64(3), attrs(bad.Attributes)["qcache.attempts"])
		assert.Equal(t, "error", attrs(bad.Attributes)["qcache.outcome"])
		assert.Equal(t, codes.Error, bad.Status.Code)
		assert.Equal(t, "down", bad.Status.Description)
		assert.Equal(t, 5*time.Second, bad.EndTime.Sub(bad.StartTime))
		var retries []map[attribute.Key]any
		for _, ev := range bad.Events {
			if ev.Name == "qcache.retry" {
				retries = append(retries, attrs(ev.Attributes))
			}
		}
		assert.Equal(t, []map[attribute.Key]any{
			{"qcache.attempt": int64(1), "error.message": "down", "qcache.retry.delay": 1.0},
			{"qcache.attempt": int64(2), "error.message": "down", "qcache.retry.delay": 1.0},
		}, retries)
		assert.True(t, slices.ContainsFunc(bad.Events, func(ev sdktrace.Event) bool { return ev.Name == "exception" }),
			"the error is recorded")
		assert.Len(t, s.ended("inner bad"), 3, "one inner span per attempt")

		shared := byKey["things/shared"]
		assert.Equal(t, reqCtx.SpanID(), shared.Parent.SpanID(), "the joiner shares the starter's fetch and its span")

		bg := byKey["things/background"]
		assert.False(t, bg.Parent.IsValid(), "a fetch started without a span is a root")
		assert.NotEqual(t, reqCtx.TraceID(), bg.SpanContext.TraceID())
	})
}

// TestSpansOverHTTP checks the nesting with a real otelhttp transport: the
// request's span, the fetch's span, then otelhttp's client span; and the
// HTTP status on the fetch's span.
func TestSpansOverHTTP(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/users/404" {
			http.Error(w, "no such user", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `"ann"`)
	}))
	defer api.Close()
	s := newSetup(t)
	hc := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport, otelhttp.WithTracerProvider(s.tp))}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	done := sync.NewCond(&mu)
	ends := 0
	c := qcache.NewClient(qcache.WithBaseURL(api.URL), qcache.WithHTTPClient(hc), qcache.WithHooks(qcache.JoinHooks(
		s.tel.Hooks(),
		qcache.Hooks{FetchEnd: func(context.Context, qcache.FetchResult) { mu.Lock(); ends++; done.Broadcast(); mu.Unlock() }},
	)))
	defer c.Close()
	users := qcache.NewQuery[string, string](c, qcache.Endpoint{URL: "/users/$id"}, qcache.Retry(0))

	ctx, request := s.tp.Tracer("app").Start(t.Context(), "request")
	_, err := users.Get(ctx, "1")
	require.NoError(t, err)
	_, err = users.Get(ctx, "404")
	require.Error(t, err)
	request.End()
	mu.Lock()
	for ends < 2 {
		done.Wait()
	}
	mu.Unlock()

	fetches := s.ended("qcache.fetch GET /users/$id")
	require.Len(t, fetches, 2)
	var clientSpans tracetest.SpanStubs
	for _, sp := range s.spans.GetSpans() {
		if sp.SpanKind == trace.SpanKindClient {
			clientSpans = append(clientSpans, sp)
		}
	}
	require.Len(t, clientSpans, 2)
	for _, f := range fetches {
		assert.Equal(t, request.SpanContext().SpanID(), f.Parent.SpanID())
		status := attrs(f.Attributes)["http.response.status_code"]
		children := 0
		for _, cs := range clientSpans {
			if cs.Parent.SpanID() == f.SpanContext.SpanID() {
				children++
				assert.Equal(t, status, attrs(cs.Attributes)["http.response.status_code"],
					"otelhttp's span under it saw the same answer")
			}
		}
		assert.Equal(t, 1, children, "otelhttp's client span nests under the fetch's span")
		if status == int64(404) {
			assert.Equal(t, codes.Error, f.Status.Code)
		} else {
			assert.Equal(t, int64(200), status)
			assert.Equal(t, codes.Unset, f.Status.Code)
		}
	}
}

// TestMetrics checks, in virtual time, the exact value of every metric that
// a manual reader collects: events from the hooks, per-query counters and
// gauges read from the watched clients.
func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSetup(t, qcacheotel.Buckets(0.5, 1, 2, 5))
		c := qcache.NewClient(qcache.WithHooks(s.tel.Hooks()), qcache.WithMaxEntries(3))
		defer c.Close()
		s.tel.Watch(c)
		q := qcache.NewQueryFunc(c, qcache.Key{"things"}, func(ctx context.Context, p string) (string, error) {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			if p == "bad" {
				return "", errors.New("down")
			}
			return p, nil
		}, qcache.StaleTime(time.Hour), qcache.Retry(1), qcache.RetryDelay(func(int, error) time.Duration { return time.Second }))
		ctx := context.Background()
		get := func(p string) { _, _ = q.Get(ctx, p) }
		get("a")   // miss, 1 s
		get("a")   // hit
		get("bad") // miss, retried: error in 3 s
		var wg sync.WaitGroup
		wg.Go(func() { get("b") })
		synctest.Wait()
		wg.Go(func() { get("b") }) // joins
		wg.Wait()
		get("c")      // the fourth entry: "a", the least recently used, is evicted
		q.Remove("c") // evicted: remove
		o := q.Use(ctx, "b")
		defer o.Close()
		q.Prefetch("slow") // in flight at collection
		synctest.Wait()

		// Bus and WebSocket events, through the hooks directly.
		h := s.tel.Hooks()
		h.WSConnected("ws://x")
		h.WSMessage("ws://x", 5, nil)
		h.WSMessage("ws://x", 3, errors.New("bad"))
		h.WSDropped("ws://x", errors.New("reset"))
		h.WSConnected("ws://x")
		h.BusPublished(qcache.EventInvalidate)
		h.BusReceived(qcache.EventSetData)
		h.BusDropped(qcache.EventKind(42), "invalid")
		h.BusResync()

		var rm metricdata.ResourceMetrics
		require.NoError(t, s.reader.Collect(ctx, &rm))
		got := map[string]metricdata.Metrics{}
		for _, sm := range rm.ScopeMetrics {
			assert.Equal(t, qcacheotel.ScopeName, sm.Scope.Name)
			for _, m := range sm.Metrics {
				got[m.Name] = m
			}
		}
		th := []attribute.KeyValue{qcacheotel.AttrQuery.String("things")}
		with := func(kvs ...attribute.KeyValue) []attribute.KeyValue { return append(slices.Clone(th), kvs...) }
		outcome, reason := qcacheotel.AttrOutcome.String, qcacheotel.AttrReason.String
		for _, c := range []struct {
			name  string
			attrs []attribute.KeyValue
			want  int64
		}{
			{"qcache.hits", th, 1},
			{"qcache.misses", th, 5},
			{"qcache.stale_served", th, 0},
			{"qcache.retries", th, 1},
			{"qcache.deduplicated", th, 1},
			{"qcache.entries", th, 3},
			{"qcache.observers", th, 1},
			{"qcache.fetches.in_flight", th, 1},
			{"qcache.fetches", with(outcome("success")), 3},
			{"qcache.fetches", with(outcome("error")), 1},
			{"qcache.evictions", with(reason("max_entries")), 1},
			{"qcache.evictions", with(reason("remove")), 1},
			{"qcache.ws.connected", nil, 1},
			{"qcache.ws.connects", nil, 2},
			{"qcache.ws.drops", nil, 1},
			{"qcache.ws.messages", nil, 2},
			{"qcache.ws.message.errors", nil, 1},
			{"qcache.ws.message.bytes", nil, 8},
			{"qcache.bus.published", []attribute.KeyValue{qcacheotel.AttrKind.String("invalidate")}, 1},
			{"qcache.bus.received", []attribute.KeyValue{qcacheotel.AttrKind.String("setData")}, 1},
			{"qcache.bus.dropped", []attribute.KeyValue{qcacheotel.AttrKind.String("unknown"), reason("invalid")}, 1},
			{"qcache.bus.resyncs", nil, 1},
		} {
			m, ok := got[c.name]
			if !assert.True(t, ok, "no metric %s", c.name) {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			require.True(t, ok, "%s is a %T", c.name, m.Data)
			want := attribute.NewSet(c.attrs...)
			found := false
			for _, dp := range sum.DataPoints {
				if dp.Attributes.Equals(&want) {
					found = true
					assert.Equal(t, c.want, dp.Value, "%s%v", c.name, c.attrs)
				}
			}
			assert.True(t, found, "no point %s%v", c.name, c.attrs)
		}
		assert.Len(t, got["qcache.fetches"].Data.(metricdata.Sum[int64]).DataPoints, 2, "no other outcome")
		for _, name := range []string{"qcache.hits", "qcache.fetches", "qcache.evictions", "qcache.ws.drops"} {
			assert.True(t, got[name].Data.(metricdata.Sum[int64]).IsMonotonic, name)
		}
		for _, name := range []string{"qcache.entries", "qcache.ws.connected"} {
			assert.False(t, got[name].Data.(metricdata.Sum[int64]).IsMonotonic, name)
		}

		d := got["qcache.fetch.duration"]
		assert.Equal(t, "s", d.Unit)
		hist, ok := d.Data.(metricdata.Histogram[float64])
		require.True(t, ok)
		points := map[string]metricdata.HistogramDataPoint[float64]{}
		for _, dp := range hist.DataPoints {
			o, _ := dp.Attributes.Value(qcacheotel.AttrOutcome)
			points[o.AsString()] = dp
		}
		require.Len(t, points, 2)
		assert.Equal(t, []float64{0.5, 1, 2, 5}, points["success"].Bounds)
		assert.Equal(t, uint64(3), points["success"].Count)
		assert.Equal(t, 3.0, points["success"].Sum)
		assert.Equal(t, []uint64{0, 3, 0, 0, 0}, points["success"].BucketCounts)
		assert.Equal(t, uint64(1), points["error"].Count)
		assert.Equal(t, 3.0, points["error"].Sum)
		assert.Equal(t, []uint64{0, 0, 0, 1, 0}, points["error"].BucketCounts)
	})
}
