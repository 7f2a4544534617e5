package redisbus_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // reconnect attempts while the server is down are expected
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// ---------- a real redis-server on loopback ----------

type redisServer struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server on a free loopback port, without
// persistence and with the pub/sub output buffer limit the README
// recommends, and stops it when the test ends. It skips the test when
// redis-server is not on PATH.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not on PATH (apt-get install -y redis-server): skipping the tests against a real Redis")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	s := &redisServer{t: t, bin: bin, port: port}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *redisServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		// What the README recommends for the default MaxPayload of 1 MiB.
		"--client-output-buffer-limit", "pubsub", "4mb", "2mb", "60")
	require.NoError(s.t, s.cmd.Start())
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if conn, err := net.DialTimeout("tcp", s.addr(), time.Second); err == nil {
			fmt.Fprint(conn, "PING\r\n")
			conn.SetReadDeadline(time.Now().Add(time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err == nil && line == "+PONG\r\n" {
				return
			}
		}
		select {
		case <-s.done:
			require.FailNowf(s.t, "redis-server exited", "redis-server on port %d exited at start", s.port)
		default:
		}
		require.False(s.t, time.Now().After(deadline), "redis-server on port %d not ready after 10s", s.port)
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// ---------- replicas ----------

// replica is one instance of a service: its own Redis connection, bus,
// qcache client, and a query whose fetches it counts.
type replica struct {
	name    string
	rdb     *redis.Client
	bus     *redisbus.Bus
	c       *qcache.Client
	fetches atomic.Int64
	q       *qcache.Query[string, int]
}

func newReplica(t *testing.T, srv *redisServer, name, channel string, opts ...redisbus.Option) *replica {
	t.Helper()
	r := &replica{name: name}
	r.rdb = redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialTimeout: time.Second})
	r.bus = redisbus.New(r.rdb, append([]redisbus.Option{redisbus.Channel(channel),
		redisbus.Reconnect(20*time.Millisecond, 200*time.Millisecond)}, opts...)...)
	r.c = qcache.NewClient(qcache.WithBus(r.bus, qcache.BusOrigin(name)))
	t.Cleanup(func() {
		r.c.Close()
		r.rdb.Close()
	})
	r.q = qcache.NewQueryFunc(r.c, qcache.Key{"items"}, func(ctx context.Context, p string) (int, error) {
		return int(r.fetches.Add(1)), nil
	}, qcache.StaleTime(time.Hour))
	eventually(t, func() bool { return r.bus.Stats().Subscribes == 1 }, name+" subscribed")
	return r
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 2*time.Millisecond, what)
}

func dataIs(o *qcache.Observer[int], want int) func() bool {
	return func() bool { s := o.State(); return s.HasData && s.Data == want }
}

func TestThreeReplicas(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	a, b, c := newReplica(t, srv, "A", t.Name()), newReplica(t, srv, "B", t.Name()), newReplica(t, srv, "C", t.Name())
	ob, oc := b.q.Use(ctx, "1"), c.q.Use(ctx, "1")
	defer ob.Close()
	defer oc.Close()
	eventually(t, dataIs(ob, 1), "B mounted")
	eventually(t, dataIs(oc, 1), "C mounted")
	a.q.SetData("1", 100) // A holds the entry too, unobserved
	eventually(t, dataIs(ob, 100), "SetData on A reaches B")
	eventually(t, dataIs(oc, 100), "SetData on A reaches C")

	// A mutation on A refetches B's and C's observers (its Invalidates).
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer api.Close()
	rename := qcache.NewMutation[string, string, struct{}](a.c,
		qcache.Endpoint{Method: http.MethodPut, URL: api.URL + "/items/$id"},
		qcache.MutationInvalidates(qcache.Filter{Key: qcache.Key{"items"}}))
	_, err := rename.Do(ctx, "1", "new name")
	require.NoError(t, err)
	eventually(t, dataIs(ob, 2), "B refetched")
	eventually(t, dataIs(oc, 2), "C refetched")
	assert.Equal(t, int64(2), b.fetches.Load())
	assert.Equal(t, int64(2), c.fetches.Load())
	assert.Equal(t, int64(0), a.fetches.Load(), "A's entry is unobserved: invalidated, not refetched")

	a.q.SetData("1", 7)
	eventually(t, dataIs(ob, 7), "SetData on A reaches B")
	eventually(t, dataIs(oc, 7), "SetData on A reaches C")
	assert.False(t, ob.State().IsStale)

	// A's own events came back from Redis and were ignored.
	eventually(t, func() bool { return a.bus.Stats().Messages == 3 }, "A's bus got its own three events")
	assert.Equal(t, uint64(0), a.c.BusStats().Received)
	assert.Equal(t, uint64(3), a.c.BusStats().Published)
	assert.Equal(t, uint64(3), b.c.BusStats().Received)
	assert.Equal(t, uint64(0), b.c.BusStats().Published, "what B applied, it did not publish again")
	assert.Equal(t, int64(0), a.fetches.Load())
	assert.Equal(t, int64(2), b.fetches.Load())
}

func TestRedisRestartResyncsEveryReplica(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	var errs atomic.Int64
	onErr := redisbus.OnError(func(error) { errs.Add(1) })
	rs := []*replica{newReplica(t, srv, "A", t.Name(), onErr), newReplica(t, srv, "B", t.Name(), onErr), newReplica(t, srv, "C", t.Name(), onErr)}
	var obs []*qcache.Observer[int]
	for _, r := range rs {
		o := r.q.Use(ctx, "1")
		defer o.Close()
		eventually(t, dataIs(o, 1), r.name+" mounted")
		obs = append(obs, o)
	}

	srv.kill()
	for _, r := range rs {
		eventually(t, func() bool { return r.bus.Stats().Errors >= 1 }, r.name+" noticed the lost connection")
	}
	// Written while Redis is down: lost for the others, made up by the resync.
	rs[0].q.SetData("1", 50)
	time.Sleep(300 * time.Millisecond) // a few failed reconnects, with backoff
	srv.start()

	for _, r := range rs {
		eventually(t, func() bool { return r.bus.Stats().Subscribes == 2 }, r.name+" resubscribed")
		eventually(t, func() bool { return r.c.BusStats().Resyncs == 1 }, r.name+" resynced")
		eventually(t, func() bool { return r.fetches.Load() >= 2 }, r.name+" refetched after the resync")
	}
	assert.Greater(t, errs.Load(), int64(2))
	// A's SetData either left late (go-redis retries its dial) or was
	// refused, and then A published an invalidation of everything.
	eventually(t, func() bool { st := rs[0].c.BusStats(); return st.Published+st.ResyncsPublished == 1 }, "A's write reached the bus")

	// And events flow again.
	rs[0].q.SetData("1", 99)
	eventually(t, dataIs(obs[1], 99), "B after the restart")
	eventually(t, dataIs(obs[2], 99), "C after the restart")
}

func TestGarbageIsCountedAndIgnored(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	var mu sync.Mutex
	var reported []error
	a := newReplica(t, srv, "A", t.Name())
	b := newReplica(t, srv, "B", t.Name(), redisbus.OnError(func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}))
	ob := b.q.Use(ctx, "1")
	defer ob.Close()
	eventually(t, dataIs(ob, 1), "B mounted")

	garbage := []string{
		"not json",
		`{"origin":"X","kind":"explode"}`,
		`{"origin":"X","kind":"setData","key":["items","1"]}`,
		`{"origin":"X","kind":"invalidate","refetch":9}`,
		`[1,2,3]`,
	}
	for _, g := range garbage {
		require.NoError(t, a.rdb.Publish(ctx, t.Name(), g).Err())
	}
	eventually(t, func() bool { return b.bus.Stats().BadMessages == uint64(len(garbage)) }, "garbage counted")
	mu.Lock()
	assert.Len(t, reported, len(garbage))
	assert.ErrorContains(t, reported[0], "bad message")
	mu.Unlock()
	assert.Equal(t, uint64(0), b.c.BusStats().Received)
	assert.Equal(t, 1, ob.State().Data)
	assert.False(t, ob.State().IsInvalidated)

	// A SetData whose data does not decode into the query's T is refused by
	// the client, not by the bus.
	require.NoError(t, a.rdb.Publish(ctx, t.Name(), `{"origin":"X","kind":"setData","key":["items","1"],"exact":true,"data":"str"}`).Err())
	eventually(t, func() bool { return b.c.BusStats().Rejected == 1 }, "undecodable data rejected")
	assert.Equal(t, 1, ob.State().Data)

	a.q.SetData("1", 5)
	eventually(t, dataIs(ob, 5), "the bus still works")
}

func TestPublishRefusesOversizedEvents(t *testing.T) {
	srv := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer rdb.Close()
	bus := redisbus.New(rdb, redisbus.MaxPayload(64))
	err := bus.Publish(t.Context(), qcache.Event{Kind: qcache.EventSetData, Key: qcache.Key{"k"}, Data: []byte(`"` + strings.Repeat("x", 100) + `"`)})
	assert.ErrorContains(t, err, "exceeds MaxPayload")
}

// TestLatency measures publish → observer-notified across two clients: A
// sets data, B's observer sees it. go test -run Latency -v prints it.
func TestLatency(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	a, b := newReplica(t, srv, "A", t.Name()), newReplica(t, srv, "B", t.Name())
	b.q.SetData("k", 0)
	ob := b.q.Use(ctx, "k")
	defer ob.Close()
	const n = 1000
	lat := make([]time.Duration, 0, n)
	changes := ob.Changes()
	for i := 1; i <= n; i++ {
		start := time.Now()
		a.q.SetData("k", i)
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case s := <-changes:
				if s.Data == i {
					break wait
				}
			case <-timeout:
				require.FailNowf(t, "event lost", "event %d not seen by B within 5s", i)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	median, p99 := lat[n/2], lat[n*99/100]
	t.Logf("publish → observer notified across two clients over Redis pub/sub, %d events: median %v, p99 %v, max %v",
		n, median.Round(time.Microsecond), p99.Round(time.Microsecond), lat[n-1].Round(time.Microsecond))
	assert.Less(t, median, 50*time.Millisecond, "milliseconds, not StaleTime")
}
