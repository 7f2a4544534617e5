package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type reqIDKey struct{}

func withReqID(id string) context.Context {
	return context.WithValue(context.Background(), reqIDKey{}, id)
}

func reqID(ctx context.Context) string {
	id, _ := ctx.Value(reqIDKey{}).(string)
	return id
}

func TestFetchCarriesTheStartersValues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var seen []string
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			mu.Lock()
			seen = append(seen, p+"="+reqID(ctx))
			mu.Unlock()
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			return p, nil
		})
		// The starter's values, shared by a joiner with other values.
		var wg sync.WaitGroup
		wg.Go(func() { q.Get(withReqID("first"), "a") })
		synctest.Wait()
		wg.Go(func() { q.Get(withReqID("joiner"), "a") })
		wg.Wait()

		// A starter that leaves does not cancel the fetch others wait for.
		short, cancel := context.WithTimeout(withReqID("short"), 100*time.Millisecond)
		defer cancel()
		wg.Go(func() {
			_, err := q.Get(short, "b")
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
		synctest.Wait()
		var v string
		var err error
		wg.Go(func() { v, err = q.Get(withReqID("stays"), "b") })
		wg.Wait()
		require.NoError(t, err)
		assert.Equal(t, "b", v)

		// Observers' fetches carry the Use context's values; invalidation
		// refetches the invalidating call's.
		ctx, stop := context.WithCancel(withReqID("observer"))
		o := q.Use(ctx, "c")
		time.Sleep(2 * time.Second)
		require.NoError(t, q.Invalidate(withReqID("invalidator"), "c"))
		stop()
		o.Close()

		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"a=first", "b=short", "c=observer", "c=invalidator"}, seen)
	})
}

func TestHTTPRequestCarriesTheStartersValues(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q", r.Header.Get("X-Request-Id"))
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL), WithRequestEditor(func(r *http.Request) error {
		r.Header.Set("X-Request-Id", reqID(r.Context()))
		return nil
	}))
	defer c.Close()
	q := NewQuery[string, string](c, Endpoint{URL: "/x/$id"})
	v, err := q.Get(withReqID("req-42"), "1")
	require.NoError(t, err)
	assert.Equal(t, "req-42", v)
}

// logRecord is one record a recordingHandler kept.
type logRecord struct {
	level slog.Level
	msg   string
	reqID string
}

type recordingHandler struct {
	mu      sync.Mutex
	records []logRecord
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, logRecord{r.Level, r.Message, reqID(ctx)})
	return nil
}

func (h *recordingHandler) find(msg string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range h.records {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

func TestLogLevelsAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &recordingHandler{}
		c := NewClient(WithLogger(slog.New(h)))
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			return "", errors.New("down")
		}, Retry(2), RetryDelay(func(int, error) time.Duration { return time.Second }))
		_, err := q.Get(withReqID("r1"), "a")
		require.Error(t, err)
		failed := h.find("qcache: fetch failed")
		require.Len(t, failed, 1, "a fetch that finally failed is logged once, not per retry")
		assert.Equal(t, slog.LevelWarn, failed[0].level)
		assert.Equal(t, "r1", failed[0].reqID, "logs take the fetch's context")
		retries := h.find("qcache: retrying fetch")
		require.Len(t, retries, 2)
		assert.Equal(t, slog.LevelDebug, retries[0].level)
	})
}

// hookLog records every hook call, and asserts that no hook runs under an
// entry's lock: each one reads the entry's state, which takes that lock.
type hookLog struct {
	mu     sync.Mutex
	events []string
	ends   []FetchResult
}

func (l *hookLog) add(format string, args ...any) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *hookLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *hookLog) hooks(q func() *Query[string, string]) Hooks {
	touch := func(k Key) { q().State(k[len(k)-1]) } // deadlocks if called under the entry's lock
	return Hooks{
		FetchStart: func(ctx context.Context, f FetchInfo) context.Context {
			touch(f.Key)
			l.add("start %s %v", f.Query, f.Key)
			return context.WithValue(ctx, reqIDKey{}, "from-hook")
		},
		FetchEnd: func(ctx context.Context, f FetchResult) {
			touch(f.Key)
			l.add("end %v %s attempts=%d err=%v", f.Key, f.Outcome, f.Attempt, f.Err != nil)
			l.mu.Lock()
			l.ends = append(l.ends, f)
			l.mu.Unlock()
		},
		Retry: func(ctx context.Context, f FetchInfo, err error, d time.Duration) {
			touch(f.Key)
			l.add("retry %v after attempt %d, %v", f.Key, f.Attempt, d)
		},
		Evicted: func(e EvictInfo) {
			touch(e.Key)
			l.add("evicted %v %s", e.Key, e.Reason)
		},
		ObserverAdded:   func(query string, k Key) { touch(k); l.add("observer+ %v", k) },
		ObserverRemoved: func(query string, k Key) { touch(k); l.add("observer- %v", k) },
	}
}

func TestHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log hookLog
		var q *Query[string, string]
		c := NewClient(WithHooks(log.hooks(func() *Query[string, string] { return q })))
		defer c.Close()
		var ctxSeen atomic.Value
		q = NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			ctxSeen.Store(reqID(ctx))
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			switch p {
			case "bad":
				return "", errors.New("down")
			}
			return p, nil
		}, Retry(1), RetryDelay(func(int, error) time.Duration { return time.Second }), GCTime(time.Minute), QueryName("things"))
		ctx := context.Background()

		_, err := q.Get(ctx, "a")
		require.NoError(t, err)
		synctest.Wait() // FetchEnd runs after the fetch has woken its waiters
		assert.Equal(t, "from-hook", ctxSeen.Load(), "the fetch function gets FetchStart's context")
		_, err = q.Get(ctx, "bad")
		require.Error(t, err)
		synctest.Wait()

		go q.Get(ctx, "set") // superseded by the SetData below
		synctest.Wait()
		q.SetData("set", "mine")
		time.Sleep(time.Second)
		synctest.Wait()

		q.Prefetch("gone")
		synctest.Wait()
		c.Cancel(Filter{Key: Key{"k", "gone"}})
		synctest.Wait()

		o := q.Use(ctx, "seen")
		time.Sleep(2 * time.Second)
		o.Close()
		q.Remove("a")
		time.Sleep(2 * time.Minute) // gc takes the rest

		assert.Equal(t, []string{
			"start things k/a", "end k/a success attempts=1 err=false",
			"start things k/bad", "retry k/bad after attempt 1, 1s", "end k/bad error attempts=2 err=true",
			"start things k/set", "end k/set superseded attempts=1 err=false",
			"start things k/gone", "end k/gone cancelled attempts=1 err=true",
			"observer+ k/seen", "start things k/seen", "end k/seen success attempts=1 err=false", "observer- k/seen",
			"evicted k/a remove",
		}, log.list()[:14])
		var gcd []string
		for _, e := range log.list()[14:] {
			gcd = append(gcd, e)
		}
		assert.ElementsMatch(t, []string{"evicted k/bad gc", "evicted k/set gc", "evicted k/gone gc", "evicted k/seen gc"}, gcd)
		for _, e := range log.ends {
			if e.Outcome == OutcomeSuccess {
				assert.Equal(t, time.Second, e.Duration)
			}
		}

		st := q.Stats()
		assert.Equal(t, "things", st.Name)
		assert.Equal(t, uint64(5), st.Fetches)
		assert.Equal(t, uint64(3), st.FetchSuccesses, "a, set (superseded), seen")
		assert.Equal(t, uint64(1), st.FetchErrors)
		assert.Equal(t, uint64(1), st.FetchCancelled)
		assert.Equal(t, uint64(1), st.Retries)
		assert.Equal(t, 0, st.Entries)
		assert.Equal(t, 0, st.InFlight)
		assert.Equal(t, 0, st.Observers)
		assert.Equal(t, []QueryStats{st}, c.QueryStats())
	})
}

func TestHookPanicIsRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &recordingHandler{}
		c := NewClient(WithLogger(slog.New(h)), WithHooks(Hooks{
			FetchStart: func(context.Context, FetchInfo) context.Context { panic("broken hook") },
			FetchEnd:   func(context.Context, FetchResult) { panic("broken hook") },
		}))
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil })
		v, err := q.Get(context.Background(), "a")
		require.NoError(t, err)
		assert.Equal(t, "a", v)
		synctest.Wait() // FetchEnd runs on the fetch's goroutine after Get is answered
		assert.Len(t, h.find("qcache: hook panicked"), 2)
	})
}

func TestFetchEndReportsHTTPStatusAndBytes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/x/missing" {
			http.Error(w, "no such thing", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `"hello"`)
	}))
	defer srv.Close()
	var mu sync.Mutex
	var ends []FetchResult
	c := NewClient(WithBaseURL(srv.URL), WithHooks(Hooks{FetchEnd: func(_ context.Context, f FetchResult) {
		mu.Lock()
		ends = append(ends, f)
		mu.Unlock()
	}}))
	defer c.Close()
	q := NewQuery[string, string](c, Endpoint{URL: "/x/$id"})
	_, err := q.Get(context.Background(), "1")
	require.NoError(t, err)
	_, err = q.Get(context.Background(), "missing")
	require.Error(t, err)
	require.NoError(t, c.Close())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ends, 2)
	// The hooks run on the fetches' goroutines after their callers were
	// answered: in either order.
	slices.SortFunc(ends, func(a, b FetchResult) int { return a.StatusCode - b.StatusCode })
	assert.Equal(t, "GET /x/$id", ends[0].Query)
	assert.Equal(t, 200, ends[0].StatusCode)
	assert.Equal(t, int64(len(`"hello"`)), ends[0].Bytes)
	assert.Equal(t, 404, ends[1].StatusCode)
	assert.Equal(t, OutcomeError, ends[1].Outcome)
}

func TestStatsJSONIsSnakeCase(t *testing.T) {
	b, err := json.Marshal(Stats{FetchSuccesses: 3, OverBound: 1})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"fetch_successes":3`)
	assert.Contains(t, string(b), `"over_bound":1`)
	b, err = json.Marshal(QueryStats{Name: "q", InFlight: 2})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"name":"q"`)
	assert.Contains(t, string(b), `"in_flight":2`)
	b, err = json.Marshal(WSStats{Connects: 1})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"connects":1`)
	b, err = json.Marshal(BusStats{ResyncsPublished: 1})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"resyncs_published":1`)
}

func TestQueryNames(t *testing.T) {
	c := NewClient(WithBaseURL("http://example.invalid"))
	defer c.Close()
	assert.Equal(t, "GET /users/$id", NewQuery[string, string](c, Endpoint{URL: "/users/$id"}).Stats().Name)
	f := func(context.Context, int) (int, error) { return 0, nil }
	assert.Equal(t, "orders", NewQueryFunc(c, Key{"orders"}, f).Stats().Name)
	assert.Equal(t, "mine", NewQueryFunc(c, Key{"orders"}, f, QueryName("mine")).Stats().Name)
}

func TestStatsPerQueryAddUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		f := func(ctx context.Context, p int) (int, error) { return p, nil }
		a := NewQueryFunc(c, Key{"a"}, f, StaleTime(time.Hour))
		b := NewQueryFunc(c, Key{"b"}, f, StaleWhileRevalidate())
		ctx := context.Background()
		for i := range 3 {
			a.Get(ctx, i)
			a.Get(ctx, i)
		}
		b.Get(ctx, 1)
		synctest.Wait()
		b.Get(ctx, 1) // stale: answered at once, refetched
		synctest.Wait()
		sa, sb, sc := a.Stats(), b.Stats(), c.Stats()
		assert.Equal(t, uint64(3), sa.Hits)
		assert.Equal(t, uint64(3), sa.Misses)
		assert.Equal(t, uint64(1), sb.Hits)
		assert.Equal(t, uint64(1), sb.StaleServed)
		assert.Equal(t, uint64(2), sb.Fetches)
		assert.Equal(t, sa.Hits+sb.Hits, sc.Hits)
		assert.Equal(t, sa.Misses+sb.Misses, sc.Misses)
		assert.Equal(t, sa.Fetches+sb.Fetches, sc.Fetches)
		assert.Equal(t, sa.Entries+sb.Entries, sc.Entries)
		assert.Equal(t, uint64(1), sc.StaleServed)
	})
}
