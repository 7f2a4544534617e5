package qcache

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeServer is an HTTP server on an in-memory network (net.Pipe), for
// WebSocket tests in synctest bubbles: every goroutine of both ends blocks
// on the bubble's own channels, so virtual time runs. Make it and its
// client inside the bubble.
type pipeServer struct {
	srv    *http.Server
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	client *http.Client
	served sync.WaitGroup

	mu      sync.Mutex
	accepts []time.Time // of WebSocket handshakes
}

func newPipeServer(t *testing.T, serve func(ctx context.Context, n int, c *websocket.Conn)) *pipeServer {
	s := &pipeServer{conns: make(chan net.Conn), done: make(chan struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.accepts = append(s.accepts, time.Now())
		n := len(s.accepts)
		s.mu.Unlock()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		serve(r.Context(), n, c)
	})}
	tr := &http.Transport{DialContext: s.dial}
	s.client = &http.Client{Transport: tr}
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		s.srv.Serve(s)
	}()
	t.Cleanup(func() {
		s.Close()
		s.srv.Close()
		s.served.Wait()
		tr.CloseIdleConnections()
	})
	return s
}

func (s *pipeServer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *pipeServer) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *pipeServer) Addr() net.Addr { return pipeAddr{} }

func (s *pipeServer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case s.conns <- server:
		return client, nil
	case <-s.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *pipeServer) acceptTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.accepts...)
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// flapping serves one message and closes: the server of issue 20, item 9.
func flapping(ctx context.Context, n int, c *websocket.Conn) {
	wsWrite(ctx, c, fmt.Sprintf(`{"n":%d}`, n))
	c.Close(websocket.StatusGoingAway, "bye")
}

// flapRun observes entries entries, subscribes to a server that sends one
// message per link and closes it, and reports the connects and refetches
// (fetches after the mount) of the first 10 s.
func flapRun(t *testing.T, entries int, opts ...WSOption) (connects uint64, refetches int64, q *Query[int, int], fetches *atomic.Int64) {
	srv := newPipeServer(t, flapping)
	c := NewClient()
	t.Cleanup(func() { c.Close() })
	fetches = new(atomic.Int64)
	q = NewQueryFunc(c, Key{"items"}, func(context.Context, int) (int, error) {
		return int(fetches.Add(1)), nil
	}, StaleTime(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range entries {
		q.Use(ctx, i)
	}
	synctest.Wait()
	require.Equal(t, int64(entries), fetches.Load(), "mounted")
	s := c.SubscribeWS(ctx, "ws://flap/ws", func(context.Context, []byte) error { return nil },
		append([]WSOption{WSDialOptions(&websocket.DialOptions{HTTPClient: srv.client})}, opts...)...)
	t.Cleanup(func() { s.Close() })
	time.Sleep(10 * time.Second)
	synctest.Wait()
	return s.Stats().Connects, fetches.Load() - int64(entries), q, fetches
}

// TestWSFlappingServerIsRateLimited: a server that sends one message and
// closes, with 20 observed entries. A link that delivered a message but
// did not stay up for WSStableAfter (default: the longest reconnect delay)
// does not reset the backoff, and resyncs that refetch come at most once
// per WSResyncMinInterval (default 30 s): a reconnect inside that window
// only marks the entries stale, and one refetching resync follows when it
// ends. Before: 13 connects and 240 refetches in 10 s.
func TestWSFlappingServerIsRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		connects, refetches, q, fetches := flapRun(t, 20)
		t.Logf("in 10 s: %d connects, %d refetches", connects, refetches)
		// Delays from 0.5–1 s, doubling: the 5th connect comes after 7.5 s
		// at the earliest, the 6th after 15.5 s.
		assert.GreaterOrEqual(t, connects, uint64(4))
		assert.LessOrEqual(t, connects, uint64(5))
		assert.Equal(t, int64(20), refetches, "one resync, at the first reconnect")
		st := q.State(0)
		assert.True(t, st.IsInvalidated && st.IsStale, "later reconnects marked the entries stale: %+v", st)

		// When the window ends, one resync refetches them.
		time.Sleep(21 * time.Second) // 31 s since the start
		synctest.Wait()
		st = q.State(0)
		assert.False(t, st.IsInvalidated, "refetched when the window ended: %+v", st)
		assert.Equal(t, int64(20+20+20), fetches.Load(), "mount, first resync, the resync at the window's end")
	})
}

// TestWSStableAfter: a link that stays up for WSStableAfter resets the
// backoff; by default (WSReconnect's maximum) a link of 1.5 s does not.
func TestWSStableAfter(t *testing.T) {
	hold := func(ctx context.Context, n int, c *websocket.Conn) {
		time.Sleep(1500 * time.Millisecond)
		c.Close(websocket.StatusGoingAway, "bye")
	}
	gaps := func(t *testing.T, opts ...WSOption) []time.Duration {
		srv := newPipeServer(t, hold)
		c := NewClient()
		defer c.Close()
		s := c.SubscribeWS(t.Context(), "ws://stable/ws", func(context.Context, []byte) error { return nil },
			append([]WSOption{WSDialOptions(&websocket.DialOptions{HTTPClient: srv.client})}, opts...)...)
		defer s.Close()
		time.Sleep(20 * time.Second)
		times := srv.acceptTimes()
		var out []time.Duration
		for i := 1; i < len(times); i++ {
			out = append(out, times[i].Sub(times[i-1])-1500*time.Millisecond)
		}
		return out
	}
	synctest.Test(t, func(t *testing.T) {
		d := gaps(t, WSStableAfter(time.Second))
		require.GreaterOrEqual(t, len(d), 6)
		for i, g := range d {
			assert.True(t, g >= 500*time.Millisecond && g <= time.Second, "delay %d = %v, want the first delay (0.5–1 s) every time", i, g)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		d := gaps(t)
		require.GreaterOrEqual(t, len(d), 3)
		assert.GreaterOrEqual(t, d[2], 2*time.Second, "third delay with the default WSStableAfter: %v", d)
	})
}

// TestWSResyncMinIntervalZero: 0 lets every reconnect refetch, as before
// the rate limit.
func TestWSResyncMinIntervalZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		connects, refetches, _, _ := flapRun(t, 20, WSResyncMinInterval(0))
		assert.Equal(t, int64(20*(connects-1)), refetches)
	})
}

func TestWSRateLimitOptionsPanic(t *testing.T) {
	assert.Panics(t, func() { WSStableAfter(0) })
	assert.Panics(t, func() { WSResyncMinInterval(-time.Second) })
	assert.NotPanics(t, func() { WSResyncMinInterval(0) })
}
