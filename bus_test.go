package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBusThreeClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := new(MemoryBus)
		a, b, c := newReplica(t, bus, "A"), newReplica(t, bus, "B"), newReplica(t, bus, "C")
		a.q.SetData("1", "a0") // A has the entry too, unobserved
		synctest.Wait()
		ob := b.q.Use(ctx, "1")
		defer ob.Close()
		oc := c.q.Use(ctx, "1")
		defer oc.Close()
		synctest.Wait()
		require.Equal(t, "Bv1:1", ob.State().Data, "B fetched on mount: A's SetData came before B had the entry")
		require.Equal(t, "Cv1:1", oc.State().Data)

		// A mutation-like invalidation on A refetches B's and C's observers.
		require.NoError(t, a.c.Invalidate(ctx, Filter{Key: Key{"items"}}))
		synctest.Wait()
		assert.Equal(t, "Bv2:1", ob.State().Data)
		assert.Equal(t, "Cv2:1", oc.State().Data)
		assert.Equal(t, 0, a.src.count(), "A's own entry is unobserved: invalidated, not refetched")
		assert.True(t, a.q.State("1").IsInvalidated)

		// SetData on A appears in B's and C's observers without a fetch.
		a.q.SetData("1", "pushed")
		synctest.Wait()
		assert.Equal(t, "pushed", ob.State().Data)
		assert.Equal(t, "pushed", oc.State().Data)
		assert.False(t, ob.State().IsStale)
		assert.Equal(t, 2, b.src.count())

		// Update travels as SetData.
		a.q.Update("1", func(old string, ok bool) string { return old + "+" })
		synctest.Wait()
		assert.Equal(t, "pushed+", ob.State().Data)

		// A's own events do not come back to it.
		assert.Equal(t, uint64(0), a.c.BusStats().Received)
		assert.Equal(t, BusStats{Published: 4, Subscribes: 1}, a.c.BusStats())
		assert.Equal(t, BusStats{Received: 4, Subscribes: 1}, b.c.BusStats())
		assert.Equal(t, 0, a.src.count())

		// What B applies it does not publish again.
		assert.Equal(t, uint64(0), b.c.BusStats().Published)
		assert.Equal(t, uint64(4), c.c.BusStats().Received)
	})
}

func TestBusQueryInvalidateAndRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := new(MemoryBus)
		a, b := newReplica(t, bus, "A"), newReplica(t, bus, "B")
		b.q.SetData("1", "b1")
		b.q.SetData("2", "b2")
		ob := b.q.Use(ctx, "3")
		defer ob.Close()
		synctest.Wait()

		// Query.Invalidate publishes p's exact key, held by A or not.
		require.NoError(t, a.q.Invalidate(ctx, "1"))
		synctest.Wait()
		assert.True(t, b.q.State("1").IsInvalidated)
		assert.False(t, b.q.State("2").IsInvalidated)

		// InvalidateAll publishes the query's prefix.
		require.NoError(t, a.q.InvalidateAll(ctx))
		synctest.Wait()
		assert.True(t, b.q.State("2").IsInvalidated)
		assert.Equal(t, "Bv2:3", ob.State().Data, "the observed entry refetched")

		// Query.Remove removes p's entry on B.
		a.q.Remove("1")
		synctest.Wait()
		_, ok := b.q.Peek("1")
		assert.False(t, ok)

		// Client.Remove: an observed entry is reset and refetched.
		a.c.Remove(Filter{Key: Key{"items"}})
		synctest.Wait()
		_, ok = b.q.Peek("2")
		assert.False(t, ok)
		assert.Equal(t, "Bv3:3", ob.State().Data)
		assert.Equal(t, uint64(4), b.c.BusStats().Received)
	})
}

func TestBusPredicateDoesNotTravel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := new(MemoryBus)
		a, b := newReplica(t, bus, "A"), newReplica(t, bus, "B")
		for _, r := range []*replica{a, b} {
			r.q.SetData("1", "x")
			r.q.SetData("2", "y")
		}
		only1 := func(k Key) bool { return k[len(k)-1] == "1" }

		require.NoError(t, a.c.Invalidate(ctx, Filter{Key: Key{"items"}, Predicate: only1}))
		synctest.Wait()
		assert.False(t, a.q.State("2").IsInvalidated, "locally the predicate holds")
		assert.True(t, b.q.State("1").IsInvalidated)
		assert.True(t, b.q.State("2").IsInvalidated, "remotely the filter is wider")

		// A removal with a predicate is an invalidation elsewhere: nothing
		// the predicate spared is dropped.
		b.q.SetData("1", "x")
		b.q.SetData("2", "y")
		synctest.Wait()
		a.c.Remove(Filter{Key: Key{"items"}, Predicate: only1})
		synctest.Wait()
		_, ok := a.q.Peek("1")
		assert.False(t, ok)
		for _, p := range []string{"1", "2"} {
			s := b.q.State(p)
			assert.True(t, s.HasData, p)
			assert.True(t, s.IsInvalidated, p)
		}
	})
}

func TestBusPublishKindsAndLocal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := new(MemoryBus)
		a := newReplica(t, bus, "A", BusPublish(EventInvalidate, EventRemove))
		b := newReplica(t, bus, "B")
		b.q.SetData("1", "b")
		synctest.Wait()

		a.q.SetData("1", "a")
		synctest.Wait()
		assert.Equal(t, "b", b.q.State("1").Data, "A does not publish SetData")
		require.NoError(t, a.q.Invalidate(ctx, "1"))
		synctest.Wait()
		assert.True(t, b.q.State("1").IsInvalidated)

		assert.Equal(t, uint64(1), b.c.BusStats().Received)

		// A Local query publishes nothing and takes no SetData.
		noop := func(ctx context.Context, p string) (string, error) { return "", nil }
		aLocal := NewQueryFunc(a.c, Key{"local"}, noop, Local())
		bLocal := NewQueryFunc(b.c, Key{"local"}, noop, Local())
		bOther := NewQueryFunc(b.c, Key{"local"}, noop) // same keys, not Local
		bLocal.SetData("1", "b")
		aLocal.SetData("1", "a")
		synctest.Wait()
		require.NoError(t, aLocal.Invalidate(ctx, "1"))
		aLocal.Remove("1")
		synctest.Wait()
		assert.Equal(t, uint64(1), b.c.BusStats().Received, "nothing of aLocal was published")
		assert.False(t, bLocal.State("1").IsInvalidated)

		aLocal.SetData("1", "a")
		bOther.SetData("1", "b2") // published, with aLocal's key
		synctest.Wait()
		assert.Equal(t, "a", aLocal.State("1").Data, "a Local query takes no SetData")
		assert.Equal(t, uint64(2), a.c.BusStats().Received)
		assert.Equal(t, uint64(0), a.c.BusStats().Rejected)

		// Invalidations of other clients still reach a Local query.
		require.NoError(t, b.c.Invalidate(ctx, Filter{Key: Key{"local"}}))
		synctest.Wait()
		assert.True(t, aLocal.State("1").IsInvalidated)
	})
}

func TestBusSetDataDecodeFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := new(MemoryBus)
		a := newReplica(t, bus, "A")
		var mu sync.Mutex
		var errs []error
		c := NewClient(WithBus(bus, BusOnError(func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})))
		defer c.Close()
		ints := NewQueryFunc(c, Key{"items"}, func(ctx context.Context, p string) (int, error) { return 0, nil })
		valid := NewQueryFunc(c, Key{"items"}, func(ctx context.Context, p string) (positive, error) { return 0, nil })
		ints.SetData("1", 7)
		synctest.Wait()

		a.q.SetData("1", "not a number")
		synctest.Wait()
		assert.Equal(t, 7, ints.State("1").Data, "bad data is not applied")
		assert.Equal(t, uint64(1), c.BusStats().Rejected)
		mu.Lock()
		require.Len(t, errs, 1)
		assert.ErrorContains(t, errs[0], "decode into int")
		mu.Unlock()

		// A type with Validate is validated.
		valid.SetData("2", 1)
		synctest.Wait()
		intsA := NewQueryFunc(a.c, Key{"items"}, func(ctx context.Context, p string) (int, error) { return 0, nil })
		intsA.SetData("2", -3)
		synctest.Wait()
		assert.Equal(t, positive(1), valid.State("2").Data)
		assert.Equal(t, uint64(2), c.BusStats().Rejected)

		// Still alive: the next good event applies.
		intsA.SetData("1", 8)
		synctest.Wait()
		assert.Equal(t, 8, ints.State("1").Data)
	})
}

type positive int

func (p positive) Validate() error {
	if p <= 0 {
		return errors.New("not positive")
	}
	return nil
}

func TestBusRejectsInvalidEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := new(MemoryBus)
		b := newReplica(t, bus, "B")
		b.q.SetData("1", "b")
		synctest.Wait()
		ctx := t.Context()
		for _, ev := range []Event{
			{Origin: "X", Kind: 0},
			{Origin: "X", Kind: 9},
			{Origin: "X", Kind: EventInvalidate, Refetch: 7},
			{Origin: "X", Kind: EventSetData, Key: Key{"items", "1"}},
			{Origin: "X", Kind: EventSetData, Data: json.RawMessage(`"x"`)},
		} {
			require.NoError(t, bus.Publish(ctx, ev))
		}
		synctest.Wait()
		assert.Equal(t, uint64(5), b.c.BusStats().Rejected)
		assert.Equal(t, uint64(0), b.c.BusStats().Received)
		assert.Equal(t, "b", b.q.State("1").Data)
		assert.False(t, b.q.State("1").IsInvalidated)
	})
}

func TestEventJSON(t *testing.T) {
	ev := Event{Origin: "A", Kind: EventSetData, Key: Key{"users", "42"}, Exact: true, Data: json.RawMessage(`{"name":"x"}`)}
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	assert.JSONEq(t, `{"origin":"A","kind":"setData","key":["users","42"],"exact":true,"data":{"name":"x"}}`, string(b))
	var back Event
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, ev, back)

	b, err = json.Marshal(Event{Origin: "A", Kind: EventInvalidate, Refetch: RefetchNone})
	require.NoError(t, err)
	assert.JSONEq(t, `{"origin":"A","kind":"invalidate","refetch":3}`, string(b))

	assert.Error(t, json.Unmarshal([]byte(`{"kind":"explode"}`), &back))
	_, err = json.Marshal(Event{Kind: 42})
	assert.Error(t, err)
	assert.Equal(t, "remove", EventRemove.String())
	assert.Equal(t, "EventKind(0)", EventKind(0).String())
}

// droppingBus is a MemoryBus whose subscriptions can be dropped: events
// published while a subscription is down are lost, and it comes back with
// Subscribed called again, as redisbus does after a reconnect.
type droppingBus struct {
	MemoryBus
	mu    sync.Mutex
	drops []chan struct{}
}

func (b *droppingBus) Subscribe(ctx context.Context, s Subscriber) error {
	for ctx.Err() == nil {
		sub, cancel := context.WithCancel(ctx)
		drop := make(chan struct{})
		b.mu.Lock()
		b.drops = append(b.drops, drop)
		b.mu.Unlock()
		done := make(chan struct{})
		go func() { defer close(done); b.MemoryBus.Subscribe(sub, s) }()
		select {
		case <-drop:
		case <-ctx.Done():
		}
		cancel()
		<-done
	}
	return nil
}

// dropAll takes every subscription down; they resubscribe at once.
func (b *droppingBus) dropAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.drops {
		close(d)
	}
	b.drops = nil
}

func TestBusResubscribeResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := new(droppingBus)
		a, b := newReplica(t, bus, "A"), newReplica(t, bus, "B")
		ob := b.q.Use(ctx, "1")
		defer ob.Close()
		b.q.SetData("2", "unobserved")
		synctest.Wait()
		require.Equal(t, "Bv1:1", ob.State().Data)

		bus.dropAll()
		synctest.Wait()
		assert.Equal(t, uint64(2), b.c.BusStats().Subscribes)
		assert.Equal(t, uint64(1), b.c.BusStats().Resyncs)
		assert.Equal(t, "Bv2:1", ob.State().Data, "every entry invalidated, the observed one refetched")
		assert.True(t, b.q.State("2").IsInvalidated)
		assert.Equal(t, uint64(0), a.c.BusStats().Published, "a resync is local")
		assert.Equal(t, uint64(1), b.c.BusStats().Published, "B's SetData only")
	})
}

// failingBus refuses Subscribe a number of times before it works.
type failingBus struct {
	MemoryBus
	fails atomic.Int32
}

func (b *failingBus) Subscribe(ctx context.Context, s Subscriber) error {
	if b.fails.Add(-1) >= 0 {
		return errors.New("no bus yet")
	}
	return b.MemoryBus.Subscribe(ctx, s)
}

func TestBusSubscribeRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := new(failingBus)
		bus.fails.Store(3)
		var errs atomic.Int32
		b := newReplica(t, bus, "B", BusOnError(func(error) { errs.Add(1) }))
		synctest.Wait()
		assert.Equal(t, uint64(0), b.c.BusStats().Subscribes)
		time.Sleep(time.Second) // backoff: about 100ms, 200ms, 400ms, jittered
		synctest.Wait()
		assert.Equal(t, uint64(1), b.c.BusStats().Subscribes)
		assert.Equal(t, int32(3), errs.Load())
	})
}

// gateBus holds every Publish until it is opened, or fails it while broken.
type gateBus struct {
	MemoryBus
	open   chan struct{}
	broken atomic.Bool
	calls  atomic.Int32
}

func (b *gateBus) Publish(ctx context.Context, ev Event) error {
	b.calls.Add(1)
	select {
	case <-b.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	if b.broken.Load() {
		return errors.New("bus down")
	}
	return b.MemoryBus.Publish(ctx, ev)
}

func TestBusQueueFullDropsAndResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		bus := &gateBus{open: make(chan struct{})}
		a := newReplica(t, bus, "A", BusQueue(2))
		b := newReplica(t, bus, "B")
		ob := b.q.Use(ctx, "1")
		defer ob.Close()
		synctest.Wait()

		a.q.SetData("1", "a0")
		synctest.Wait() // a0 is in Publish, held
		for i := 1; i < 5; i++ {
			a.q.SetData("1", "a"+itoa(i)) // never blocks
		}
		// a1 and a2 wait in the queue; a3 and a4 were dropped.
		assert.Equal(t, uint64(2), a.c.BusStats().Dropped)
		close(bus.open)
		synctest.Wait()
		st := a.c.BusStats()
		assert.Equal(t, uint64(3), st.Published)
		assert.Equal(t, uint64(1), st.ResyncsPublished)
		// B got a0, a1, a2, then the invalidation of everything: it refetched.
		assert.Equal(t, uint64(4), b.c.BusStats().Received)
		assert.Equal(t, "Bv2:1", ob.State().Data)
	})
}

func TestBusPublishErrorResyncsWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := &gateBus{open: make(chan struct{})}
		close(bus.open)
		bus.broken.Store(true)
		var errs atomic.Int32
		a := newReplica(t, bus, "A", BusOnError(func(error) { errs.Add(1) }))
		b := newReplica(t, bus, "B", BusPublish()) // B only receives
		b.q.SetData("1", "b")
		synctest.Wait()

		a.q.SetData("1", "a")
		synctest.Wait()
		assert.Equal(t, uint64(1), a.c.BusStats().PublishErrors)
		time.Sleep(2 * time.Second) // resync retried with backoff, failing
		synctest.Wait()
		retries := bus.calls.Load()
		assert.Greater(t, retries, int32(3))
		assert.Less(t, retries, int32(20), "backoff, not a busy loop")

		bus.broken.Store(false)
		time.Sleep(6 * time.Second) // the longest backoff is 5s
		synctest.Wait()
		assert.Equal(t, uint64(1), a.c.BusStats().ResyncsPublished)
		assert.True(t, b.q.State("1").IsInvalidated, "what the lost SetData changed is refetched instead")
		assert.Equal(t, "b", b.q.State("1").Data)
		n := bus.calls.Load()
		time.Sleep(time.Minute)
		assert.Equal(t, n, bus.calls.Load(), "no more publishing once resynced")
	})
}

func TestBusCloseFlushesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bus := new(MemoryBus)
		b := newReplica(t, bus, "B", BusPublish()) // B only receives
		b.q.SetData("1", "b")
		synctest.Wait()
		a := newReplica(t, bus, "A")
		synctest.Wait()
		a.q.SetData("1", "last words")
		require.NoError(t, a.c.Close())
		synctest.Wait()
		assert.Equal(t, "last words", b.q.State("1").Data)

		// After Close nothing is published.
		a.q.SetData("1", "too late")
		_ = a.c.Invalidate(t.Context(), Filter{})
		synctest.Wait()
		assert.Equal(t, uint64(1), a.c.BusStats().Published)
	})
}

func TestBusUnencodableData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got atomic.Value
		c := NewClient(WithBus(new(MemoryBus), BusOnError(func(err error) { got.Store(err) })))
		defer c.Close()
		q := NewQueryFunc(c, Key{"fn"}, func(ctx context.Context, p string) (func(), error) { return nil, nil })
		q.SetData("1", func() {})
		synctest.Wait()
		assert.Equal(t, uint64(1), c.BusStats().PublishErrors)
		assert.ErrorContains(t, got.Load().(error), "mark the query Local")

		q2 := NewQueryFunc(c, Key{"fn2"}, func(ctx context.Context, p string) (func(), error) { return nil, nil }, Local())
		q2.SetData("1", func() {})
		assert.Equal(t, uint64(1), c.BusStats().PublishErrors)
	})
}

func TestWithoutBus(t *testing.T) {
	c := NewClient()
	defer c.Close()
	assert.Equal(t, BusStats{}, c.BusStats())
	assert.Equal(t, "", c.BusOrigin())
	q := NewQueryFunc(c, Key{"x"}, func(ctx context.Context, p string) (string, error) { return p, nil })
	q.SetData("1", "a")
	require.NoError(t, c.Invalidate(t.Context(), Filter{}))
	c.Remove(Filter{})

	c2 := NewClient(WithBus(new(MemoryBus)))
	defer c2.Close()
	assert.Len(t, c2.BusOrigin(), 16)
	assert.Panics(t, func() { WithBus(nil) })
	assert.Panics(t, func() { BusQueue(0) })
	assert.Panics(t, func() { BusPublish(EventKind(0)) })
}
