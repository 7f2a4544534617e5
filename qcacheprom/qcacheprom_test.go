package qcacheprom_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheprom"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape is what one scrape of a handler returned, parsed by expfmt.
type scrape map[string]*dto.MetricFamily

// parse reads the text exposition format, as Prometheus does.
func parse(t *testing.T, body string) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err, body)
	return fams
}

// scrapeHandler runs one scrape of promhttp.HandlerFor(reg) through an
// httptest recorder: no network, so that it works in a synctest bubble.
func scrapeHandler(t *testing.T, reg *prometheus.Registry) scrape {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain"), rec.Header().Get("Content-Type"))
	return parse(t, rec.Body.String())
}

// metric returns the series of family name whose labels are exactly labels
// ("k=v" pairs), or nil.
func (s scrape) metric(name string, labels ...string) *dto.Metric {
	f := s[name]
	if f == nil {
		return nil
	}
	sort.Strings(labels)
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(got)
		if strings.Join(got, ",") == strings.Join(labels, ",") {
			return m
		}
	}
	return nil
}

// value returns the value of a counter or gauge series, failing the test
// when there is no such series.
func (s scrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := s.metric(name, labels...)
	require.NotNil(t, m, "no series %s%v in the scrape", name, labels)
	switch s[name].GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	require.FailNowf(t, "not a counter or a gauge", "%s is a %v", name, s[name].GetType())
	return 0
}

// histogram returns count, sum and the cumulative bucket counts ("le=count")
// of a histogram series.
func (s scrape) histogram(t *testing.T, name string, labels ...string) (uint64, float64, []string) {
	t.Helper()
	m := s.metric(name, labels...)
	require.NotNil(t, m, "no series %s%v in the scrape", name, labels)
	h := m.GetHistogram()
	var buckets []string
	for _, b := range h.GetBucket() {
		buckets = append(buckets, fmt.Sprintf("%g=%d", b.GetUpperBound(), b.GetCumulativeCount()))
	}
	return h.GetSampleCount(), h.GetSampleSum(), buckets
}

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

// TestScrapeCounts drives two clients in virtual time through every fetch
// outcome, every eviction reason, retries, shared fetches, an observer and
// a fetch in flight, and checks the exact value of every series that a real
// scrape of promhttp's handler returns.
func TestScrapeCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		metrics := qcacheprom.New(qcacheprom.Buckets(0.5, 1, 2, 5))
		reg.MustRegister(metrics)

		things := func(ctx context.Context, p string) (string, error) {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			if p == "bad" {
				return "", errors.New("down")
			}
			return p, nil
		}
		opts := []qcache.QueryOption{qcache.StaleTime(time.Hour), qcache.GCTime(time.Minute),
			qcache.Retry(1), qcache.RetryDelay(func(int, error) time.Duration { return time.Second })}

		c1 := qcache.NewClient(qcache.WithHooks(metrics.Hooks()))
		defer c1.Close()
		metrics.Watch(c1)
		q1 := qcache.NewQueryFunc(c1, qcache.Key{"things"}, things, opts...)
		users := qcache.NewQueryFunc(c1, qcache.Key{"users"}, func(ctx context.Context, p string) (string, error) {
			d := 2 * time.Second
			if p == "slow" {
				d = time.Hour
			}
			return p, sleepCtx(ctx, d)
		}, qcache.StaleTime(time.Hour))

		// A second client whose query has the same name: their series add up.
		c2 := qcache.NewClient(qcache.WithHooks(metrics.Hooks()), qcache.WithMaxEntries(1))
		defer c2.Close()
		metrics.Watch(c2)
		metrics.Watch(c2) // once is enough
		q2 := qcache.NewQueryFunc(c2, qcache.Key{"things"}, things, opts...)

		ctx := context.Background()
		get := func(q *qcache.Query[string, string], p string) {
			_, _ = q.Get(ctx, p)
		}
		get(q1, "a")   // miss, success in 1 s
		get(q1, "a")   // hit
		get(q1, "a")   // hit
		get(q1, "bad") // miss, 1 s, retry after 1 s, 1 s: error in 3 s
		var wg sync.WaitGroup
		wg.Go(func() { get(q1, "b") }) // miss, success in 1 s
		synctest.Wait()
		wg.Go(func() { get(q1, "b") }) // miss, shares the fetch
		wg.Wait()
		wg.Go(func() { get(q1, "s") }) // miss, superseded by SetData
		synctest.Wait()
		q1.SetData("s", "mine")
		wg.Wait()
		q1.Prefetch("gone") // cancelled at once
		synctest.Wait()
		c1.Cancel(qcache.Filter{Key: qcache.Key{"things", "gone"}})
		synctest.Wait()
		q1.Remove("a")              // evicted: remove
		time.Sleep(2 * time.Minute) // evicted by gc: bad, b, s, gone
		get(q1, "a")                // miss, success in 1 s

		get(q2, "x") // miss, success in 1 s
		get(q2, "y") // miss, success in 1 s; x evicted: max_entries
		synctest.Wait()

		obs, stop := context.WithCancel(ctx)
		defer stop()
		o := users.Use(obs, "me") // an observer; fetch in 2 s
		defer o.Close()
		time.Sleep(3 * time.Second)
		users.Prefetch("slow") // in flight at the scrape
		synctest.Wait()

		s := scrapeHandler(t, reg)
		th, us := "query=things", "query=users"
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"qcache_hits_total", []string{th}, 2},
			{"qcache_misses_total", []string{th}, 8},
			{"qcache_stale_served_total", []string{th}, 0},
			{"qcache_retries_total", []string{th}, 1},
			{"qcache_deduplicated_total", []string{th}, 1},
			{"qcache_entries", []string{th}, 2},
			{"qcache_observers", []string{th}, 0},
			{"qcache_fetches_in_flight", []string{th}, 0},
			{"qcache_fetches_total", []string{th, "outcome=success"}, 5},
			{"qcache_fetches_total", []string{th, "outcome=error"}, 1},
			{"qcache_fetches_total", []string{th, "outcome=superseded"}, 1},
			{"qcache_fetches_total", []string{th, "outcome=cancelled"}, 1},
			{"qcache_evictions_total", []string{th, "reason=remove"}, 1},
			{"qcache_evictions_total", []string{th, "reason=gc"}, 4},
			{"qcache_evictions_total", []string{th, "reason=max_entries"}, 1},

			{"qcache_hits_total", []string{us}, 0},
			{"qcache_misses_total", []string{us}, 0},
			{"qcache_entries", []string{us}, 2},
			{"qcache_observers", []string{us}, 1},
			{"qcache_fetches_in_flight", []string{us}, 1},
			{"qcache_fetches_total", []string{us, "outcome=success"}, 1},

			{"qcache_ws_connected", nil, 0},
			{"qcache_ws_connects_total", nil, 0},
			{"qcache_bus_resyncs_total", nil, 0},
		} {
			assert.Equal(t, c.want, s.value(t, c.name, c.labels...), "%s%v", c.name, c.labels)
		}
		assert.Len(t, s["qcache_fetches_total"].GetMetric(), 5, "no other series")
		assert.Len(t, s["qcache_evictions_total"].GetMetric(), 3, "no other series")
		assert.Nil(t, s["qcache_bus_published_total"], "no series before the first event")

		n, sum, buckets := s.histogram(t, "qcache_fetch_duration_seconds", th, "outcome=success")
		assert.Equal(t, uint64(5), n)
		assert.Equal(t, 5.0, sum)
		assert.Equal(t, []string{"0.5=0", "1=5", "2=5", "5=5", "+Inf=5"}, buckets)
		n, sum, buckets = s.histogram(t, "qcache_fetch_duration_seconds", th, "outcome=error")
		assert.Equal(t, uint64(1), n)
		assert.Equal(t, 3.0, sum)
		assert.Equal(t, []string{"0.5=0", "1=0", "2=0", "5=1", "+Inf=1"}, buckets)
		n, sum, _ = s.histogram(t, "qcache_fetch_duration_seconds", th, "outcome=cancelled")
		assert.Equal(t, uint64(1), n)
		assert.Equal(t, 0.0, sum)
		_, sum, buckets = s.histogram(t, "qcache_fetch_duration_seconds", us, "outcome=success")
		assert.Equal(t, 2.0, sum)
		assert.Equal(t, []string{"0.5=0", "1=0", "2=1", "5=1", "+Inf=1"}, buckets)

		// Unwatch takes a client's counters out of the sums.
		metrics.Unwatch(c2)
		s = scrapeHandler(t, reg)
		assert.Equal(t, 6.0, s.value(t, "qcache_misses_total", th))
		assert.Equal(t, 1.0, s.value(t, "qcache_entries", th))
	})
}

// TestScrapeOverHTTP drives a client over real HTTP and WebSocket servers
// on loopback and a bus to a second client, and scrapes the registry over
// HTTP, as Prometheus does.
func TestScrapeOverHTTP(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/users/404" {
			http.Error(w, "no such user", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `"ann"`)
	}))
	defer api.Close()
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := conn.CloseRead(r.Context())
		for _, msg := range []string{"hello", "bad", "world"} {
			if conn.Write(ctx, websocket.MessageText, []byte(msg)) != nil {
				return
			}
		}
		<-ctx.Done()
	}))
	defer ws.Close()

	reg := prometheus.NewRegistry()
	metrics := qcacheprom.New()
	reg.MustRegister(metrics)
	// Hooks joined after the collector's tell the test when it has counted.
	fetched, messages, published, received := make(chan struct{}, 10), make(chan struct{}, 10), make(chan struct{}, 10), make(chan struct{}, 10)
	signal := func(ch chan struct{}) { ch <- struct{}{} }
	bus := &qcache.MemoryBus{}
	c1 := qcache.NewClient(qcache.WithBaseURL(api.URL), qcache.WithBus(bus), qcache.WithHooks(qcache.JoinHooks(
		metrics.Hooks(),
		qcache.Hooks{
			FetchEnd:     func(context.Context, qcache.FetchResult) { signal(fetched) },
			WSMessage:    func(string, int, error) { signal(messages) },
			BusPublished: func(qcache.EventKind) { signal(published) },
		},
	)))
	defer c1.Close()
	c2 := qcache.NewClient(qcache.WithBus(bus), qcache.WithHooks(qcache.JoinHooks(
		metrics.Hooks(),
		qcache.Hooks{BusReceived: func(qcache.EventKind) { signal(received) }},
	)))
	defer c2.Close()
	metrics.Watch(c1)
	metrics.Watch(c2)
	wait := func(ch chan struct{}, n int) {
		t.Helper()
		for range n {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				require.FailNow(t, "timed out waiting for a hook")
			}
		}
	}

	users := qcache.NewQuery[string, string](c1, qcache.Endpoint{URL: "/users/$id"}, qcache.Retry(0), qcache.StaleTime(time.Hour))
	ctx := t.Context()
	_, err := users.Get(ctx, "1")
	require.NoError(t, err)
	_, err = users.Get(ctx, "404")
	require.Error(t, err)
	_, err = users.Get(ctx, "1") // a hit
	require.NoError(t, err)
	wait(fetched, 2)

	stream := c1.SubscribeWS(ctx, ws.URL, func(_ context.Context, msg []byte) error {
		if string(msg) == "bad" {
			return errors.New("bad message")
		}
		return nil
	})
	defer stream.Close()
	wait(messages, 3)

	// An event reaches only the subscriptions made before it was published.
	require.Eventually(t, func() bool { return c2.BusStats().Subscribes == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, c1.Invalidate(ctx, qcache.Filter{}))
	wait(published, 1)
	wait(received, 1)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	get := func() scrape {
		t.Helper()
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return parse(t, string(body))
	}
	s := get()
	q := "query=GET /users/$id"
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"qcache_hits_total", []string{q}, 1},
		{"qcache_misses_total", []string{q}, 2},
		{"qcache_entries", []string{q}, 2},
		{"qcache_fetches_total", []string{q, "outcome=success"}, 1},
		{"qcache_fetches_total", []string{q, "outcome=error"}, 1},
		{"qcache_ws_connected", nil, 1},
		{"qcache_ws_connects_total", nil, 1},
		{"qcache_ws_drops_total", nil, 0},
		{"qcache_ws_messages_total", nil, 3},
		{"qcache_ws_message_errors_total", nil, 1},
		{"qcache_ws_message_bytes_total", nil, float64(len("hello") + len("bad") + len("world"))},
		{"qcache_bus_published_total", []string{"kind=invalidate"}, 1},
		{"qcache_bus_received_total", []string{"kind=invalidate"}, 1},
	} {
		assert.Equal(t, c.want, s.value(t, c.name, c.labels...), "%s%v", c.name, c.labels)
	}
	n, _, _ := s.histogram(t, "qcache_fetch_duration_seconds", q, "outcome=success")
	assert.Equal(t, uint64(1), n)

	// A stream closed on purpose is not a drop.
	require.NoError(t, stream.Close())
	<-stream.Done()
	s = get()
	assert.Equal(t, 0.0, s.value(t, "qcache_ws_connected"))
	assert.Equal(t, 0.0, s.value(t, "qcache_ws_drops_total"))
}

// TestEventsHardToCause covers the hooks that a test cannot easily make the
// client call (a bus that loses events, a made-up event kind), and
// ConstLabels.
func TestEventsHardToCause(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics := qcacheprom.New(qcacheprom.ConstLabels(prometheus.Labels{"client": "billing"}))
	reg.MustRegister(metrics)
	h := metrics.Hooks()
	h.BusDropped(qcache.EventSetData, "queue full")
	h.BusDropped(qcache.EventSetData, "queue full")
	h.BusDropped(qcache.EventKind(42), "invalid")
	h.BusResync()
	h.WSConnected("ws://x")
	h.WSDropped("ws://x", errors.New("reset"))
	h.WSConnected("ws://x")

	s := scrapeHandler(t, reg)
	cl := "client=billing"
	assert.Equal(t, 2.0, s.value(t, "qcache_bus_dropped_total", cl, "kind=setData", "reason=queue full"))
	assert.Equal(t, 1.0, s.value(t, "qcache_bus_dropped_total", cl, "kind=unknown", "reason=invalid"))
	assert.Equal(t, 1.0, s.value(t, "qcache_bus_resyncs_total", cl))
	assert.Equal(t, 1.0, s.value(t, "qcache_ws_connected", cl))
	assert.Equal(t, 2.0, s.value(t, "qcache_ws_connects_total", cl))
	assert.Equal(t, 1.0, s.value(t, "qcache_ws_drops_total", cl))
}
