package redisbus_test

import (
	"testing"

	"github.com/qcache-go/qcache/redisbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSignedEvents: with signing on, only events signed with a known key
// are applied; unsigned, forged, unknown-key and other-channel messages
// are counted in Unauthenticated and dropped, and keys rotate through
// WithVerifyKeys.
func TestSignedEvents(t *testing.T) {
	srv := startRedis(t)
	ctx := t.Context()
	k1, k2 := []byte("0123456789abcdef-key-one"), []byte("0123456789abcdef-key-two")
	// A signs with the old key; B already signs with the new one and still
	// accepts the old.
	a := newReplica(t, srv, "A", t.Name(), redisbus.WithSigningKey("k1", k1))
	b := newReplica(t, srv, "B", t.Name(), redisbus.WithSigningKey("k2", k2), redisbus.WithVerifyKeys(map[string][]byte{"k1": k1}))
	ob := b.q.Use(ctx, "1")
	defer ob.Close()
	eventually(t, dataIs(ob, 1), "B mounted")

	a.q.SetData("1", 5)
	eventually(t, dataIs(ob, 5), "a signed event reaches B")

	// A bus on another channel with the same key signs for that channel.
	other := newReplica(t, srv, "X", t.Name()+"-other", redisbus.WithSigningKey("k1", k1))

	ev := `{"origin":"M","kind":"setData","key":["items","1"],"exact":true,"data":666}`
	hostile := []string{
		ev, // unsigned
		"qcsig1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:" + ev, // forged
		"qcsig1:k9:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:" + ev, // unknown key
		"qcsig1:k1" + ev, // malformed
	}
	for _, m := range hostile {
		require.NoError(t, a.rdb.Publish(ctx, t.Name(), m).Err())
	}
	// A message signed for the other channel, replayed on this one.
	sub := other.rdb.Subscribe(ctx, t.Name()+"-other")
	defer sub.Close()
	_, err := sub.Receive(ctx)
	require.NoError(t, err)
	other.q.SetData("1", 777)
	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Contains(t, msg.Payload, "qcsig1:k1:")
	require.NoError(t, a.rdb.Publish(ctx, t.Name(), msg.Payload).Err())

	eventually(t, func() bool { return b.bus.Stats().Unauthenticated == 5 }, "five unauthenticated messages")
	assert.Equal(t, 5, ob.State().Data, "none of them was applied")
	assert.Equal(t, uint64(0), b.bus.Stats().BadMessages)
	eventually(t, func() bool { return a.bus.Stats().Unauthenticated == 5 }, "A verifies too")

	// B's own signed events reach A only once A knows k2: rotation.
	b.q.SetData("1", 8)
	eventually(t, func() bool { return a.bus.Stats().Unauthenticated == 6 }, "A refused k2")
	a.q.SetData("1", 9)
	eventually(t, dataIs(ob, 9), "the bus still works")
}

func TestSigningOptionsPanic(t *testing.T) {
	key := []byte("0123456789abcdef")
	assert.Panics(t, func() { redisbus.WithSigningKey("", key) })
	assert.Panics(t, func() { redisbus.WithSigningKey("a:b", key) })
	assert.Panics(t, func() { redisbus.WithSigningKey("k", key[:15]) })
	assert.Panics(t, func() { redisbus.WithVerifyKeys(map[string][]byte{"k": nil}) })
	assert.NotPanics(t, func() { redisbus.WithSigningKey("k", key) })
}
