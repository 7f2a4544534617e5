package qcache

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startNodeWS runs testdata/node/<script> on Node's ws package and returns
// its ws:// URL. It skips the test, saying why, when node or the ws module
// (npm ci in testdata/node) is missing.
func startNodeWS(t *testing.T, script string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not on PATH (apt-get install -y nodejs npm): skipping the test against a real Node ws server")
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "node"))
	require.NoError(t, err)
	check := exec.Command(node, "-e", "require.resolve('ws')")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err != nil {
		t.Skipf("the ws module is not installed (cd testdata/node && npm ci): skipping the test against a real Node ws server: %v: %s", err, strings.TrimSpace(string(out)))
	}
	cmd := exec.Command(node, script)
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close() // the script exits when its stdin closes
		if cmd.Wait() != nil {
			cmd.Process.Kill()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "reading the port of %s", script)
	return "ws://127.0.0.1:" + strings.TrimSpace(line) + "/"
}

// TestWSFlappingNodeServer is TestWSFlappingServerIsRateLimited against a
// real Node ws server that sends one message per connection and closes it,
// in real time: the reconnect delays grow although every link delivered a
// message, and only the first reconnect refetches the 20 observed entries
// (the test ends long before the 30 s resync interval); later reconnects
// only mark them stale.
func TestWSFlappingNodeServer(t *testing.T) {
	u := startNodeWS(t, "flap.js")
	c := NewClient()
	defer c.Close()
	var fetches atomic.Int64
	q := NewQueryFunc(c, Key{"items"}, func(context.Context, int) (int, error) {
		return int(fetches.Add(1)), nil
	}, StaleTime(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 20 {
		o := q.Use(ctx, i)
		defer o.Close()
	}
	require.Eventually(t, func() bool { return fetches.Load() == 20 }, 5*time.Second, time.Millisecond, "mounted")

	var mu sync.Mutex
	var connects []time.Time
	s := c.SubscribeWS(ctx, u, func(context.Context, []byte) error { return nil },
		WSReconnect(10*time.Millisecond, 80*time.Millisecond),
		WSStableAfter(time.Minute), // a slow machine must not make a link look stable
		WSOnConnect(func(context.Context, *WSStream) error {
			mu.Lock()
			connects = append(connects, time.Now())
			mu.Unlock()
			return nil
		}))
	defer s.Close()
	connected := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), connects...)
	}
	require.Eventually(t, func() bool { return len(connected()) >= 5 }, 10*time.Second, time.Millisecond, "five connects")
	require.Eventually(t, func() bool { return fetches.Load() >= 40 }, 10*time.Second, time.Millisecond, "the first resync")

	times := connected()
	// Delays are drawn from [10ms·2^n, 10ms·2^(n+1)], capped at 80ms: at
	// least 10, 20, 40 and 40ms, plus the link's own life.
	for i, least := range []time.Duration{10, 20, 40, 40} {
		assert.GreaterOrEqual(t, times[i+1].Sub(times[i]), least*time.Millisecond, "connect %d", i+2)
	}
	assert.Equal(t, int64(40), fetches.Load(), "mount and one resync")
	assert.GreaterOrEqual(t, s.Stats().Messages, uint64(4), "the fifth link may not have been read yet")
	st := q.State(0)
	assert.True(t, st.IsInvalidated && st.IsStale, "%+v", st)
}
