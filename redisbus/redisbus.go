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
// The package also holds Store, a qcache.SharedStore on Redis: the shared
// tier of qcache.WithSharedStore, with which N replicas make one upstream
// fetch per key per stale window instead of N.
//
// It is a sub-module so that the root module does not depend on go-redis.
package redisbus

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
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
	unauthenticated                 atomic.Uint64

	warns warnLimiter
}

type config struct {
	channel            string
	minDelay, maxDelay time.Duration
	ping               time.Duration
	maxPayload         int
	onError            func(error)
	logger             *slog.Logger
	signID             string            // "" when not signing
	signKey            []byte            //
	verifyKeys         map[string][]byte // by key ID, the signing key included; nil: no verification
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

// Logger sets the logger of the bus (default: discard). Messages it drops
// (invalid, too large, unauthenticated) are logged at Warn, at most once
// per second per reason, with the number of drops not logged since.
func Logger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithSigningKey signs every event the bus publishes with HMAC-SHA256 under
// key, naming keyID in the message, and turns verification on: from then
// on the bus drops every message that is unsigned, names a key it does not
// know, or whose signature does not match, counting it in
// Stats().Unauthenticated. key verifies too; WithVerifyKeys adds others,
// so that keys can be rotated: first give every replica the new key to
// verify, then make it the signing key everywhere, then retire the old
// one.
//
// The signature covers the channel, the key ID and the event, so a
// message signed for one channel is refused on another. It proves that a
// holder of the key sent the event, not when: whoever can read the channel
// can publish a signed message again later. WithSigningKey panics on an
// empty key ID or one longer than 64 bytes or holding ':', and on a key
// shorter than 16 bytes. The bus keeps a copy of key.
func WithSigningKey(keyID string, key []byte) Option {
	checkKey("WithSigningKey", keyID, key)
	key = bytes.Clone(key)
	return func(c *config) {
		c.signID, c.signKey = keyID, key
		if c.verifyKeys == nil {
			c.verifyKeys = map[string][]byte{}
		}
		c.verifyKeys[keyID] = key
	}
}

// WithVerifyKeys adds keys, by key ID, that signed messages are checked
// against (see WithSigningKey), and turns verification on. Without
// WithSigningKey the bus verifies but publishes unsigned events, which
// verifying replicas drop. It panics on a key ID or key that
// WithSigningKey would refuse. The bus keeps copies of the keys.
func WithVerifyKeys(keys map[string][]byte) Option {
	keys = maps.Clone(keys)
	for id, k := range keys {
		checkKey("WithVerifyKeys", id, k)
		keys[id] = bytes.Clone(k)
	}
	return func(c *config) {
		if c.verifyKeys == nil {
			c.verifyKeys = map[string][]byte{}
		}
		maps.Copy(c.verifyKeys, keys)
	}
}

const maxKeyID = 64

func checkKey(fn, id string, key []byte) {
	switch {
	case id == "" || len(id) > maxKeyID || strings.Contains(id, ":"):
		panic(fmt.Sprintf("redisbus: %s: key ID %q: want 1 to %d bytes without ':'", fn, id, maxKeyID))
	case len(key) < 16:
		panic(fmt.Sprintf("redisbus: %s: key %q is %d bytes: want at least 16", fn, id, len(key)))
	}
}

// New returns a bus on rdb (a *redis.Client, or a cluster or failover
// client: pub/sub goes through it).
func New(rdb redis.UniversalClient, opts ...Option) *Bus {
	if rdb == nil {
		panic("redisbus: New: nil Redis client")
	}
	cfg := config{channel: "qcache", minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second,
		ping: 5 * time.Second, maxPayload: 1 << 20, logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	return &Bus{rdb: rdb, cfg: cfg, warns: warnLimiter{every: time.Second}}
}

// Stats are counters of a Bus since it was made.
type Stats struct {
	Subscribes  uint64 // subscriptions confirmed by Redis, the first and every resubscribe
	Messages    uint64 // valid events received (the bus's own included)
	BadMessages uint64 // messages that were not valid events: counted, reported, dropped
	Errors      uint64 // lost connections and failed (re)subscribes

	// Unauthenticated counts the messages dropped, with verification on,
	// because they were unsigned, named an unknown key or did not match
	// their signature. They are reported too, and not in BadMessages.
	Unauthenticated uint64
}

// Stats returns the bus's counters.
func (b *Bus) Stats() Stats {
	return Stats{Subscribes: b.subscribes.Load(), Messages: b.messages.Load(),
		BadMessages: b.bad.Load(), Errors: b.errs.Load(), Unauthenticated: b.unauthenticated.Load()}
}

// Publish sends ev, as JSON, on the channel, signed with WithSigningKey's
// key if set. It returns when Redis has taken it, not when subscribers
// have applied it. It refuses an event larger than MaxPayload.
func (b *Bus) Publish(ctx context.Context, ev qcache.Event) error {
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("redisbus: encode event: %w", err)
	}
	if len(payload) > b.cfg.maxPayload {
		return fmt.Errorf("redisbus: event of %d bytes exceeds MaxPayload %d", len(payload), b.cfg.maxPayload)
	}
	if b.cfg.signID != "" {
		payload = b.sign(payload)
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

func (b *Bus) deliver(s qcache.Subscriber, msg string) {
	limit := b.cfg.maxPayload
	if b.cfg.verifyKeys != nil {
		limit += sigOverhead
	}
	if len(msg) > limit {
		b.badMessage("too large", fmt.Errorf("%d bytes exceed MaxPayload %d", len(msg), b.cfg.maxPayload))
		return
	}
	payload := msg
	if b.cfg.verifyKeys != nil {
		var reason string
		if payload, reason = b.verify(msg); reason != "" {
			b.unauthenticated.Add(1)
			b.drop(reason, fmt.Errorf("redisbus: unauthenticated message on %q: %s", b.cfg.channel, reason))
			return
		}
	}
	var ev qcache.Event
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		b.badMessage("invalid", err)
		return
	}
	if err := ev.Validate(); err != nil {
		b.badMessage("invalid", err)
		return
	}
	b.messages.Add(1)
	s.Apply(ev)
}

func (b *Bus) badMessage(reason string, err error) {
	b.bad.Add(1)
	b.drop(reason, fmt.Errorf("redisbus: bad message on %q: %w", b.cfg.channel, err))
}

// drop reports a message dropped for reason, and logs it at Warn unless
// one of the same reason was logged less than a second ago.
func (b *Bus) drop(reason string, err error) {
	if log, suppressed := b.warns.allow(reason, time.Now()); log {
		b.cfg.logger.Warn("redisbus: message dropped", "channel", b.cfg.channel, "reason", reason,
			"err", err, "suppressed", suppressed)
	}
	b.report(err)
}

// ---------- signing ----------

// A signed message is "qcsig1:<key ID>:<base64url HMAC-SHA256>:<event JSON>".
const sigPrefix = "qcsig1:"

// sigOverhead bounds what signing adds to an event.
const sigOverhead = len(sigPrefix) + maxKeyID + 1 + 43 + 1

func (b *Bus) mac(keyID string, key []byte, payload string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(b.cfg.channel))
	h.Write([]byte{0})
	h.Write([]byte(keyID))
	h.Write([]byte{0})
	h.Write([]byte(payload))
	return h.Sum(nil)
}

func (b *Bus) sign(payload []byte) []byte {
	out := make([]byte, 0, sigOverhead+len(payload))
	out = append(out, sigPrefix...)
	out = append(out, b.cfg.signID...)
	out = append(out, ':')
	out = base64.RawURLEncoding.AppendEncode(out, b.mac(b.cfg.signID, b.cfg.signKey, string(payload)))
	out = append(out, ':')
	return append(out, payload...)
}

// verify returns the event of a signed message, or why it is refused.
func (b *Bus) verify(msg string) (payload, reason string) {
	rest, ok := strings.CutPrefix(msg, sigPrefix)
	if !ok {
		return "", "unsigned"
	}
	keyID, rest, ok1 := strings.Cut(rest, ":")
	sig, payload, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return "", "malformed signature"
	}
	key, ok := b.cfg.verifyKeys[keyID]
	if !ok {
		return "", "unknown key"
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, b.mac(keyID, key, payload)) {
		return "", "bad signature"
	}
	return payload, ""
}

// warnLimiter lets one log line per reason through per period, and counts
// the ones it holds back.
type warnLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

// allow reports whether a line for reason may be logged at now, and how
// many were held back since the last one.
func (l *warnLimiter) allow(reason string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if last, seen := l.last[reason]; seen && now.Sub(last) < l.every {
		l.held[reason]++
		return false, 0
	}
	suppressed = l.held[reason]
	l.last[reason], l.held[reason] = now, 0
	return true, suppressed
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
