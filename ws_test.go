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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---------- a loopback server: JSON over HTTP and a WebSocket ----------

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

func wsNewUserQuery(t testing.TB, srv *wsServer) (*Client, *Query[string, wsUser]) {
	c := NewClient(WithBaseURL(srv.URL))
	t.Cleanup(func() { c.Close() })
	q := NewQuery[string, wsUser](c, Endpoint{URL: "/users/$id"}, StaleTime(Forever), Retry(0))
	return c, q
}

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
	st := s.Stats()
	assert.EqualValues(t, 1, st.Connects, "Stats = %+v", st)
	assert.EqualValues(t, 1, st.Messages, "Stats = %+v", st)
	assert.EqualValues(t, 0, st.Errors, "Stats = %+v", st)
	assert.True(t, s.Connected(), "Connected() = false on a live link")
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
	assert.EqualValues(t, 1, st.Connects, "Stats = %+v; errors: %v", st, log.all())
	assert.Equal(t, uint64(len(msgs)), st.Messages, "Stats = %+v; errors: %v", st, log.all())
	assert.EqualValues(t, 7, st.Errors, "Stats = %+v; errors: %v", st, log.all())
	assert.Len(t, log.all(), 7, "errors OnError told of")
	assert.True(t, log.has(errFail), "the handler's error is not matchable with errors.Is")
	for _, want := range []string{"not a JSON object", `no handler for type "nope"`, `no "type" field`, "panicked: boom", "decode message", `"type" is not a string`} {
		assert.True(t, log.contains(want), "no reported error mentions %q: %v", want, log.all())
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
	require.Equal(t, int64(1), srv.fetches.Load(), "fetches after the first connect (no resync on the first connect)")
	close(drop)
	wsWaitFor(t, 5*time.Second, "three connects", func() bool { return s.Stats().Connects >= 3 && s.Connected() })
	wsWaitFor(t, 5*time.Second, "the resync refetches", func() bool { return srv.fetches.Load() >= 2 })
	assert.Equal(t, int64(3), onConnect.Load(), "OnConnect calls")
	assert.True(t, log.contains("closed by the server"), "drops not reported: %v", log.all())
	assert.True(t, log.contains("link lost"), "drops not reported: %v", log.all())
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
		gap := times[i+1].Sub(times[i])
		assert.GreaterOrEqual(t, gap, least*time.Millisecond, "attempt %d came %v after the one before", i+2, gap)
	}
	assert.False(t, s.Connected(), "connected through a refused handshake")
	assert.True(t, log.contains("503"), "refusals not reported with their status: %v", log.all())
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
	assert.True(t, log.has(websocket.ErrMessageTooBig), "oversize message not reported as ErrMessageTooBig: %v", log.all())
	st := s.Stats()
	assert.EqualValues(t, 2, st.Connects, "Stats = %+v", st)
	assert.EqualValues(t, 1, st.Errors, "Stats = %+v", st)
	assert.EqualValues(t, 1, st.Messages, "Stats = %+v", st)
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
	assert.True(t, log.contains("no pong within 30ms"), "dead peer not reported: %v", log.all())
	// The live peer answers pings: the link stays up.
	connects := s.Stats().Connects
	time.Sleep(150 * time.Millisecond)
	got := s.Stats().Connects
	assert.Equal(t, connects, got, "a peer answering pings was dropped: connects")
	assert.True(t, s.Connected(), "a peer answering pings was dropped")
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
	assert.True(t, log.has(errNope), "OnConnect failures not reported: %v", log.all())
	assert.True(t, log.contains("OnConnect panicked"), "OnConnect failures not reported: %v", log.all())
	st := s.Stats()
	assert.EqualValues(t, 2, st.Errors, "Stats = %+v", st)
	assert.EqualValues(t, 3, st.Connects, "Stats = %+v", st)
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
				assert.NoError(t, s.Close(), "Close")
			case "context":
				cancel()
			case "Client.Close":
				cl.Close()
			}
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
				require.FailNow(t, "Done not closed")
			}
			select {
			case code := <-closeStatus:
				assert.Equal(t, websocket.StatusNormalClosure, code, "the server's close status")
			case <-time.After(5 * time.Second):
				require.FailNow(t, "server saw no close")
			}
			assert.False(t, s.Connected(), "Connected after the end")
			assert.ErrorIs(t, s.Send(context.Background(), []byte("x")), ErrWSNotConnected, "Send after the end")
			assert.NoError(t, s.Close(), "second Close")
		})
	}

	t.Run("closed client", func(t *testing.T) {
		cl := NewClient()
		cl.Close()
		s := cl.SubscribeWS(context.Background(), srv.wsURL(), noop)
		select {
		case <-s.Done():
		default:
			require.FailNow(t, "stream of a closed client has not ended")
		}
		assert.NoError(t, s.Close(), "stream of a closed client did something")
		assert.Equal(t, WSStats{}, s.Stats(), "stream of a closed client did something")
	})

	t.Run("while dialing a refusing server", func(t *testing.T) {
		srv.refuse.Store(true)
		defer srv.refuse.Store(false)
		s := c.SubscribeWS(context.Background(), srv.wsURL(), noop, wsFast...)
		wsWaitFor(t, 5*time.Second, "a refusal", func() bool { return s.Stats().Errors > 0 })
		start := time.Now()
		s.Close()
		d := time.Since(start)
		assert.LessOrEqual(t, d, time.Second, "Close took %v", d)
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
	if err := s.Send(context.Background(), []byte("early")); err != nil {
		assert.ErrorIs(t, err, ErrWSNotConnected, "Send before the connect")
	}
	wsWaitFor(t, 5*time.Second, "the connect", s.Connected)
	require.NoError(t, s.Send(context.Background(), []byte("hello")))
	assert.Contains(t, []string{"hello", "early"}, <-got, "server got")
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
		require.Equal(t, fmt.Sprint(i), m, "message %d", i)
	}
}

func TestWSReconnectDelay(t *testing.T) {
	s := &WSStream{cfg: wsConfig{minDelay: 100 * time.Millisecond, maxDelay: time.Second}}
	for failures := range 10 {
		for range 50 {
			d := s.delay(failures, 0)
			lo := min(100*time.Millisecond<<failures, 500*time.Millisecond)
			require.GreaterOrEqual(t, d, lo, "delay(%d)", failures)
			require.LessOrEqual(t, d, time.Second, "delay(%d)", failures)
		}
	}
	assert.Equal(t, 700*time.Millisecond, s.delay(0, 700*time.Millisecond), "delay with Retry-After 700ms")
	assert.Equal(t, time.Second, s.delay(0, time.Hour), "delay with Retry-After 1h: the 1s bound")
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
		assert.Panics(t, f, "%s did not panic", name)
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
	require.NoError(t, h(ctx, []byte(`{"ID":"a"}`)))
	v, ok := q.Peek("a")
	assert.True(t, ok, "Peek")
	assert.Equal(t, "a", v.ID, "Peek")
	assert.ErrorContains(t, h(ctx, []byte(`{"ID":""}`)), "validate message: no id", "invalid message")
	var se *json.SyntaxError
	assert.ErrorAs(t, h(ctx, []byte(`{"ID":`)), &se, "truncated message")
	_, ok = q.Peek("")
	assert.False(t, ok, "a bad message stored data")
	c.Close()
	assert.ErrorIs(t, h(ctx, []byte(`{"ID":"b"}`)), ErrClosed, "after Close")
	assert.ErrorIs(t, InvalidateHandler(c, func([]byte) (Filter, error) { return Filter{}, nil })(ctx, nil), ErrClosed, "InvalidateHandler after Close")
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
		assert.Equal(t, tc.ok, err == nil, "topLevelString(%s): ok, err = %v", tc.msg, err)
		assert.Equal(t, tc.want, string(got), "topLevelString(%s)", tc.msg)
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
			require.Error(t, err, "%s is not an object, but got %q", msg, got)
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
		require.Equal(t, ok, err == nil, "topLevelString(%s) = %q, %v; encoding/json says %q, %v", msg, got, err, want, ok)
		require.Equal(t, want, string(got), "topLevelString(%s): encoding/json says %q", msg, want)
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

// A WSResync filter whose predicate panics is logged, as InvalidateEvery's
// is: it runs on the stream's goroutines, where a panic would end the
// process. The stream goes on: the resync after the next reconnect calls
// the predicate again.
func TestWSResyncPredicatePanicIsLogged(t *testing.T) {
	srv := newWSServer(t, func(ctx context.Context, n int, c *websocket.Conn) {
		if n > 2 { // the first two links drop at once: two resyncs
			wsReadUntilDone(ctx, c)
		}
	})
	var logs secretLog
	c := NewClient(WithBaseURL(srv.URL), WithLogger(logs.logger()))
	defer c.Close()
	q := NewQuery[string, wsUser](c, Endpoint{URL: "/users/$id"}, StaleTime(Forever), Retry(0))
	q.SetData("1", wsUser{ID: "1"})
	var calls atomic.Int32
	c.SubscribeWS(context.Background(), srv.wsURL(), wsUserHandler(q),
		append(wsFast, WSResyncMinInterval(0), WSResync(Filter{Predicate: func(Key) bool {
			calls.Add(1)
			panic("resync predicate")
		}}))...)
	wsWaitFor(t, 5*time.Second, "two resyncs, each calling the predicate", func() bool { return calls.Load() >= 2 })
	wsWaitFor(t, 5*time.Second, "the panics logged", func() bool {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return logs.byMsg["qcache: websocket resync: filter predicate panicked"] >= 2
	})
}
