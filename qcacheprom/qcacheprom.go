package qcacheprom

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/querystats"
)

// Collector is a prometheus.Collector of qcache metrics. Its Hooks count
// events (fetches by outcome and their durations, evictions, WebSocket and
// bus events) as they happen; the per-query counters and gauges that the
// clients keep themselves (hits, misses, entries, …) are read from the
// clients given to Watch at each scrape. Register it once; one Collector
// serves any number of clients, whose series with the same query name add
// up.
type Collector struct {
	mu      sync.Mutex
	clients []*qcache.Client

	fetches   *prometheus.CounterVec
	durations *prometheus.HistogramVec
	evictions *prometheus.CounterVec

	wsUp         atomic.Int64
	wsConnected  *prometheus.Desc
	wsConnects   prometheus.Counter
	wsDrops      prometheus.Counter
	wsMessages   prometheus.Counter
	wsMsgErrors  prometheus.Counter
	wsMsgBytes   prometheus.Counter
	busPublished *prometheus.CounterVec
	busReceived  *prometheus.CounterVec
	busDropped   *prometheus.CounterVec
	busResyncs   prometheus.Counter
	perQuery     []queryMetric
	vecs         []prometheus.Collector
}

// queryMetric is a series per query read from qcache.QueryStats.
type queryMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(s *qcache.QueryStats) float64
}

// Option configures a Collector.
type Option func(*config)

type config struct {
	buckets     []float64
	constLabels prometheus.Labels
}

// Buckets sets the upper bounds, in seconds, of the buckets of
// qcache_fetch_duration_seconds. The default is prometheus.DefBuckets
// (5 ms … 10 s).
func Buckets(b ...float64) Option {
	return func(c *config) { c.buckets = slices.Clone(b) }
}

// ConstLabels adds labels with fixed values to every metric, to tell apart
// the clients of several Collectors registered in one registry (for
// example {"client": "billing"}).
func ConstLabels(l prometheus.Labels) Option {
	return func(c *config) { c.constLabels = l }
}

// New returns a Collector that watches no client yet. It does not register
// it: pass it to a prometheus.Registerer.
func New(opts ...Option) *Collector {
	cfg := config{buckets: prometheus.DefBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	cl := cfg.constLabels
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cl})
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cl}, labels)
	}
	m := &Collector{
		fetches: counterVec("qcache_fetches_total", "Fetches that ended, by query and outcome (success, error, cancelled, superseded).", "query", "outcome"),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "qcache_fetch_duration_seconds",
			Help:        "Duration of fetches that ended, retries and their waits included, by query and outcome.",
			Buckets:     cfg.buckets,
			ConstLabels: cl,
		}, []string{"query", "outcome"}),
		evictions:    counterVec("qcache_evictions_total", "Entries that left the cache, by query and reason (gc, max_entries, remove).", "query", "reason"),
		wsConnected:  prometheus.NewDesc("qcache_ws_connected", "WebSocket links up now.", nil, cl),
		wsConnects:   counter("qcache_ws_connects_total", "WebSocket links that came up (first connections and reconnections)."),
		wsDrops:      counter("qcache_ws_drops_total", "WebSocket links that went down other than by Close."),
		wsMessages:   counter("qcache_ws_messages_total", "WebSocket messages handed to their handler."),
		wsMsgErrors:  counter("qcache_ws_message_errors_total", "WebSocket messages whose handler returned an error."),
		wsMsgBytes:   counter("qcache_ws_message_bytes_total", "Bytes of the WebSocket messages handed to their handler."),
		busPublished: counterVec("qcache_bus_published_total", "Events sent to the other replicas, by kind.", "kind"),
		busReceived:  counterVec("qcache_bus_received_total", "Events taken from the other replicas, by kind.", "kind"),
		busDropped:   counterVec("qcache_bus_dropped_total", "Events not sent or not applied, by kind and reason.", "kind", "reason"),
		busResyncs:   counter("qcache_bus_resyncs_total", "Times every local entry was invalidated because bus events were lost."),
	}
	m.vecs = []prometheus.Collector{m.fetches, m.durations, m.evictions, m.wsConnects, m.wsDrops,
		m.wsMessages, m.wsMsgErrors, m.wsMsgBytes, m.busPublished, m.busReceived, m.busDropped, m.busResyncs}
	perQuery := func(name, help string, typ prometheus.ValueType, value func(s *qcache.QueryStats) float64) queryMetric {
		return queryMetric{prometheus.NewDesc(name, help, []string{"query"}, cl), typ, value}
	}
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	m.perQuery = []queryMetric{
		perQuery("qcache_hits_total", "Get calls answered from memory.", c, func(s *qcache.QueryStats) float64 { return float64(s.Hits) }),
		perQuery("qcache_misses_total", "Get calls that waited for a fetch.", c, func(s *qcache.QueryStats) float64 { return float64(s.Misses) }),
		perQuery("qcache_stale_served_total", "Get calls answered with stale data (StaleWhileRevalidate).", c, func(s *qcache.QueryStats) float64 { return float64(s.StaleServed) }),
		perQuery("qcache_retries_total", "Fetch attempts that failed and were retried.", c, func(s *qcache.QueryStats) float64 { return float64(s.Retries) }),
		perQuery("qcache_deduplicated_total", "Callers that joined a fetch in flight instead of starting one.", c, func(s *qcache.QueryStats) float64 { return float64(s.Deduplicated) }),
		perQuery("qcache_entries", "Entries cached now.", g, func(s *qcache.QueryStats) float64 { return float64(s.Entries) }),
		perQuery("qcache_observers", "Observers (Use) running now.", g, func(s *qcache.QueryStats) float64 { return float64(s.Observers) }),
		perQuery("qcache_fetches_in_flight", "Fetches started and not settled now.", g, func(s *qcache.QueryStats) float64 { return float64(s.InFlight) }),
	}
	return m
}

// Watch adds c to the clients whose per-query counters and gauges the
// Collector reads at each scrape. It does not install the Collector's
// Hooks: give them to qcache.NewClient with qcache.WithHooks. A closed
// client is still read (its counters frozen, its gauges at zero) until
// Unwatch.
func (m *Collector) Watch(c *qcache.Client) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.clients, c) {
		m.clients = append(m.clients, c)
	}
}

// Unwatch removes c from the clients read at each scrape. Its counters
// leave the sums, which Prometheus's rate() takes as a counter reset.
func (m *Collector) Unwatch(c *qcache.Client) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clients = slices.DeleteFunc(m.clients, func(x *qcache.Client) bool { return x == c })
}

// Hooks returns the hooks that count the Collector's events; install them
// with qcache.WithHooks (qcache.JoinHooks to combine them with others). They
// take no lock of the Collector's.
func (m *Collector) Hooks() qcache.Hooks {
	return qcache.Hooks{
		FetchEnd: func(_ context.Context, r qcache.FetchResult) {
			outcome := r.Outcome.String()
			m.fetches.WithLabelValues(r.Query, outcome).Inc()
			m.durations.WithLabelValues(r.Query, outcome).Observe(r.Duration.Seconds())
		},
		Evicted: func(e qcache.EvictInfo) {
			m.evictions.WithLabelValues(e.Query, e.Reason.String()).Inc()
		},
		WSConnected: func(string) {
			m.wsUp.Add(1)
			m.wsConnects.Inc()
		},
		WSDropped: func(_ string, err error) {
			m.wsUp.Add(-1)
			if err != nil {
				m.wsDrops.Inc()
			}
		},
		WSMessage: func(_ string, size int, err error) {
			m.wsMessages.Inc()
			m.wsMsgBytes.Add(float64(size))
			if err != nil {
				m.wsMsgErrors.Inc()
			}
		},
		BusPublished: func(k qcache.EventKind) { m.busPublished.WithLabelValues(kindLabel(k)).Inc() },
		BusReceived:  func(k qcache.EventKind) { m.busReceived.WithLabelValues(kindLabel(k)).Inc() },
		BusDropped: func(k qcache.EventKind, reason string) {
			m.busDropped.WithLabelValues(kindLabel(k), reason).Inc()
		},
		BusResync: func() { m.busResyncs.Inc() },
	}
}

// kindLabel is the label of an event kind, bounded: a kind that a hostile
// publisher made up is "unknown".
func kindLabel(k qcache.EventKind) string {
	switch k {
	case qcache.EventInvalidate, qcache.EventSetData, qcache.EventRemove:
		return k.String()
	}
	return "unknown"
}

// Describe sends the descriptors of every metric of the Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range m.vecs {
		v.Describe(ch)
	}
	ch <- m.wsConnected
	for _, q := range m.perQuery {
		ch <- q.desc
	}
}

// Collect sends the current value of every metric: the events counted by
// the hooks, and the per-query counters and gauges of the watched clients,
// read now and added up by query name.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range m.vecs {
		v.Collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(m.wsConnected, prometheus.GaugeValue, float64(m.wsUp.Load()))

	m.mu.Lock()
	clients := slices.Clone(m.clients)
	m.mu.Unlock()
	names, sums := querystats.ByName(clients)
	for _, q := range m.perQuery {
		for _, name := range names {
			ch <- prometheus.MustNewConstMetric(q.desc, q.typ, q.value(sums[name]), name)
		}
	}
}
