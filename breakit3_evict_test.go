package qcache

// Tests a third reviewer wrote to break eviction (client.go evict, the
// 32-bit use stamps) and the paths around it. Each comment names the rule
// that the test holds the code to.

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// returnsWithin runs f on a goroutine of its own and reports whether it
// returned within d of real time: the guard of a test whose failure is a
// deadlock on a mutex, which neither synctest nor goleak reports in time.
// A goroutine that does not return is left behind (the test fails anyway).
func returnsWithin(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Hooks' doc: "Every hook is called outside every lock of the cache".
// Evicted is called from inside Client.evict's loop, which holds
// c.evictMu: a hook that inserts an entry past the bound (here it
// prefetches the key it was told about, to keep a hot key warm; Prefetch
// "returns at once") runs evict again on the same goroutine, which blocks
// on evictMu for ever. The inserting Get never returns, and every later
// insert past the bound blocks behind it.
func TestBreak3EvictedHookThatInsertsDeadlocks(t *testing.T) {
	var q *Query[string, string]
	var inHook atomic.Int32
	c := NewClient(WithMaxEntries(4), WithHooks(Hooks{Evicted: func(e EvictInfo) {
		if inHook.Add(1) == 1 {
			q.Prefetch(e.Key[len(e.Key)-1]) // re-warm the evicted key
		}
	}}))
	q = NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil },
		StaleTime(time.Hour))
	for i := range 4 {
		_, err := q.Get(context.Background(), strconv.Itoa(i))
		require.NoError(t, err)
	}
	ok := returnsWithin(5*time.Second, func() {
		_, err := q.Get(context.Background(), "4") // past the bound: evicts "0"
		assert.NoError(t, err)
	})
	require.True(t, ok, "a Get past the bound whose Evicted hook prefetches hangs")
	require.NoError(t, c.Close())
}

// DESIGN, Garbage collection: WithMaxEntries evicts unobserved entries
// "least recently used first". A hit stamps its entry with the use clock
// as it stands (touch), and only misses advance that clock: an entry hit
// after another entry's miss gets the very stamp of that other entry, so
// the two tie and the order of the candidates (map order, at random)
// decides which goes. Here "a" is hit after "b" was fetched, so "b" is the
// least recently used, yet about every other round "a" is evicted.
func TestBreak3HitAfterAMissTiesWithItForEviction(t *testing.T) {
	evictedA := 0
	const rounds = 20
	for range rounds {
		c := NewClient(WithMaxEntries(2))
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil },
			StaleTime(time.Hour))
		for _, p := range []string{"a", "b", "a", "c"} { // miss, miss, hit, miss past the bound
			_, err := q.Get(context.Background(), p)
			require.NoError(t, err)
		}
		if _, ok := q.Peek("a"); !ok {
			evictedA++
		}
		_, bKept := q.Peek("b")
		require.NoError(t, c.Close())
		if bKept && evictedA > 0 {
			break
		}
	}
	assert.Zero(t, evictedA, "the entry used last was evicted instead of the least recently used one")
}

// DESIGN, Garbage collection: WithMaxEntries evicts "least recently used
// first". Only Get stamps an existing entry as used (a miss advances the
// use clock, a hit copies it): Fetch, the read of a caller that always
// wants data requested after its call, leaves the stamp of the entry's
// first Get. An entry read by Fetch on every request is then the first
// evicted, before entries nobody has read since.
func TestBreak3FetchDoesNotCountAsAUseForEviction(t *testing.T) {
	c := NewClient(WithMaxEntries(2))
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil },
		StaleTime(time.Hour))
	ctx := context.Background()
	for _, p := range []string{"a", "b"} {
		_, err := q.Get(ctx, p)
		require.NoError(t, err)
	}
	for range 3 {
		_, err := q.Fetch(ctx, "a") // "a" is read again and again
		require.NoError(t, err)
	}
	_, err := q.Get(ctx, "c") // past the bound: one of "a" and "b" goes
	require.NoError(t, err)
	_, aKept := q.Peek("a")
	_, bKept := q.Peek("b")
	assert.True(t, aKept, "the entry read last was evicted")
	assert.False(t, bKept, "the entry nobody read since it was fetched stayed")
}
