// Package redisbus carries qcache events between the replicas of a service
// on Redis pub/sub: a qcache.Bus on github.com/redis/go-redis/v9.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "redis:6379"})
//	client := qcache.NewClient(qcache.WithBus(redisbus.New(rdb, redisbus.Channel("orders-svc"))))
//	defer client.Close() // before rdb.Close
//
// Every replica subscribes to one channel per application and publishes the
// JSON form of qcache.Event on it. Pub/sub delivers at most once and only to
// connected subscribers, so the bus watches its connection: a lost
// connection is noticed (at once when Redis closes it, within two ping
// intervals when the network silently drops it), re-established with
// backoff and jitter, and after every resubscribe the client is told to
// invalidate all its entries (qcache.Subscriber.Subscribed). A message that
// is not a valid event is counted and reported, never applied.
//
// MaxPayload bounds what the bus accepts, but go-redis reads a message
// whole before the bus sees its size, so a hostile PUBLISH of 64 MiB would
// cost every replica 64 MiB of allocation before it is refused. Bound it
// in Redis instead, where such a message never reaches the replicas:
//
//	client-output-buffer-limit pubsub 4mb 2mb 60
//
// (redis.conf, or CONFIG SET client-output-buffer-limit "pubsub 4mb 2mb 60";
// about 4× and 2× MaxPayload). Redis then closes a subscriber's connection
// instead of queueing more than 4 MiB for it; the bus resubscribes and the
// client resyncs. Redis's default, "pubsub 32mb 8mb 60", lets a 24 MiB
// message through to every replica.
//
// It is a sub-module so that the root module does not depend on go-redis.
package redisbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/wait"
	"github.com/redis/go-redis/v9"
)

// Bus is a qcache.Bus on Redis pub/sub. Use one per qcache.Client; it is
// safe for concurrent use. It does not close the Redis client it was given.
type Bus struct {
	rdb redis.UniversalClient
	cfg config

	subscribes, messages, bad, errs atomic.Uint64
}

type config struct {
	channel            string
	minDelay, maxDelay time.Duration
	ping               time.Duration
	maxPayload         int
	onError            func(error)
}

// Option configures a Bus in New.
type Option func(*config)

// Channel sets the pub/sub channel (default "qcache"): one per application,
// shared by all its replicas and by no other application.
func Channel(name string) Option {
	if name == "" {
		panic("redisbus: Channel: empty name")
	}
	return func(c *config) { c.channel = name }
}

// Reconnect sets the bounds of the delay between attempts to resubscribe
// (default 100ms and 5s): it doubles after every failed attempt, with
// jitter, and goes back to min after a subscribe succeeds. It panics unless
// 0 < min ≤ max.
func Reconnect(min, max time.Duration) Option {
	if min <= 0 || max < min {
		panic(fmt.Sprintf("redisbus: Reconnect(%v, %v): want 0 < min <= max", min, max))
	}
	return func(c *config) { c.minDelay, c.maxDelay = min, max }
}

// PingInterval sets how long the subscription may stay silent before the
// bus pings Redis (default 5s); a ping unanswered for as long again drops
// the connection, which is then re-established. It panics unless d is
// positive.
func PingInterval(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("redisbus: PingInterval(%v): not positive", d))
	}
	return func(c *config) { c.ping = d }
}

// MaxPayload bounds the size of a message the bus accepts (default 1 MiB);
// a larger one is counted as bad. Publish refuses larger events, so a
// replica never sends one. A larger message from elsewhere is read whole
// by go-redis before it is refused: set Redis's client-output-buffer-limit
// for pubsub (see the package documentation) so that it never arrives.
func MaxPayload(n int) Option {
	if n <= 0 {
		panic(fmt.Sprintf("redisbus: MaxPayload(%d): not positive", n))
	}
	return func(c *config) { c.maxPayload = n }
}

// OnError sets a function told of every error of the bus: lost
// connections, failed resubscribes and bad messages. It is called from the
// subscribing goroutine and must not block.
func OnError(f func(error)) Option { return func(c *config) { c.onError = f } }

// New returns a bus on rdb (a *redis.Client, or a cluster or failover
// client: pub/sub goes through it).
func New(rdb redis.UniversalClient, opts ...Option) *Bus {
	if rdb == nil {
		panic("redisbus: New: nil Redis client")
	}
	cfg := config{channel: "qcache", minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second,
		ping: 5 * time.Second, maxPayload: 1 << 20}
	for _, o := range opts {
		o(&cfg)
	}
	return &Bus{rdb: rdb, cfg: cfg}
}

// Stats are counters of a Bus since it was made.
type Stats struct {
	Subscribes  uint64 // subscriptions confirmed by Redis, the first and every resubscribe
	Messages    uint64 // valid events received (the bus's own included)
	BadMessages uint64 // messages that were not valid events: counted, reported, dropped
	Errors      uint64 // lost connections and failed (re)subscribes
}

// Stats returns the bus's counters.
func (b *Bus) Stats() Stats {
	return Stats{Subscribes: b.subscribes.Load(), Messages: b.messages.Load(),
		BadMessages: b.bad.Load(), Errors: b.errs.Load()}
}

// Publish sends ev, as JSON, on the channel. It returns when Redis has taken
// it, not when subscribers have applied it.
func (b *Bus) Publish(ctx context.Context, ev qcache.Event) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("redisbus: encode event: %w", err)
	}
	if len(payload) > b.cfg.maxPayload {
		return fmt.Errorf("redisbus: event of %d bytes exceeds MaxPayload %d", len(payload), b.cfg.maxPayload)
	}
	if err := b.rdb.Publish(ctx, b.cfg.channel, payload).Err(); err != nil {
		return fmt.Errorf("redisbus: publish on %q: %w", b.cfg.channel, err)
	}
	return nil
}

// Subscribe delivers the events of the channel to s until ctx ends, then
// returns nil. It calls s.Subscribed whenever Redis confirms the
// subscription: first, and after every reconnect.
func (b *Bus) Subscribe(ctx context.Context, s qcache.Subscriber) error {
	failures := 0
	for {
		err := b.session(ctx, s, &failures)
		if ctx.Err() != nil {
			return nil
		}
		b.errs.Add(1)
		b.report(fmt.Errorf("redisbus: subscription to %q lost: %w", b.cfg.channel, err))
		d := b.delay(failures)
		failures++
		if !wait.Sleep(ctx, d) {
			return nil
		}
	}
}

// session subscribes on a connection of its own and delivers until the
// connection fails or ctx ends.
func (b *Bus) session(ctx context.Context, s qcache.Subscriber, failures *int) error {
	ps := b.rdb.Subscribe(ctx, b.cfg.channel)
	defer ps.Close()
	// A read does not watch ctx: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.cfg.ping)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if pinged {
				return fmt.Errorf("no answer to ping within %v", b.cfg.ping)
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == b.cfg.channel {
				b.subscribes.Add(1)
				*failures = 0
				s.Subscribed()
			}
		case *redis.Message:
			b.deliver(s, m.Payload)
		}
	}
}

func (b *Bus) deliver(s qcache.Subscriber, payload string) {
	if len(payload) > b.cfg.maxPayload {
		b.badMessage(fmt.Errorf("%d bytes exceed MaxPayload %d", len(payload), b.cfg.maxPayload))
		return
	}
	var ev qcache.Event
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		b.badMessage(err)
		return
	}
	if err := ev.Validate(); err != nil {
		b.badMessage(err)
		return
	}
	b.messages.Add(1)
	s.Apply(ev)
}

func (b *Bus) badMessage(err error) {
	b.bad.Add(1)
	b.report(fmt.Errorf("redisbus: bad message on %q: %w", b.cfg.channel, err))
}

func (b *Bus) report(err error) {
	if b.cfg.onError != nil {
		b.cfg.onError(err)
	}
}

// delay is the wait before resubscribe attempt n (0 for the first):
// min·2^n capped at max, drawn from its upper half.
func (b *Bus) delay(n int) time.Duration {
	d := b.cfg.minDelay
	for i := 0; i < n && d < b.cfg.maxDelay; i++ {
		d *= 2
	}
	d = min(d, b.cfg.maxDelay)
	return d/2 + rand.N(d/2+1)
}
