package qcacheotel

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/querystats"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/qcache-go/qcache/qcacheotel"

// Attribute keys of the spans and metrics.
const (
	AttrQuery    = attribute.Key("qcache.query")    // the query's name (qcache.QueryName)
	AttrKey      = attribute.Key("qcache.key")      // the entry's key: spans only, never a metric
	AttrAttempts = attribute.Key("qcache.attempts") // attempts a fetch made
	AttrAttempt  = attribute.Key("qcache.attempt")  // the attempt that failed, on a retry event
	AttrOutcome  = attribute.Key("qcache.outcome")  // success, error, cancelled or superseded
	AttrReason   = attribute.Key("qcache.reason")   // why an entry was evicted, or a bus event dropped
	AttrKind     = attribute.Key("qcache.kind")     // a bus event's kind
	// AttrStatusCode is OpenTelemetry's semantic convention for the status
	// of an HTTP answer: the last one of the fetch.
	AttrStatusCode = attribute.Key("http.response.status_code")
)

// Telemetry makes a span per fetch and records qcache's metrics with
// OpenTelemetry. Its Hooks trace fetches and count events as they happen;
// the per-query counters and gauges that the clients keep themselves (hits,
// misses, entries, …) are read from the clients given to Watch whenever the
// meter provider collects. One Telemetry serves any number of clients;
// series with the same query name add up.
type Telemetry struct {
	tracer trace.Tracer

	fetches      metric.Int64Counter
	duration     metric.Float64Histogram
	evictions    metric.Int64Counter
	wsConnected  metric.Int64UpDownCounter
	wsConnects   metric.Int64Counter
	wsDrops      metric.Int64Counter
	wsMessages   metric.Int64Counter
	wsMsgErrors  metric.Int64Counter
	wsMsgBytes   metric.Int64Counter
	busPublished metric.Int64Counter
	busReceived  metric.Int64Counter
	busDropped   metric.Int64Counter
	busResyncs   metric.Int64Counter

	hits, misses, staleServed, retries, dedup metric.Int64ObservableCounter
	entries, observers, inFlight              metric.Int64ObservableUpDownCounter
	registration                              metric.Registration

	mu      sync.Mutex
	clients []*qcache.Client

	// attrs caches the attribute sets of events, by query and outcome or
	// reason: a fetch does not build one each time.
	attrs sync.Map // attrKey -> metric.MeasurementOption
}

type attrKey struct {
	which int // 0: query and outcome; 1: query and reason
	query string
	value int
}

// Option configures a Telemetry.
type Option func(*config)

type config struct {
	tp      trace.TracerProvider
	mp      metric.MeterProvider
	buckets []float64
}

// WithTracerProvider sets where spans go. The default is the global one,
// otel.GetTracerProvider(), as it is when New is called (the global
// provider forwards to the one set later with otel.SetTracerProvider).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go. The default is the global one,
// otel.GetMeterProvider(), as it is when New is called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// Buckets sets the bucket boundaries, in seconds, of qcache.fetch.duration.
// The default is Prometheus's: 5 ms, 10 ms, 25 ms, … 10 s.
func Buckets(b ...float64) Option {
	return func(c *config) { c.buckets = slices.Clone(b) }
}

// New makes the instruments of a Telemetry that watches no client yet. It
// fails only when the meter provider refuses an instrument.
func New(opts ...Option) (*Telemetry, error) {
	cfg := config{buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	m := cfg.mp.Meter(ScopeName)
	t := &Telemetry{tracer: cfg.tp.Tracer(ScopeName)}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	observed := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		c, err := m.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	t.fetches = counter("qcache.fetches", "{fetch}", "Fetches that ended, by query and outcome (success, error, cancelled, superseded).")
	var err error
	t.duration, err = m.Float64Histogram("qcache.fetch.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of fetches that ended, retries and their waits included, by query and outcome."),
		metric.WithExplicitBucketBoundaries(cfg.buckets...))
	errs = append(errs, err)
	t.evictions = counter("qcache.evictions", "{entry}", "Entries that left the cache, by query and reason (gc, max_entries, remove).")
	t.wsConnected, err = m.Int64UpDownCounter("qcache.ws.connected", metric.WithUnit("{link}"),
		metric.WithDescription("WebSocket links up now."))
	errs = append(errs, err)
	t.wsConnects = counter("qcache.ws.connects", "{link}", "WebSocket links that came up (first connections and reconnections).")
	t.wsDrops = counter("qcache.ws.drops", "{link}", "WebSocket links that went down other than by Close.")
	t.wsMessages = counter("qcache.ws.messages", "{message}", "WebSocket messages handed to their handler.")
	t.wsMsgErrors = counter("qcache.ws.message.errors", "{message}", "WebSocket messages whose handler returned an error.")
	t.wsMsgBytes = counter("qcache.ws.message.bytes", "By", "Bytes of the WebSocket messages handed to their handler.")
	t.busPublished = counter("qcache.bus.published", "{event}", "Events sent to the other replicas, by kind.")
	t.busReceived = counter("qcache.bus.received", "{event}", "Events taken from the other replicas, by kind.")
	t.busDropped = counter("qcache.bus.dropped", "{event}", "Events not sent or not applied, by kind and reason.")
	t.busResyncs = counter("qcache.bus.resyncs", "{resync}", "Times every local entry was invalidated because bus events were lost.")

	t.hits = observed("qcache.hits", "{call}", "Get calls answered from memory.")
	t.misses = observed("qcache.misses", "{call}", "Get calls that waited for a fetch.")
	t.staleServed = observed("qcache.stale_served", "{call}", "Get calls answered with stale data (StaleWhileRevalidate).")
	t.retries = observed("qcache.retries", "{attempt}", "Fetch attempts that failed and were retried.")
	t.dedup = observed("qcache.deduplicated", "{call}", "Callers that joined a fetch in flight instead of starting one.")
	t.entries = gauge("qcache.entries", "{entry}", "Entries cached now.")
	t.observers = gauge("qcache.observers", "{observer}", "Observers (Use) running now.")
	t.inFlight = gauge("qcache.fetches.in_flight", "{fetch}", "Fetches started and not settled now.")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.registration, err = m.RegisterCallback(t.observe,
		t.hits, t.misses, t.staleServed, t.retries, t.dedup, t.entries, t.observers, t.inFlight)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Close unregisters the callback that reads the watched clients. It does
// not end spans of fetches in flight: their FetchEnd does.
func (t *Telemetry) Close() error {
	return t.registration.Unregister()
}

// Watch adds c to the clients whose per-query counters and gauges are read
// at each collection. It does not install the hooks: give them to
// qcache.NewClient with qcache.WithHooks. A closed client is still read
// (its counters frozen, its gauges at zero) until Unwatch.
func (t *Telemetry) Watch(c *qcache.Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.clients, c) {
		t.clients = append(t.clients, c)
	}
}

// Unwatch removes c from the clients read at each collection.
func (t *Telemetry) Unwatch(c *qcache.Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.clients = slices.DeleteFunc(t.clients, func(x *qcache.Client) bool { return x == c })
}

// observe reports the watched clients' per-query counters and gauges,
// added up by query name.
func (t *Telemetry) observe(_ context.Context, o metric.Observer) error {
	t.mu.Lock()
	clients := slices.Clone(t.clients)
	t.mu.Unlock()
	names, sums := querystats.ByName(clients)
	for _, name := range names {
		s := sums[name]
		at := metric.WithAttributeSet(attribute.NewSet(AttrQuery.String(name)))
		o.ObserveInt64(t.hits, int64(s.Hits), at)
		o.ObserveInt64(t.misses, int64(s.Misses), at)
		o.ObserveInt64(t.staleServed, int64(s.StaleServed), at)
		o.ObserveInt64(t.retries, int64(s.Retries), at)
		o.ObserveInt64(t.dedup, int64(s.Deduplicated), at)
		o.ObserveInt64(t.entries, int64(s.Entries), at)
		o.ObserveInt64(t.observers, int64(s.Observers), at)
		o.ObserveInt64(t.inFlight, int64(s.InFlight), at)
	}
	return nil
}

// spanKey carries the fetch's span from FetchStart to Retry and FetchEnd,
// even when hooks joined after these start spans of their own.
type spanKey struct{}

// Hooks returns the hooks that trace fetches and count events; install them
// with qcache.WithHooks (qcache.JoinHooks to combine them with others).
//
// FetchStart starts a span "qcache.fetch <query name>", a child of the span
// in the context of the call that started the fetch (joiners share the
// starter's), and gives the fetch function a context that holds it: an
// HTTP client span made inside the fetch (otelhttp) nests under it. Retry
// adds a "qcache.retry" event. FetchEnd sets the attempts, the outcome and
// the HTTP status, sets the status Error on qcache.OutcomeError, and ends
// the span.
func (t *Telemetry) Hooks() qcache.Hooks {
	return qcache.Hooks{
		FetchStart: func(ctx context.Context, f qcache.FetchInfo) context.Context {
			ctx, span := t.tracer.Start(ctx, "qcache.fetch "+f.Query,
				trace.WithSpanKind(trace.SpanKindInternal),
				trace.WithAttributes(AttrQuery.String(f.Query), AttrKey.String(f.Key.String())))
			return context.WithValue(ctx, spanKey{}, span)
		},
		Retry: func(ctx context.Context, f qcache.FetchInfo, err error, delay time.Duration) {
			span, _ := ctx.Value(spanKey{}).(trace.Span)
			if span == nil || !span.IsRecording() {
				return
			}
			span.AddEvent("qcache.retry", trace.WithAttributes(
				AttrAttempt.Int(f.Attempt),
				attribute.String("error.message", err.Error()),
				attribute.Float64("qcache.retry.delay", delay.Seconds()),
			))
		},
		FetchEnd: func(ctx context.Context, r qcache.FetchResult) {
			at := t.attrSet(0, r.Query, int(r.Outcome), func() attribute.Set {
				return attribute.NewSet(AttrQuery.String(r.Query), AttrOutcome.String(r.Outcome.String()))
			})
			t.fetches.Add(ctx, 1, at)
			t.duration.Record(ctx, r.Duration.Seconds(), at)
			span, _ := ctx.Value(spanKey{}).(trace.Span)
			if span == nil {
				return
			}
			if span.IsRecording() {
				span.SetAttributes(AttrAttempts.Int(r.Attempt), AttrOutcome.String(r.Outcome.String()))
				if r.StatusCode != 0 {
					span.SetAttributes(AttrStatusCode.Int(r.StatusCode))
				}
				if r.Outcome == qcache.OutcomeError && r.Err != nil {
					span.RecordError(r.Err)
					span.SetStatus(codes.Error, r.Err.Error())
				}
			}
			span.End()
		},
		Evicted: func(e qcache.EvictInfo) {
			at := t.attrSet(1, e.Query, int(e.Reason), func() attribute.Set {
				return attribute.NewSet(AttrQuery.String(e.Query), AttrReason.String(e.Reason.String()))
			})
			t.evictions.Add(context.Background(), 1, at)
		},
		WSConnected: func(string) {
			ctx := context.Background()
			t.wsConnected.Add(ctx, 1)
			t.wsConnects.Add(ctx, 1)
		},
		WSDropped: func(_ string, err error) {
			ctx := context.Background()
			t.wsConnected.Add(ctx, -1)
			if err != nil {
				t.wsDrops.Add(ctx, 1)
			}
		},
		WSMessage: func(_ string, size int, err error) {
			ctx := context.Background()
			t.wsMessages.Add(ctx, 1)
			t.wsMsgBytes.Add(ctx, int64(size))
			if err != nil {
				t.wsMsgErrors.Add(ctx, 1)
			}
		},
		BusPublished: func(k qcache.EventKind) {
			t.busPublished.Add(context.Background(), 1, metric.WithAttributes(AttrKind.String(kindLabel(k))))
		},
		BusReceived: func(k qcache.EventKind) {
			t.busReceived.Add(context.Background(), 1, metric.WithAttributes(AttrKind.String(kindLabel(k))))
		},
		BusDropped: func(k qcache.EventKind, reason string) {
			t.busDropped.Add(context.Background(), 1, metric.WithAttributes(AttrKind.String(kindLabel(k)), AttrReason.String(reason)))
		},
		BusResync: func() { t.busResyncs.Add(context.Background(), 1) },
	}
}

// attrSet returns the cached measurement option of an event's attributes,
// making it with build the first time.
func (t *Telemetry) attrSet(which int, query string, value int, build func() attribute.Set) metric.MeasurementOption {
	k := attrKey{which, query, value}
	if at, ok := t.attrs.Load(k); ok {
		return at.(metric.MeasurementOption)
	}
	at, _ := t.attrs.LoadOrStore(k, metric.WithAttributeSet(build()))
	return at.(metric.MeasurementOption)
}

// kindLabel is the attribute of an event kind, bounded: a kind that a
// hostile publisher made up is "unknown".
func kindLabel(k qcache.EventKind) string {
	switch k {
	case qcache.EventInvalidate, qcache.EventSetData, qcache.EventRemove:
		return k.String()
	}
	return "unknown"
}
