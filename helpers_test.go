package qcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/qcache-go/qcache/internal/wait"
	"github.com/stretchr/testify/require"
)

// source is a fake upstream for NewQueryFunc: it records when each call
// started (virtual time since the test began) and answers through fn.
type source struct {
	t0    time.Time
	mu    sync.Mutex
	calls []time.Duration
	fn    func(ctx context.Context, n int, p string) (string, error)
}

func newSource(fn func(ctx context.Context, n int, p string) (string, error)) *source {
	return &source{t0: time.Now(), fn: fn}
}

func (s *source) fetch(ctx context.Context, p string) (string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, time.Since(s.t0))
	n := len(s.calls)
	s.mu.Unlock()
	return s.fn(ctx, n, p)
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *source) starts() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.calls...)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if !wait.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// slowValue answers "v<n>:<p>" after d.
func slowValue(d time.Duration) func(ctx context.Context, n int, p string) (string, error) {
	return func(ctx context.Context, n int, p string) (string, error) {
		if err := sleepCtx(ctx, d); err != nil {
			return "", err
		}
		return value(n, p), nil
	}
}

func value(n int, p string) string { return "v" + itoa(n) + ":" + p }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func secs(ss ...float64) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = time.Duration(s * float64(time.Second))
	}
	return out
}

// newFuncQuery returns a client and a query over src, closed when t ends.
func newFuncQuery(t *testing.T, src *source, opts ...QueryOption) (*Client, *Query[string, string]) {
	t.Helper()
	c := NewClient()
	t.Cleanup(func() { c.Close() })
	return c, NewQueryFunc(c, Key{"items"}, src.fetch, opts...)
}

// ---------- Guards and observers ----------

// noHang runs f and fails the test if it has not returned within a minute
// of real time: the guard of tests whose failure mode is a livelock, which
// virtual time cannot see.
func noHang(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		require.FailNowf(t, "hang", "%s did not return; goroutines:\n%s", what, buf)
	}
}

// collected holds every state an observer delivered (collectStates).
type collected[T any] struct {
	mu     sync.Mutex
	states []State[T]
	done   chan struct{}
}

// collectStates reads every state o delivers until it ends.
func collectStates[T any](o *Observer[T]) *collected[T] {
	c := &collected[T]{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for s := range o.Changes() {
			c.mu.Lock()
			c.states = append(c.states, s)
			c.mu.Unlock()
		}
	}()
	return c
}

// received returns the states c has read so far, once the bubble is idle.
func (c *collected[T]) received() []State[T] {
	synctest.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]State[T](nil), c.states...)
}

// ---------- The GC queue ----------

// fakeGC is a gcTarget that only records its place and the deadlines it
// was told of.
type fakeGC struct {
	pos int32
	due []time.Duration
}

func (f *fakeGC) gcPos() *int32          { return &f.pos }
func (f *fakeGC) gcDue(at time.Duration) { f.due = append(f.due, at) }

// checkGCQueue reports whether every queued item knows its heap index, the
// heap is ordered, and every target outside the queue has no place.
func checkGCQueue(g *gcQueue, all []*fakeGC) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	queued := map[gcTarget]bool{}
	for i, it := range g.items {
		f := it.e
		if pos := *f.gcPos(); pos != int32(i+1) {
			return fmt.Errorf("item %d has place %d", i, pos)
		}
		if queued[f] {
			return fmt.Errorf("item %d is queued twice", i)
		}
		queued[f] = true
		if i > 0 && it.at < g.items[(i-1)/2].at {
			return fmt.Errorf("heap order broken at %d", i)
		}
	}
	for i, f := range all { // nil: only the queued items are checked
		if !queued[f] && f.pos != 0 {
			return fmt.Errorf("target %d is not queued but has place %d", i, f.pos)
		}
	}
	return nil
}

// ---------- HTTP: a loopback API, credentials, a log that catches them ----------

// user is the JSON resource of the HTTP tests.
type user struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (u user) Validate() error {
	if u.ID == "" {
		return errors.New("user without id")
	}
	return nil
}

// api is a loopback server that records the raw request line and answers
// with handler.
type api struct {
	*httptest.Server
	hits    atomic.Int32
	lastRaw atomic.Value // string: the request URI as sent
	lastHdr atomic.Value // http.Header
}

// newAPI starts an api answering with handler, closed when t ends.
func newAPI(t *testing.T, handler http.HandlerFunc) *api {
	t.Helper()
	a := &api{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		a.lastRaw.Store(r.RequestURI)
		a.lastHdr.Store(r.Header.Clone())
		handler(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

// newHTTPClient returns a client of a, based at /v1/, closed when t ends.
func newHTTPClient(t *testing.T, a *api, opts ...ClientOption) *Client {
	t.Helper()
	c := NewClient(append([]ClientOption{WithBaseURL(a.URL + "/v1/")}, opts...)...)
	t.Cleanup(func() { c.Close() })
	return c
}

// Credentials that must never reach a log, an error or another host.
const (
	secAPIKey = "k-5ecret-api-key"
	secBearer = "t-5ecret-bearer"
	secSig    = "s-5ecret-signature"
	secTenant = "x-5ecret-tenant"
)

// secCredentialOptions send the secret credentials with every request.
func secCredentialOptions() []ClientOption {
	return []ClientOption{
		WithHeader("X-Api-Key", secAPIKey),
		WithRequestEditor(func(r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+secBearer)
			r.Header.Set("X-Signature", secSig)
			return nil
		}),
	}
}

// secretLog is a slog handler at Debug level that counts records and keeps
// every one that holds a secret.
type secretLog struct {
	secrets []string
	mu      sync.Mutex
	records int
	leaks   []string
	byMsg   map[string]int
}

func (l *secretLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Write receives one formatted record per call (slog's text handler).
func (l *secretLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records++
	if l.byMsg == nil {
		l.byMsg = map[string]int{}
	}
	if i := bytes.Index(p, []byte(`msg="`)); i >= 0 {
		rest := p[i+5:]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			l.byMsg[string(rest[:j])]++
		}
	}
	for _, s := range l.secrets {
		if bytes.Contains(p, []byte(s)) {
			l.leaks = append(l.leaks, string(p))
		}
	}
	return len(p), nil
}

// result returns the number of records and those that hold a secret.
func (l *secretLog) result() (records int, leaks []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.records, append([]string(nil), l.leaks...)
}

// count returns the number of records with message msg.
func (l *secretLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byMsg[msg]
}

// relReset closes conn with a TCP reset rather than a FIN.
func relReset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// ---------- Replication ----------

// replica is one client of a bus test (in a synctest bubble), with its own upstream and query.
type replica struct {
	c   *Client
	src *source
	q   *Query[string, string]
}

// newReplica returns a replica named name on bus b, subscribed already.
func newReplica(t *testing.T, b Bus, name string, opts ...BusOption) *replica {
	t.Helper()
	src := newSource(func(ctx context.Context, n int, p string) (string, error) { return name + value(n, p), nil })
	c := NewClient(WithBus(b, append([]BusOption{BusOrigin(name)}, opts...)...))
	t.Cleanup(func() { c.Close() })
	synctest.Wait() // subscribed: pub/sub does not deliver what was published before
	return &replica{c: c, src: src, q: NewQueryFunc(c, Key{"items"}, src.fetch, StaleTime(time.Hour))}
}

// ---------- WebSocket ----------

// wsUser is what the WebSocket tests push.
type wsUser struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// wsUserHandler stores each pushed wsUser in q under its ID.
func wsUserHandler(q *Query[string, wsUser]) MessageHandler {
	return SetDataHandler(q, func(u wsUser) string { return u.ID })
}

// wsFast reconnects within milliseconds, for tests on loopback.
var wsFast = []WSOption{WSReconnect(5*time.Millisecond, 50*time.Millisecond)}

// wsReadUntilDone reads (answering pings and the close handshake) until the
// link ends, and returns the error that ended it.
func wsReadUntilDone(ctx context.Context, c *websocket.Conn) error {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

// wsWrite sends msg as a text message, ignoring a failure.
func wsWrite(ctx context.Context, c *websocket.Conn, msg string) {
	c.Write(ctx, websocket.MessageText, []byte(msg))
}

// wsWaitFor polls cond until it holds or d passes.
func wsWaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNowf(t, "timed out", "timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wsWaitState reads o's changes until one satisfies ok.
func wsWaitState[T any](t testing.TB, o *Observer[T], what string, ok func(State[T]) bool) State[T] {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s, open := <-o.Changes():
			if !open {
				require.FailNowf(t, "observer ended", "observer ended waiting for %s", what)
			}
			if ok(s) {
				return s
			}
		case <-timeout:
			require.FailNowf(t, "timed out", "timed out waiting for %s; state %+v", what, o.State())
		}
	}
}

// wsErrorLog records the errors a stream reports (WSOnError(log.add)).
type wsErrorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *wsErrorLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *wsErrorLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// has reports whether an error reported matches target (errors.Is).
func (l *wsErrorLog) has(target error) bool {
	for _, err := range l.all() {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// contains reports whether the text of an error reported holds s.
func (l *wsErrorLog) contains(s string) bool {
	for _, err := range l.all() {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}
