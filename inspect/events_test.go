package inspect

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// streamRecorder is a ResponseWriter that keeps what an event stream
// wrote, for reading while the stream goes on.
type streamRecorder struct {
	mu     sync.Mutex
	header http.Header
	buf    strings.Builder
	read   int
}

func (s *streamRecorder) Header() http.Header { return s.header }
func (s *streamRecorder) WriteHeader(int)     {}
func (s *streamRecorder) Flush()              {}
func (s *streamRecorder) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(b)
}

type event struct {
	name string
	data string
}

// next returns the events written since the last call.
func (s *streamRecorder) next() []event {
	s.mu.Lock()
	text := s.buf.String()[s.read:]
	s.read += len(text)
	s.mu.Unlock()
	var out []event
	var ev event
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		case line == "" && ev.name != "":
			out = append(out, ev)
			ev = event{}
		}
	}
	return out
}

func named(evs []event, name string) []event {
	var out []event
	for _, e := range evs {
		if e.name == name {
			out = append(out, e)
		}
	}
	return out
}

// openStream serves GET /events?query on h in a goroutine of the bubble;
// stop ends the request and waits for the handler to return.
func openStream(h http.Handler, query string) (rec *streamRecorder, stop func()) {
	rec = &streamRecorder{header: http.Header{}}
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/events?"+query, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	return rec, func() { cancel(); <-done } // idempotent
}

func TestEventsFollowTheCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := qcache.NewClient()
		defer c.Close()
		q := qcache.NewQueryFunc(c, qcache.Key{"users"}, func(ctx context.Context, id string) (string, error) {
			return "fetched " + id, nil
		}, qcache.StaleTime(time.Minute))
		for _, id := range []string{"1", "2", "3"} {
			q.SetData(id, "v"+id)
		}
		h := Handler(c, UpdateInterval(200*time.Millisecond))
		rec, stop := openStream(h, "prefix=users/&limit=2")
		defer stop()
		synctest.Wait()

		evs := rec.next()
		require.Len(t, named(evs, "page"), 1)
		var p Page
		require.NoError(t, json.Unmarshal([]byte(named(evs, "page")[0].data), &p))
		assert.Equal(t, []string{"users/1", "users/2"}, keysOf(p.Rows))
		assert.Equal(t, 3, p.Total)
		require.Len(t, named(evs, "stats"), 1)

		// A change of a row on the page: that row alone, within an interval.
		q.SetData("2", "changed")
		q.SetData("2", "changed again") // coalesced with the one before
		q.SetData("3", "not on the page")
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		evs = rec.next()
		assert.Empty(t, named(evs, "page"))
		rows := named(evs, "rows")
		require.Len(t, rows, 1)
		var changed struct{ Rows []Row }
		require.NoError(t, json.Unmarshal([]byte(rows[0].data), &changed))
		require.Len(t, changed.Rows, 1)
		assert.Equal(t, "users/2", changed.Rows[0].KeyText)
		assert.Equal(t, len(`"changed again"`), changed.Rows[0].DataSize)

		// Nothing changed: no rows sent; once the rate of changes is
		// down to 0, nothing at all.
		time.Sleep(time.Second)
		synctest.Wait()
		evs = rec.next()
		assert.Empty(t, named(evs, "rows"))
		assert.Empty(t, named(evs, "page"))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		rec.next()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Empty(t, rec.next())

		// An entry came: the page again, at most a second after the last.
		q.SetData("0", "first now")
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		evs = rec.next()
		require.Len(t, named(evs, "page"), 1)
		require.NoError(t, json.Unmarshal([]byte(named(evs, "page")[0].data), &p))
		assert.Equal(t, []string{"users/0", "users/1"}, keysOf(p.Rows))
		assert.Equal(t, 4, p.Total)

		// History is kept while the page is open, and no more after it.
		d := detail(t, h, "users/2")
		assert.True(t, d.HistoryKept)
		assert.Equal(t, []string{"data set", "data set"}, changeEvents(d.History))
		stop()
		assert.False(t, detail(t, h, "users/2").HistoryKept)
	})
}

func TestEventsBatchesAndEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := qcache.NewClient()
		defer c.Close()
		q := qcache.NewQueryFunc(c, qcache.Key{"k"}, func(ctx context.Context, id int) (int, error) { return id, nil },
			qcache.StaleTime(time.Minute))
		q.SetData(1, 0)
		h := Handler(c, UpdateInterval(250*time.Millisecond))
		rec, stop := openStream(h, "")
		defer stop()
		synctest.Wait()
		rec.next()
		// A thousand changes within one interval are one event.
		for i := range 1000 {
			q.SetData(1, i)
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		evs := rec.next()
		assert.LessOrEqual(t, len(named(evs, "rows")), 2, "batched per interval")
		var st struct {
			Changes uint64 `json:"changes"`
		}
		stats := named(evs, "stats")
		require.NotEmpty(t, stats)
		require.NoError(t, json.Unmarshal([]byte(stats[len(stats)-1].data), &st))
		assert.Equal(t, uint64(1000), st.Changes)
		stop() // the handler returned: goleak checks that nothing is left
	})
}

func TestEventsBadRequest(t *testing.T) {
	c := qcache.NewClient()
	defer c.Close()
	rr := httptest.NewRecorder()
	Handler(c).ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/events?limit=5000", nil))
	assert.Equal(t, http.StatusBadRequest, rr.Code)
}

func detail(t *testing.T, h http.Handler, id string) Detail {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/entries/"+id, nil))
	require.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	var d Detail
	require.NoError(t, json.Unmarshal(rr.Body.Bytes(), &d))
	return d
}

func changeEvents(h []Change) []string {
	out := make([]string, len(h))
	for i, c := range h {
		out[i] = c.Event
	}
	return out
}
