package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// ---------- a loopback server: JSON over HTTP and a WebSocket ----------

type wsUser struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// wsServer serves GET /users/{id} (counting fetches) and a WebSocket at
// /ws whose connections run serve, numbered from 1. Close drops every
// connection and waits for their handlers.
type wsServer struct {
	*httptest.Server
	fetches  atomic.Int64
	attempts atomic.Int64 // WebSocket handshakes asked for
	refuse   atomic.Bool  // answer handshakes with 503
	quit     chan struct{}

	mu     sync.Mutex
	conns  []*websocket.Conn
	closed bool
	wg     sync.WaitGroup
	n      int
	times  []time.Time // of handshake attempts
}

func newWSServer(t testing.TB, serve func(ctx context.Context, n int, c *websocket.Conn)) *wsServer {
	s := &wsServer{quit: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		n := s.fetches.Add(1)
		json.NewEncoder(w).Encode(wsUser{ID: r.PathValue("id"), Name: fmt.Sprintf("http %d", n)})
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		s.attempts.Add(1)
		s.mu.Lock()
		s.times = append(s.times, time.Now())
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "closed", http.StatusServiceUnavailable)
			return
		}
		if s.refuse.Load() {
			s.mu.Unlock()
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		s.wg.Add(1)
		s.n++
		n := s.n
		s.mu.Unlock()
		defer s.wg.Done()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		serve(ctx, n, c)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *wsServer) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := s.conns
	s.mu.Unlock()
	close(s.quit)
	for _, c := range conns {
		c.CloseNow()
	}
	s.wg.Wait()
	s.Server.Close()
}

func (s *wsServer) wsURL() string { return "ws" + strings.TrimPrefix(s.URL, "http") + "/ws" }

func (s *wsServer) attemptTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

// wsReadUntilDone reads (answering pings and the close handshake) until the
// link ends, and returns the error that ended it.
func wsReadUntilDone(ctx context.Context, c *websocket.Conn) error {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

func wsWrite(ctx context.Context, c *websocket.Conn, msg string) {
	c.Write(ctx, websocket.MessageText, []byte(msg))
}

// wsWaitFor polls cond until it holds or d passes.
func wsWaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
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
				t.Fatalf("observer ended waiting for %s", what)
			}
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s; state %+v", what, o.State())
		}
	}
}

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

func (l *wsErrorLog) has(target error) bool {
	for _, err := range l.all() {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func (l *wsErrorLog) contains(s string) bool {
	for _, err := range l.all() {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

func wsNewUserQuery(t testing.TB, srv *wsServer) (*Client, *Query[string, wsUser]) {
	c := NewClient(WithBaseURL(srv.URL))
	t.Cleanup(func() { c.Close() })
	q := NewQuery[string, wsUser](c, Endpoint{URL: "/users/$id"}, StaleTime(Forever), Retry(0))
	return c, q
}

func wsUserHandler(q *Query[string, wsUser]) MessageHandler {
	return SetDataHandler(q, func(u wsUser) string { return u.ID })
}

var wsFast = []WSOption{WSReconnect(5*time.Millisecond, 50*time.Millisecond)}

// ---------- tests ----------

func TestWSPushReachesObserver(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		wsWrite(ctx, c, `{"id":"1","name":"pushed"}`)
		wsReadUntilDone(ctx, c)
	})
	c, q := wsNewUserQuery(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := q.Use(ctx, "1")
	defer o.Close()
	s := c.SubscribeWS(ctx, srv.wsURL(), wsUserHandler(q), wsFast...)
	defer s.Close()

	wsWaitState(t, o, "the push", func(st State[wsUser]) bool { return st.Data.Name == "pushed" })
	if st := s.Stats(); st.Connects != 1 || st.Messages != 1 || st.Errors != 0 {
		t.Errorf("Stats = %+v, want 1 connect, 1 message, 0 errors", st)
	}
	if !s.Connected() {
		t.Error("Connected() = false on a live link")
	}
}

func TestWSRouteCountsAndSurvivesBadMessages(t *testing.T) {
	msgs := []string{
		`{"type":"user","id":"1","name":"first"}`,
		`not json at all`,                     // not an object
		`{"type":"nope","id":"1"}`,            // unknown type
		`{"id":"1","name":"untyped"}`,         // no type
		`{"type":"user","id":1,"name":"x"}`,   // id of the wrong type: decode error
		`{"type":"fail"}`,                     // handler error
		`{"type":"boom"}`,                     // handler panic
		`{"type":7}`,                          // type not a string
		`{"type":"invalidate","key":"users"}`, // refetches the observed entry
		`{"meta":{"type":"x"},"type":"user","id":"1","name":"last"}`,
	}
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		for _, m := range msgs {
			wsWrite(ctx, c, m)
		}
		wsReadUntilDone(ctx, c)
	})
	c, q := wsNewUserQuery(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := q.Use(ctx, "1")
	defer o.Close()
	wsWaitState(t, o, "the mount fetch", func(st State[wsUser]) bool { return st.Data.Name == "http 1" })

	errFail := errors.New("handler says no")
	var log wsErrorLog
	h := Route("type", map[string]MessageHandler{
		"user": wsUserHandler(q),
		"fail": func(context.Context, []byte) error { return errFail },
		"boom": func(context.Context, []byte) error { panic("boom") },
		"invalidate": InvalidateHandler(c, func(msg []byte) (Filter, error) {
			var m struct{ Key string }
			err := json.Unmarshal(msg, &m)
			return Filter{Key: Key{m.Key}}, err
		}),
	})
	s := c.SubscribeWS(ctx, srv.wsURL(), h, append(wsFast, WSOnError(log.add))...)
	defer s.Close()

	wsWaitState(t, o, "the last push", func(st State[wsUser]) bool { return st.Data.Name == "last" })
	wsWaitFor(t, 5*time.Second, "the invalidation's refetch", func() bool { return srv.fetches.Load() == 2 })
	st := s.Stats()
	if st.Connects != 1 || st.Messages != uint64(len(msgs)) || st.Errors != 7 {
		t.Errorf("Stats = %+v, want 1 connect, %d messages, 7 errors; errors: %v", st, len(msgs), log.all())
	}
	if n := len(log.all()); n != 7 {
		t.Errorf("OnError told of %d errors, want 7: %v", n, log.all())
	}
	if !log.has(errFail) {
		t.Error("the handler's error is not matchable with errors.Is")
	}
	for _, want := range []string{"not a JSON object", `no handler for type "nope"`, `no "type" field`, "panicked: boom", "decode message", `"type" is not a string`} {
		if !log.contains(want) {
			t.Errorf("no reported error mentions %q: %v", want, log.all())
		}
	}
}

func TestWSReconnectResubscribesAndResyncs(t *testing.T) {
	drop := make(chan struct{})
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		if _, m, err := c.Read(ctx); err != nil || string(m) != "subscribe" {
			return
		}
		wsWrite(ctx, c, fmt.Sprintf(`{"id":"1","name":"push %d"}`, n))
		switch n {
		case 1: // a close frame
			select {
			case <-drop:
			case <-ctx.Done():
			}
			c.Close(websocket.StatusGoingAway, "restarting")
		case 2: // a reset, without a close frame
			c.CloseNow()
		default:
			wsReadUntilDone(ctx, c)
		}
	})
	c, q := wsNewUserQuery(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := q.Use(ctx, "1")
	defer o.Close()
	wsWaitState(t, o, "the mount fetch", func(st State[wsUser]) bool { return st.Data.Name == "http 1" })

	var onConnect atomic.Int64
	var log wsErrorLog
	s := c.SubscribeWS(ctx, srv.wsURL(), wsUserHandler(q), append(wsFast,
		WSOnError(log.add),
		WSOnConnect(func(ctx context.Context, s *WSStream) error {
			onConnect.Add(1)
			return s.Send(ctx, []byte("subscribe"))
		}))...)
	defer s.Close()

	wsWaitState(t, o, "the first push", func(st State[wsUser]) bool { return st.Data.Name == "push 1" })
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d after the first connect, want 1 (no resync on the first connect)", n)
	}
	close(drop)
	wsWaitFor(t, 5*time.Second, "three connects", func() bool { return s.Stats().Connects >= 3 && s.Connected() })
	wsWaitFor(t, 5*time.Second, "the resync refetches", func() bool { return srv.fetches.Load() >= 2 })
	if n := onConnect.Load(); n != 3 {
		t.Errorf("OnConnect called %d times, want 3", n)
	}
	if !log.contains("closed by the server") || !log.contains("link lost") {
		t.Errorf("drops not reported: %v", log.all())
	}
}

func TestWSHandshakeRefusedBacksOff(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) { wsReadUntilDone(ctx, c) })
	srv.refuse.Store(true)
	c := NewClient()
	defer c.Close()
	var log wsErrorLog
	s := c.SubscribeWS(context.Background(), srv.wsURL(), func(context.Context, []byte) error { return nil },
		WSReconnect(20*time.Millisecond, 200*time.Millisecond), WSOnError(log.add))
	defer s.Close()

	wsWaitFor(t, 5*time.Second, "five handshake attempts", func() bool { return srv.attempts.Load() >= 5 })
	times := srv.attemptTimes()
	// Delays are drawn from [20ms·2^n, 20ms·2^(n+1)], the upper end capped
	// at 200ms: at least 20, 40, 80 and 100ms.
	for i, least := range []time.Duration{20, 40, 80, 100} {
		if gap := times[i+1].Sub(times[i]); gap < least*time.Millisecond {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+2, gap, least*time.Millisecond)
		}
	}
	if s.Connected() {
		t.Error("connected through a refused handshake")
	}
	if !log.contains("503") {
		t.Errorf("refusals not reported with their status: %v", log.all())
	}
	srv.refuse.Store(false)
	wsWaitFor(t, 5*time.Second, "the connect once the server accepts", s.Connected)
}

func TestWSOversizeMessageReconnects(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		if n == 1 {
			wsWrite(ctx, c, `{"id":"1","name":"`+strings.Repeat("x", 1000)+`"}`)
		} else {
			wsWrite(ctx, c, `{"id":"1","name":"small"}`)
		}
		wsReadUntilDone(ctx, c)
	})
	c, q := wsNewUserQuery(t, srv)
	var log wsErrorLog
	s := c.SubscribeWS(context.Background(), srv.wsURL(), wsUserHandler(q),
		append(wsFast, WSReadLimit(100), WSOnError(log.add))...)
	defer s.Close()

	wsWaitFor(t, 5*time.Second, "the small message", func() bool { u, _ := q.Peek("1"); return u.Name == "small" })
	if !log.has(websocket.ErrMessageTooBig) {
		t.Errorf("oversize message not reported as ErrMessageTooBig: %v", log.all())
	}
	if st := s.Stats(); st.Connects != 2 || st.Errors != 1 || st.Messages != 1 {
		t.Errorf("Stats = %+v, want 2 connects, 1 error, 1 message", st)
	}
}

func TestWSDeadPeerFoundByPing(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		if n == 1 { // reads nothing, so never answers a ping
			<-ctx.Done()
			return
		}
		wsReadUntilDone(ctx, c)
	})
	c := NewClient()
	defer c.Close()
	var log wsErrorLog
	s := c.SubscribeWS(context.Background(), srv.wsURL(), func(context.Context, []byte) error { return nil },
		append(wsFast, WSPingInterval(30*time.Millisecond), WSPingTimeout(30*time.Millisecond), WSOnError(log.add))...)
	defer s.Close()

	wsWaitFor(t, 5*time.Second, "the reconnect", func() bool { return s.Stats().Connects >= 2 && s.Connected() })
	if !log.contains("no pong within 30ms") {
		t.Errorf("dead peer not reported: %v", log.all())
	}
	// The live peer answers pings: the link stays up.
	connects := s.Stats().Connects
	time.Sleep(150 * time.Millisecond)
	if got := s.Stats().Connects; got != connects || !s.Connected() {
		t.Errorf("a peer answering pings was dropped: connects %d → %d", connects, got)
	}
}

func TestWSOnConnectErrorRetries(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) { wsReadUntilDone(ctx, c) })
	c := NewClient()
	defer c.Close()
	var calls atomic.Int64
	var log wsErrorLog
	errNope := errors.New("subscribe refused")
	s := c.SubscribeWS(context.Background(), srv.wsURL(), func(context.Context, []byte) error { return nil },
		append(wsFast, WSOnError(log.add), WSOnConnect(func(ctx context.Context, s *WSStream) error {
			switch calls.Add(1) {
			case 1:
				return errNope
			case 2:
				panic("subscribe exploded")
			}
			return nil
		}))...)
	defer s.Close()
	wsWaitFor(t, 5*time.Second, "the third connect", func() bool { return calls.Load() >= 3 && s.Connected() })
	if !log.has(errNope) || !log.contains("OnConnect panicked") {
		t.Errorf("OnConnect failures not reported: %v", log.all())
	}
	if st := s.Stats(); st.Errors != 2 || st.Connects != 3 {
		t.Errorf("Stats = %+v, want 2 errors, 3 connects", st)
	}
}

func TestWSClose(t *testing.T) {
	closeStatus := make(chan websocket.StatusCode, 3)
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		err := wsReadUntilDone(ctx, c)
		closeStatus <- websocket.CloseStatus(err)
	})
	noop := func(context.Context, []byte) error { return nil }
	c := NewClient()
	defer c.Close()

	for _, how := range []string{"Close", "context", "Client.Close"} {
		t.Run(how, func(t *testing.T) {
			cl := c
			if how == "Client.Close" {
				cl = NewClient()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := cl.SubscribeWS(ctx, srv.wsURL(), noop, wsFast...)
			wsWaitFor(t, 5*time.Second, "the connect", s.Connected)
			switch how {
			case "Close":
				if err := s.Close(); err != nil {
					t.Errorf("Close = %v", err)
				}
			case "context":
				cancel()
			case "Client.Close":
				cl.Close()
			}
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("Done not closed")
			}
			select {
			case code := <-closeStatus:
				if code != websocket.StatusNormalClosure {
					t.Errorf("server saw close status %v, want StatusNormalClosure", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("server saw no close")
			}
			if s.Connected() {
				t.Error("Connected after the end")
			}
			if err := s.Send(context.Background(), []byte("x")); !errors.Is(err, ErrWSNotConnected) {
				t.Errorf("Send after the end = %v, want ErrWSNotConnected", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close = %v", err)
			}
		})
	}

	t.Run("closed client", func(t *testing.T) {
		cl := NewClient()
		cl.Close()
		s := cl.SubscribeWS(context.Background(), srv.wsURL(), noop)
		select {
		case <-s.Done():
		default:
			t.Fatal("stream of a closed client has not ended")
		}
		if s.Close() != nil || s.Stats() != (WSStats{}) {
			t.Error("stream of a closed client did something")
		}
	})

	t.Run("while dialing a refusing server", func(t *testing.T) {
		srv.refuse.Store(true)
		defer srv.refuse.Store(false)
		s := c.SubscribeWS(context.Background(), srv.wsURL(), noop, wsFast...)
		wsWaitFor(t, 5*time.Second, "a refusal", func() bool { return s.Stats().Errors > 0 })
		start := time.Now()
		s.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v", d)
		}
	})
}

func TestWSSend(t *testing.T) {
	got := make(chan string, 1)
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		_, m, err := c.Read(ctx)
		if err == nil {
			got <- string(m)
		}
		wsReadUntilDone(ctx, c)
	})
	c := NewClient()
	defer c.Close()
	s := c.SubscribeWS(context.Background(), srv.wsURL(), func(context.Context, []byte) error { return nil }, wsFast...)
	defer s.Close()
	if err := s.Send(context.Background(), []byte("early")); err != nil && !errors.Is(err, ErrWSNotConnected) {
		t.Errorf("Send before the connect = %v", err)
	}
	wsWaitFor(t, 5*time.Second, "the connect", s.Connected)
	if err := s.Send(context.Background(), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "hello" && m != "early" {
		t.Errorf("server got %q", m)
	}
}

func TestWSMessagesInOrder(t *testing.T) {
	const n = 500
	srv := newWSServer(t, func(ctx context.Context, _ int, c *websocket.Conn) {
		for i := range n {
			wsWrite(ctx, c, fmt.Sprint(i))
		}
		wsReadUntilDone(ctx, c)
	})
	c := NewClient()
	defer c.Close()
	var mu sync.Mutex
	var seen []string
	s := c.SubscribeWS(context.Background(), srv.wsURL(), func(_ context.Context, msg []byte) error {
		mu.Lock()
		seen = append(seen, string(msg))
		mu.Unlock()
		return nil
	}, wsFast...)
	defer s.Close()
	wsWaitFor(t, 5*time.Second, "every message", func() bool { return s.Stats().Messages == n })
	mu.Lock()
	defer mu.Unlock()
	for i, m := range seen {
		if m != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}
}

func TestWSReconnectDelay(t *testing.T) {
	s := &WSStream{cfg: wsConfig{minDelay: 100 * time.Millisecond, maxDelay: time.Second}}
	for failures := range 10 {
		for range 50 {
			d := s.delay(failures, 0)
			lo := min(100*time.Millisecond<<failures, 500*time.Millisecond)
			if d < lo || d > time.Second {
				t.Fatalf("delay(%d) = %v, want within [%v, 1s]", failures, d, lo)
			}
		}
	}
	if d := s.delay(0, 700*time.Millisecond); d != 700*time.Millisecond {
		t.Errorf("delay with Retry-After 700ms = %v", d)
	}
	if d := s.delay(0, time.Hour); d != time.Second {
		t.Errorf("delay with Retry-After 1h = %v, want the 1s bound", d)
	}
}

func TestWSOptionsPanic(t *testing.T) {
	for name, f := range map[string]func(){
		"WSReconnect(0, 1s)":  func() { WSReconnect(0, time.Second) },
		"WSReconnect(2s, 1s)": func() { WSReconnect(2*time.Second, time.Second) },
		"WSReadLimit(0)":      func() { WSReadLimit(0) },
		"WSPingInterval(-1)":  func() { WSPingInterval(-1) },
		"WSPingTimeout(0)":    func() { WSPingTimeout(0) },
		"SubscribeWS(nil)":    func() { NewClient().SubscribeWS(context.Background(), "ws://x", nil) },
		"SetDataHandler(nil)": func() { SetDataHandler[string, string](nil, nil) },
		"InvalidateHandler()": func() { InvalidateHandler(nil, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}

type wsValidated struct{ ID string }

func (v *wsValidated) Validate() error {
	if v.ID == "" {
		return errors.New("no id")
	}
	return nil
}

func TestSetDataHandlerDecodesAndValidates(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"v"}, func(context.Context, string) (wsValidated, error) { return wsValidated{}, nil })
	h := SetDataHandler(q, func(v wsValidated) string { return v.ID })
	ctx := context.Background()
	if err := h(ctx, []byte(`{"ID":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if v, ok := q.Peek("a"); !ok || v.ID != "a" {
		t.Errorf("Peek = %+v, %v", v, ok)
	}
	if err := h(ctx, []byte(`{"ID":""}`)); err == nil || !strings.Contains(err.Error(), "validate message: no id") {
		t.Errorf("invalid message: %v", err)
	}
	var se *json.SyntaxError
	if err := h(ctx, []byte(`{"ID":`)); !errors.As(err, &se) {
		t.Errorf("truncated message: %v, want a *json.SyntaxError", err)
	}
	if _, ok := q.Peek(""); ok {
		t.Error("a bad message stored data")
	}
	c.Close()
	if err := h(ctx, []byte(`{"ID":"b"}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if err := InvalidateHandler(c, func([]byte) (Filter, error) { return Filter{}, nil })(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("InvalidateHandler after Close: %v, want ErrClosed", err)
	}
}

// ---------- Route's field scanner ----------

func TestTopLevelString(t *testing.T) {
	for _, tc := range []struct {
		msg, want string
		ok        bool
	}{
		{`{"type":"user"}`, "user", true},
		{` { "a" : 1 , "type" : "user" } `, "user", true},
		{`{"a":{"type":"inner"},"b":[1,"}",{"type":"x"}],"type":"outer"}`, "outer", true},
		{`{"type":"first","type":"last"}`, "last", true},
		{`{"typ\u0065":"esc\"aped"}`, `esc"aped`, true},
		{`{"type":"\u00e9t\u00e9"}`, "été", true},
		{`{"a":"\"type\":\"no\"","type":"yes"}`, "yes", true},
		{`{"a":true,"b":null,"c":-1.5e3,"type":""}`, "", true},
		{`{"Type":"user"}`, "", false},
		{`{}`, "", false},
		{`[]`, "", false},
		{``, "", false},
		{`"type"`, "", false},
		{`{"type":1}`, "", false},
		{`{"type":null}`, "", false},
		{`{"type":"unterminated`, "", false},
		{`{"type":"user"`, "", false},
		{`{"a":[1,2,"type"`, "", false},
		{`{"a" 1,"type":"x"}`, "", false},
		{`{"a":1 "type":"x"}`, "", false},
		{`{,"type":"x"}`, "", false},
	} {
		got, err := topLevelString([]byte(tc.msg), "type")
		if (err == nil) != tc.ok || string(got) != tc.want {
			t.Errorf("topLevelString(%s) = %q, %v; want %q, ok=%v", tc.msg, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzTopLevelString checks the scanner against encoding/json on every
// valid JSON object.
func FuzzTopLevelString(f *testing.F) {
	for _, s := range []string{`{"type":"user","id":"1"}`, `{"a":{"type":"x"},"type":"y"}`,
		`{"type":"a","type":"b"}`, `{"t\u0079pe":"\n"}`, `{"type":[1,{"a":"]"}]}`, `[1]`, `{"type":"é"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := topLevelString(msg, "type")
		if !json.Valid(msg) || !utf8.Valid(msg) {
			return // anything but a panic will do
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(msg, &m) != nil {
			if err == nil {
				t.Fatalf("%s is not an object, but got %q", msg, got)
			}
			return
		}
		raw, ok := m["type"]
		var want string
		if ok && json.Unmarshal(raw, &want) != nil {
			ok = false
		}
		if ok && raw[0] != '"' {
			ok = false
		}
		if ok != (err == nil) || string(got) != want {
			t.Fatalf("topLevelString(%s) = %q, %v; encoding/json says %q, %v", msg, got, err, want, ok)
		}
	})
}

// ---------- benchmark ----------

// BenchmarkWSApply measures messages per second from a loopback server
// through Route and SetDataHandler into one entry with one observer.
func BenchmarkWSApply(b *testing.B) {
	msg := []byte(`{"type":"user","id":"1","name":"Ada Lovelace"}`)
	start := make(chan struct{})
	srv := newWSServer(b, func(ctx context.Context, _ int, c *websocket.Conn) {
		select {
		case <-start:
		case <-ctx.Done():
			return
		}
		for range b.N {
			// A context without Done spares the writer a timer per message.
			if c.Write(context.Background(), websocket.MessageText, msg) != nil {
				return
			}
		}
		wsReadUntilDone(ctx, c)
	})
	c, q := wsNewUserQuery(b, srv)
	q.SetData("1", wsUser{ID: "1", Name: "seed"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := q.Use(ctx, "1")
	defer o.Close()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range o.Changes() {
		}
	}()
	var n atomic.Int64
	all := make(chan struct{})
	user := wsUserHandler(q)
	h := Route("type", map[string]MessageHandler{
		"user": func(ctx context.Context, msg []byte) error {
			err := user(ctx, msg)
			if n.Add(1) == int64(b.N) {
				close(all)
			}
			return err
		},
	})
	s := c.SubscribeWS(ctx, srv.wsURL(), h, wsFast...)
	defer s.Close()
	wsWaitFor(b, 5*time.Second, "the connect", s.Connected)

	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	close(start)
	<-all
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if st := s.Stats(); st.Errors != 0 {
		b.Errorf("Stats = %+v", st)
	}
	s.Close()
	o.Close()
	<-drained
}

func TestWSClientCloseFromCallbacks(t *testing.T) {
	t.Run("message handler", func(t *testing.T) {
		srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
			wsWrite(ctx, c, `{"id":"1","name":"pushed"}`)
			wsReadUntilDone(ctx, c)
		})
		c := NewClient(WithBaseURL(srv.URL))
		s := c.SubscribeWS(context.Background(), srv.wsURL(), func(ctx context.Context, msg []byte) error {
			c.Close()
			return nil
		}, wsFast...)
		noHang(t, "Close from a MessageHandler", func() {
			<-s.Done()
			c.Close()
		})
	})
	t.Run("resync predicate", func(t *testing.T) {
		srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
			// Drop the first link at once, so that the second one resyncs.
			if n > 1 {
				wsReadUntilDone(ctx, c)
			}
		})
		c, q := wsNewUserQuery(t, srv)
		q.SetData("1", wsUser{ID: "1"})
		s := c.SubscribeWS(context.Background(), srv.wsURL(), wsUserHandler(q),
			append(wsFast, WSResyncMinInterval(0), WSResync(Filter{Predicate: func(Key) bool {
				c.Close()
				return true
			}}))...)
		noHang(t, "Close from a resync predicate", func() {
			<-s.Done()
			c.Close()
		})
	})
}
