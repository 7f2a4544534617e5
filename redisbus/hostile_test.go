package redisbus_test

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// publishRaw publishes payload on channel over a connection of its own,
// writing the given buffer without copying it, and returns Redis's answer
// (the number of subscribers it went to).
func publishRaw(t *testing.T, conn net.Conn, channel string, payload []byte) string {
	t.Helper()
	_, err := fmt.Fprintf(conn, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n", len(channel), channel, len(payload))
	require.NoError(t, err)
	_, err = conn.Write(payload)
	require.NoError(t, err)
	_, err = conn.Write([]byte("\r\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	return line
}

// TestHostilePublishDoesNotReachReplicas: anyone who can PUBLISH on the
// channel can send a message far over MaxPayload. go-redis reads a message
// whole before the bus can look at its size, so the bound has to be
// Redis's: with client-output-buffer-limit pubsub set below the message
// (startRedis sets what the README recommends), Redis drops the
// subscriber's connection instead of sending it; the replica resubscribes
// and resyncs. A 24 MiB hostile message grows the replica's heap by at
// most twice its size, and the replica keeps working.
func TestHostilePublishDoesNotReachReplicas(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	b := newReplica(t, srv, "B", t.Name())
	ob := b.q.Use(ctx, "1")
	defer ob.Close()
	eventually(t, dataIs(ob, 1), "B mounted")

	payload := make([]byte, 24<<20)
	for i := range payload {
		payload[i] = 'x'
	}
	conn, err := net.Dial("tcp", srv.addr())
	require.NoError(t, err)
	defer conn.Close()
	before := b.bus.Stats()

	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	publishRaw(t, conn, t.Name(), payload)
	eventually(t, func() bool {
		st := b.bus.Stats()
		return st.BadMessages > before.BadMessages || st.Subscribes > before.Subscribes
	}, "the hostile message refused or the subscriber dropped")
	runtime.ReadMemStats(&m1)
	grew := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("a %d MiB hostile publish: the replica allocated %.1f MiB (%.2f× the payload); bus stats %+v",
		len(payload)>>20, float64(grew)/(1<<20), float64(grew)/float64(len(payload)), b.bus.Stats())
	assert.LessOrEqual(t, grew, uint64(2*len(payload)), "heap growth")
	assert.Less(t, grew, uint64(len(payload)/2), "the message was read into memory")
	assert.Equal(t, before.BadMessages, b.bus.Stats().BadMessages, "the message reached the replica")

	// The replica keeps working: a normal event after it still arrives.
	a := newReplica(t, srv, "A", t.Name())
	eventually(t, func() bool { return b.bus.Stats().Subscribes > before.Subscribes }, "B resubscribed")
	a.q.SetData("1", 42)
	eventually(t, dataIs(ob, 42), "an event after the hostile one")
}
