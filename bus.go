package qcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache/internal/backoff"
	"github.com/qcache-go/qcache/internal/wait"
)

// ---------- events ----------

// EventKind says what happened to the entries an Event names.
type EventKind int

const (
	// EventInvalidate: the entries Key and Exact select were invalidated;
	// receivers invalidate theirs and refetch as Refetch says.
	EventInvalidate EventKind = iota + 1
	// EventSetData: the entry whose key is exactly Key got Data (JSON);
	// receivers decode it into their query's T and set it, on entries they
	// already hold.
	EventSetData
	// EventRemove: the entries Key and Exact select were removed;
	// receivers remove theirs (observed entries are reset and refetched).
	EventRemove
)

var eventKindNames = [...]string{EventInvalidate: "invalidate", EventSetData: "setData", EventRemove: "remove"}

// String returns "invalidate", "setData" or "remove".
func (k EventKind) String() string {
	if k.valid() {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

func (k EventKind) valid() bool { return k >= EventInvalidate && k <= EventRemove }

// MarshalText encodes the kind as its name, so that events read well on the
// wire. It fails for an unknown kind.
func (k EventKind) MarshalText() ([]byte, error) {
	if !k.valid() {
		return nil, fmt.Errorf("qcache: unknown event kind %d", int(k))
	}
	return []byte(eventKindNames[k]), nil
}

// UnmarshalText decodes a kind from its name; an unknown name is an error.
func (k *EventKind) UnmarshalText(b []byte) error {
	for i, n := range eventKindNames {
		if n != "" && n == string(b) {
			*k = EventKind(i)
			return nil
		}
	}
	return fmt.Errorf("qcache: unknown event kind %q", b)
}

// Event is what a client publishes on its Bus when its entries change, and
// what it applies when another client's event arrives. Its JSON form is the
// wire format of bus implementations that carry bytes (redisbus does).
//
// A Filter's Predicate cannot travel, nor can its conditions on the state
// (Stale, FetchStatus, Where), which another replica's entries do not
// share: an invalidation or removal made with one is published with its
// Key and Exact only, so that receivers select at least the entries the
// sender did (an invalidation invalidates more, which costs refetches but
// never serves stale data; a removal with a Predicate or a state condition
// is published as an invalidation, so that entries the filter spared are
// not dropped elsewhere).
type Event struct {
	Origin  string          `json:"origin"`            // the publishing client (BusOrigin); receivers ignore their own
	Kind    EventKind       `json:"kind"`              // what happened
	Key     Key             `json:"key,omitempty"`     // prefix of the keys, or the exact key; nil selects every entry
	Exact   bool            `json:"exact,omitempty"`   // Key is exact, not a prefix (always so for EventSetData)
	Refetch RefetchType     `json:"refetch,omitempty"` // for EventInvalidate: which invalidated entries refetch
	Data    json.RawMessage `json:"data,omitempty"`    // for EventSetData: the value as JSON
}

// Validate reports what makes ev unusable: an unknown kind or refetch type,
// or a SetData event without a key or data. Clients ignore (and count)
// events that fail it; buses may call it to refuse bad payloads early.
func (ev Event) Validate() error {
	switch {
	case !ev.Kind.valid():
		return fmt.Errorf("qcache: event: unknown kind %d", int(ev.Kind))
	case ev.Refetch < RefetchActive || ev.Refetch > RefetchNone:
		return fmt.Errorf("qcache: event: unknown refetch type %d", int(ev.Refetch))
	case ev.Kind == EventSetData && len(ev.Key) == 0:
		return errors.New("qcache: event: setData without a key")
	case ev.Kind == EventSetData && len(ev.Data) == 0:
		return errors.New("qcache: event: setData without data")
	}
	return nil
}

// ---------- the bus ----------

// Bus carries events between clients, usually clients of the replicas of one
// service, each with its own cache. A client made WithBus publishes what
// happens to its entries (Client.Invalidate, Client.Remove, and a query's
// SetData, Update, Invalidate, InvalidateAll and Remove) and applies what
// the others publish, so that a write or an invalidation on one replica
// reaches the others within the bus's latency rather than their StaleTime.
//
// The package holds MemoryBus (one process); the sub-module
// github.com/qcache-go/qcache/redisbus implements Bus on Redis pub/sub.
// A Bus may lose events (pub/sub does while it is disconnected): it says so
// by calling Subscriber.Subscribed again after it has resubscribed, and the
// client then invalidates every entry it holds.
type Bus interface {
	// Publish sends ev to every subscriber, the publisher's own included
	// (clients ignore their own events). It must keep the order of the
	// events of one publisher, and should return once the event has left
	// (it does not wait for subscribers to apply it).
	Publish(ctx context.Context, ev Event) error
	// Subscribe delivers every event published from now on to s until ctx
	// ends. It calls s.Subscribed each time it has (re)subscribed, before
	// the events that follow, and s.Apply for each event, one call at a
	// time. It returns when ctx ends, or early with an error it cannot
	// recover from; the client then calls it again after a backoff, and
	// treats the new subscription as a resubscribe.
	Subscribe(ctx context.Context, s Subscriber) error
}

// Subscriber is what a Bus delivers to: a client's receiving side.
type Subscriber interface {
	// Subscribed says that the subscription is (again) in place. Every call
	// after the first means events may have been lost meanwhile: the client
	// invalidates all its entries, refetching the observed ones.
	Subscribed()
	// Apply applies one event. It does not block for long (it starts
	// refetches, it does not wait for them), and it never publishes.
	Apply(ev Event)
}

// BusStats are counters of a client's bus traffic since it was made.
type BusStats struct {
	Published        uint64 `json:"published"`         // events the Bus accepted
	Dropped          uint64 `json:"dropped"`           // events dropped because the publish queue was full
	PublishErrors    uint64 `json:"publish_errors"`    // events that could not be encoded or that the Bus refused
	ResyncsPublished uint64 `json:"resyncs_published"` // invalidations of every entry published to make up for dropped or refused events
	Received         uint64 `json:"received"`          // valid events of other clients
	Rejected         uint64 `json:"rejected"`          // events that failed Event.Validate, and SetData whose data did not decode into a query's T
	Subscribes       uint64 `json:"subscribes"`        // subscriptions the Bus reported (Subscriber.Subscribed)
	Resyncs          uint64 `json:"resyncs"`           // times every local entry was invalidated because the Bus resubscribed
}

// BusStats returns the client's bus counters; all zero without WithBus.
func (c *Client) BusStats() BusStats {
	l := c.bus
	if l == nil {
		return BusStats{}
	}
	return BusStats{
		Published:        l.published.Load(),
		Dropped:          l.dropped.Load(),
		PublishErrors:    l.publishErrors.Load(),
		ResyncsPublished: l.resyncsSent.Load(),
		Received:         l.received.Load(),
		Rejected:         l.rejected.Load(),
		Subscribes:       l.subscribes.Load(),
		Resyncs:          l.resyncs.Load(),
	}
}

// BusOrigin returns the origin id of the client's events ("" without
// WithBus).
func (c *Client) BusOrigin() string {
	if c.bus == nil {
		return ""
	}
	return c.bus.cfg.origin
}

// busLink is a client's end of its Bus: the publish queue and its goroutine,
// the subscribe goroutine, and the counters.
type busLink struct {
	c     *Client
	cfg   busConfig
	queue chan Event
	lost  atomic.Bool   // an event was dropped or refused: the others must resync
	kick  chan struct{} // wakes the publisher to send the resync

	published, dropped, publishErrors, resyncsSent atomic.Uint64
	received, rejected, subscribes, resyncs        atomic.Uint64
}

const (
	busPublishTimeout = 5 * time.Second // per Publish call
	busCloseFlush     = time.Second     // Close publishes what is queued for at most this long
)

// startBus starts the bus goroutines of a client made WithBus; NewClient
// calls it.
func (c *Client) startBus() {
	if c.cfg.bus == nil || c.cfg.bus.bus == nil {
		return
	}
	cfg := *c.cfg.bus
	if cfg.origin == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.origin = hex.EncodeToString(b[:])
	}
	l := &busLink{c: c, cfg: cfg, queue: make(chan Event, cfg.queue), kick: make(chan struct{}, 1)}
	c.bus = l
	c.goroutine(l.publishLoop)
	c.goroutine(l.subscribeLoop)
}

func (l *busLink) report(err error) {
	l.c.cfg.logger.WarnContext(l.c.ctx, "qcache: bus", "origin", l.cfg.origin, "err", err)
	if l.cfg.onError != nil {
		l.cfg.onError(err)
	}
}

// enqueue hands ev to the publisher without blocking: when the queue is
// full, ev is dropped and the others are told to resync later.
func (l *busLink) enqueue(ev Event) {
	ev.Origin = l.cfg.origin
	select {
	case l.queue <- ev:
	default:
		l.dropped.Add(1)
		l.markLost()
		l.hookDropped(ev.Kind, "queue full")
	}
}

func (l *busLink) hookDropped(kind EventKind, reason string) {
	if h := l.c.cfg.hooks.BusDropped; h != nil {
		l.c.callHook("BusDropped", func() { h(kind, reason) })
	}
}

func (l *busLink) markLost() {
	l.lost.Store(true)
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// publishLoop publishes queued events in order. After an event was dropped
// or refused, it publishes one invalidation of every entry once the queue is
// empty, retrying with backoff until the Bus takes it. On Close it publishes
// what is still queued, for at most busCloseFlush.
func (l *busLink) publishLoop() {
	// Publishing outlives Close by at most busCloseFlush.
	ctx, cancel := context.WithCancel(context.WithoutCancel(l.c.ctx))
	var mu sync.Mutex
	var deadline *time.Timer
	stop := context.AfterFunc(l.c.ctx, func() {
		mu.Lock()
		deadline = time.AfterFunc(busCloseFlush, cancel)
		mu.Unlock()
	})
	// A failed resync is retried after a backoff; retrying says one is due.
	// (An AfterFunc, not a timer channel: see internal/wait.)
	var retry *time.Timer
	retryC := make(chan struct{}, 1)
	retrying := false
	defer func() {
		stop()
		cancel()
		mu.Lock()
		if deadline != nil {
			deadline.Stop()
		}
		mu.Unlock()
		if retry != nil {
			retry.Stop()
		}
	}()
	failures := 0
	for {
		select {
		case ev := <-l.queue:
			l.publish(ctx, ev)
		case <-l.kick:
		case <-retryC:
			retrying = false
		case <-l.c.ctx.Done():
			l.flush(ctx)
			return
		}
		if len(l.queue) > 0 || retrying || !l.lost.Load() {
			continue
		}
		if l.sendResync(ctx) {
			failures = 0
			continue
		}
		d := backoff.Jittered(backoff.Exponential(failures, 100*time.Millisecond, 5*time.Second))
		failures++
		retrying = true
		if retry == nil {
			retry = time.AfterFunc(d, func() { retryC <- struct{}{} })
		} else {
			retry.Reset(d)
		}
	}
}

// flush publishes what is queued, then the resync if one is owed, until ctx
// ends.
func (l *busLink) flush(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case ev := <-l.queue:
			l.publish(ctx, ev)
			continue
		default:
		}
		if l.lost.Load() {
			l.sendResync(ctx)
		}
		return
	}
}

func (l *busLink) publish(ctx context.Context, ev Event) bool {
	ctx, cancel := context.WithTimeout(ctx, busPublishTimeout)
	defer cancel()
	if err := l.cfg.bus.Publish(ctx, ev); err != nil {
		l.publishErrors.Add(1)
		l.lost.Store(true)
		l.report(fmt.Errorf("qcache: bus: publish %s %s: %w", ev.Kind, ev.Key, err))
		l.hookDropped(ev.Kind, "publish failed")
		return false
	}
	l.published.Add(1)
	if h := l.c.cfg.hooks.BusPublished; h != nil {
		l.c.callHook("BusPublished", func() { h(ev.Kind) })
	}
	return true
}

func (l *busLink) sendResync(ctx context.Context) bool {
	l.lost.Store(false)
	ev := Event{Origin: l.cfg.origin, Kind: EventInvalidate}
	ctx, cancel := context.WithTimeout(ctx, busPublishTimeout)
	defer cancel()
	if err := l.cfg.bus.Publish(ctx, ev); err != nil {
		l.lost.Store(true)
		l.report(fmt.Errorf("qcache: bus: publish resync: %w", err))
		return false
	}
	l.resyncsSent.Add(1)
	return true
}

// subscribeLoop keeps the client subscribed until Close.
func (l *busLink) subscribeLoop() {
	ctx := l.c.ctx
	for n := 0; ; n++ {
		err := l.cfg.bus.Subscribe(ctx, (*busSubscriber)(l))
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned before the client closed")
		}
		l.report(fmt.Errorf("qcache: bus: subscribe: %w", err))
		if !wait.Sleep(ctx, backoff.Jittered(backoff.Exponential(n, 100*time.Millisecond, 10*time.Second))) {
			return
		}
	}
}

// busSubscriber is the Subscriber side of a busLink.
type busSubscriber busLink

func (s *busSubscriber) Subscribed() {
	l := (*busLink)(s)
	if l.subscribes.Add(1) == 1 || l.c.closed.Load() {
		return
	}
	l.resyncs.Add(1)
	l.c.cfg.logger.InfoContext(l.c.ctx, "qcache: bus resubscribed; invalidating every entry", "origin", l.cfg.origin)
	if h := l.c.cfg.hooks.BusResync; h != nil {
		l.c.callHook("BusResync", h)
	}
	for _, e := range l.c.matching(Filter{}) {
		e.invalidate(context.Background(), RefetchActive, wantPin)
	}
}

func (s *busSubscriber) Apply(ev Event) {
	l := (*busLink)(s)
	c := l.c
	if ev.Origin == l.cfg.origin || c.closed.Load() {
		return
	}
	if err := ev.Validate(); err != nil {
		l.rejected.Add(1)
		l.report(fmt.Errorf("qcache: bus: event from %q: %w", ev.Origin, err))
		l.hookDropped(ev.Kind, "invalid")
		return
	}
	l.received.Add(1)
	if h := c.cfg.hooks.BusReceived; h != nil {
		c.callHook("BusReceived", func() { h(ev.Kind) })
	}
	f := Filter{Key: ev.Key, Exact: ev.Exact || ev.Kind == EventSetData}
	for _, e := range c.matching(f) {
		switch ev.Kind {
		case EventInvalidate:
			e.invalidate(context.Background(), ev.Refetch, wantPin)
		case EventRemove:
			e.remove()
		case EventSetData:
			if err := e.setJSON(ev.Data); err != nil {
				l.rejected.Add(1)
				l.report(fmt.Errorf("qcache: bus: setData %s from %q: %w", ev.Key, ev.Origin, err))
			}
		}
	}
}

// setJSON decodes data into T and sets it as the entry's data, as SetData
// does, without publishing. It does nothing for a Local query or a removed
// entry.
func (e *entry[P, T]) setJSON(data []byte) error {
	if e.q.cfg.local {
		return nil
	}
	v, err := decodeValue[T](data)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.isGone() {
		e.setDataLocked(v)
	}
	return nil
}

// ---------- options ----------

// BusOption configures a client's end of its Bus in WithBus.
type BusOption func(*busConfig)

type busConfig struct {
	bus     Bus
	origin  string
	publish uint8 // bit 1<<EventKind per kind published
	queue   int
	onError func(error)
}

const allEventKinds = 1<<EventInvalidate | 1<<EventSetData | 1<<EventRemove

// WithBus connects the client to b: it publishes what happens to its
// entries and applies what other clients publish (see Bus). By default it
// publishes every kind of event (BusPublish narrows that), from a queue of
// 1024 events (BusQueue), under a random origin id (BusOrigin). NewClient
// then starts two goroutines, one publishing and one subscribed, which
// Close ends; Close first publishes what is still queued, for at most one
// second.
//
// Publishing never blocks the caller: events go to the queue, and when it is
// full they are dropped (counted in BusStats.Dropped). After an event was
// dropped or refused by the bus, the client publishes one invalidation of
// every entry once the bus takes events again, so that no replica keeps data
// that a lost event would have invalidated.
//
// What is applied from others is never published again; what the client
// does on its own (a WebSocket resync, InvalidateEvery, garbage collection,
// eviction) is published only when it goes through Client.Invalidate,
// Client.Remove or a query's SetData, Update, Invalidate, InvalidateAll or
// Remove.
func WithBus(b Bus, opts ...BusOption) ClientOption {
	if b == nil {
		panic("qcache: WithBus: nil Bus")
	}
	cfg := busConfig{bus: b, publish: allEventKinds, queue: 1024}
	for _, o := range opts {
		o(&cfg)
	}
	return func(c *clientConfig) {
		cfg := cfg
		c.bus = &cfg
	}
}

// BusPublish sets the kinds of event the client publishes (default all
// three). BusPublish(EventInvalidate, EventRemove) keeps data off the bus:
// other replicas then refetch instead of receiving values. With no kind the
// client only receives. The client applies every kind it receives,
// whatever it publishes.
func BusPublish(kinds ...EventKind) BusOption {
	var mask uint8
	for _, k := range kinds {
		if !k.valid() {
			panic(fmt.Sprintf("qcache: BusPublish: unknown event kind %d", int(k)))
		}
		mask |= 1 << k
	}
	return func(c *busConfig) { c.publish = mask }
}

// BusOrigin sets the client's origin id, carried by its events so that it
// ignores them when they come back (default: 16 random hex digits). Two
// clients on one bus must not share it.
func BusOrigin(id string) BusOption { return func(c *busConfig) { c.origin = id } }

// BusQueue sets how many events may wait to be published (default 1024).
// It panics unless n is positive.
func BusQueue(n int) BusOption {
	mustBePositive("BusQueue", n)
	return func(c *busConfig) { c.queue = n }
}

// BusOnError sets a function told of every bus error: events that could not
// be encoded or published, events received that were invalid or whose data
// did not decode into the query's T, and Subscribe failures. It is called
// from the client's bus goroutines and from callers of SetData, and must not
// block. Every such error is also logged (WithLogger) at Warn level.
func BusOnError(f func(error)) BusOption { return func(c *busConfig) { c.onError = f } }

// ---------- publishing hooks ----------

// publishes reports whether the client publishes events of kind k.
func (c *Client) publishes(k EventKind) bool {
	return c.bus != nil && c.bus.cfg.publish&(1<<k) != 0 && !c.closed.Load()
}

// publishFilter publishes an invalidation or removal made through
// Client.Invalidate or Client.Remove. A Predicate and the conditions on
// the state do not travel (see Event).
func (c *Client) publishFilter(k EventKind, f Filter) {
	if (f.Predicate != nil || f.onState()) && k == EventRemove {
		k, f.Refetch = EventInvalidate, RefetchActive
	}
	if !c.publishes(k) {
		return
	}
	ev := Event{Kind: k, Key: append(Key(nil), f.Key...), Exact: f.Exact}
	if k == EventInvalidate {
		ev.Refetch = f.Refetch
	}
	c.bus.enqueue(ev)
}

// publishKey publishes Query.Invalidate(p) or Query.Remove(p), whether or
// not this client holds p's entry.
func (q *Query[P, T]) publishKey(k EventKind, p P) {
	if q.cfg.local || !q.c.publishes(k) {
		return
	}
	key, err := q.keyFn(p)
	if err != nil {
		return
	}
	q.c.bus.enqueue(Event{Kind: k, Key: key, Exact: true})
}

// publishAll publishes Query.InvalidateAll as an invalidation of the keys
// that start with the query's static prefix: wider when other queries share
// it, never narrower.
func (q *Query[P, T]) publishAll() {
	if q.cfg.local || !q.c.publishes(EventInvalidate) {
		return
	}
	q.c.bus.enqueue(Event{Kind: EventInvalidate, Key: append(Key(nil), q.static...)})
}

// publishSetData publishes SetData or Update of p's entry, and writes it
// through to the shared tier (shared.go).
func (q *Query[P, T]) publishSetData(p P, v T) {
	if q.sharedFor() != nil {
		if key, err := q.keyFn(p); err == nil {
			q.sharedSetData(key, v)
		}
	}
	if q.cfg.local || !q.c.publishes(EventSetData) {
		return
	}
	key, err := q.keyFn(p)
	if err != nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		l := q.c.bus
		l.publishErrors.Add(1)
		l.report(fmt.Errorf("qcache: bus: setData %s: encode %T (mark the query Local): %w", key, v, err))
		return
	}
	q.c.bus.enqueue(Event{Kind: EventSetData, Key: key, Exact: true, Data: data})
}

// ---------- in memory ----------

// MemoryBus is a Bus within one process: for tests, and for several clients
// of one process that must see each other's writes. Publish never blocks and
// never drops: each subscription has its own unbounded queue, delivered in
// order by the subscriber's goroutine. Events are copied, as a wire would.
// The zero MemoryBus is ready to use.
type MemoryBus struct {
	mu   sync.Mutex
	subs map[*memorySub]struct{}
}

type memorySub struct {
	mu      sync.Mutex
	pending []Event
	wake    chan struct{}
}

// Publish queues ev for every current subscription and returns at once.
func (b *MemoryBus) Publish(ctx context.Context, ev Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ev.Key = append(Key(nil), ev.Key...)
	ev.Data = append(json.RawMessage(nil), ev.Data...)
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		s.mu.Lock()
		s.pending = append(s.pending, ev)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Subscribe delivers the events published from now on to s until ctx ends,
// then returns nil. It calls s.Subscribed once, first.
func (b *MemoryBus) Subscribe(ctx context.Context, s Subscriber) error {
	sub := &memorySub{wake: make(chan struct{}, 1)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*memorySub]struct{}{}
	}
	b.subs[sub] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, sub)
		b.mu.Unlock()
	}()
	s.Subscribed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.wake:
		}
		sub.mu.Lock()
		evs := sub.pending
		sub.pending = nil
		sub.mu.Unlock()
		for _, ev := range evs {
			if ctx.Err() != nil {
				return nil
			}
			s.Apply(ev)
		}
	}
}
