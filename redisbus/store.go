package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/redis/go-redis/v9"
)

// Store is a qcache.SharedStore on Redis: the shared tier of the replicas
// of a service (qcache.WithSharedStore), so that they make one upstream
// fetch per key per stale window instead of one each.
//
//	store := redisbus.NewStore(rdb, redisbus.StorePrefix("orders-svc:"))
//	defer store.Close() // after client.Close
//	client := qcache.NewClient(qcache.WithSharedStore(store), qcache.WithBus(redisbus.New(rdb)))
//
// Under StorePrefix (default "qcache:") it keeps, per key (the key's
// segments as a JSON array):
//
//	v:<key>     the value: "qc1 <version> <DataUpdatedAt, ns> d\n<JSON>", with a TTL
//	l:<key>     the lease of the replica fetching the key: SET NX PX, released by a Lua script that checks the token
//	x:<key>     the version of the last invalidation of exactly the key (and of its last SetData)
//	p:<prefix>  the version of the last invalidation of a key prefix
//	seq         the version counter
//
// and publishes the key on the channel "<prefix>notify" whenever a value is
// stored or a lease released, so that waiting replicas look again at once
// rather than at their next poll. It uses a channel of its own, not the
// bus's: the bus would count these messages as bad events.
//
// Load reads the value, the counter and the key's marks in one MGET, and
// every write is one Lua script, so each call is one round trip. All keys
// of a call must be on one node: a single Redis, or a failover (Sentinel)
// client; not Redis Cluster. The counter has no TTL: under a maxmemory
// policy that may evict it (allkeys-*), values may be refetched needlessly
// after an eviction, never served stale.
type Store struct {
	rdb redis.UniversalClient
	cfg storeConfig

	ps   *redis.PubSub
	done chan struct{} // closed when the notification goroutine has returned

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // by encoded key
	closed  bool
}

type storeConfig struct {
	prefix   string
	leaseTTL time.Duration
	maxTTL   time.Duration
	maxBytes int
	poll     time.Duration
}

// StoreOption configures a Store in NewStore.
type StoreOption func(*storeConfig)

// StorePrefix sets the prefix of every Redis key and of the notification
// channel (default "qcache:"): one per application.
func StorePrefix(p string) StoreOption { return func(c *storeConfig) { c.prefix = p } }

// StoreLeaseTTL sets how long a replica's lease on a key lasts (default
// 10 s): the longest the others wait for a replica that died while
// fetching. A fetch that takes longer lets the others fetch too. It panics
// unless d is at least a millisecond.
func StoreLeaseTTL(d time.Duration) StoreOption {
	if d < time.Millisecond {
		panic(fmt.Sprintf("redisbus: StoreLeaseTTL(%v): less than 1ms", d))
	}
	return func(c *storeConfig) { c.leaseTTL = d }
}

// StoreMaxTTL caps the TTL of values (the query's GCTime; default 1 h) and
// is the TTL of invalidation marks, which must outlive the values they
// concern. TTLs under a second are raised to a second. It panics unless d
// is at least a second.
func StoreMaxTTL(d time.Duration) StoreOption {
	if d < time.Second {
		panic(fmt.Sprintf("redisbus: StoreMaxTTL(%v): less than 1s", d))
	}
	return func(c *storeConfig) { c.maxTTL = d }
}

// StoreMaxValueBytes bounds the JSON of a shared value (default 1 MiB). A
// larger value is not shared: Store records that the key is too large, so
// that every replica fetches it itself without waiting for the others, and
// returns an error wrapping qcache.ErrSharedValueTooLarge. It panics unless
// n is positive.
func StoreMaxValueBytes(n int) StoreOption {
	if n <= 0 {
		panic(fmt.Sprintf("redisbus: StoreMaxValueBytes(%d): not positive", n))
	}
	return func(c *storeConfig) { c.maxBytes = n }
}

// StorePoll sets how often a waiting replica looks again without a
// notification (default 1 s): pub/sub loses what is published while the
// store's subscription reconnects. It panics unless d is positive.
func StorePoll(d time.Duration) StoreOption {
	if d <= 0 {
		panic(fmt.Sprintf("redisbus: StorePoll(%v): not positive", d))
	}
	return func(c *storeConfig) { c.poll = d }
}

// NewStore returns a Store on rdb and subscribes to its notification
// channel (go-redis resubscribes after a lost connection). Close ends the
// subscription; the Store does not close rdb.
func NewStore(rdb redis.UniversalClient, opts ...StoreOption) *Store {
	if rdb == nil {
		panic("redisbus: NewStore: nil Redis client")
	}
	cfg := storeConfig{prefix: "qcache:", leaseTTL: 10 * time.Second, maxTTL: time.Hour, maxBytes: 1 << 20,
		poll: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	s := &Store{rdb: rdb, cfg: cfg, done: make(chan struct{}), waiters: map[string]map[chan struct{}]struct{}{}}
	s.ps = rdb.Subscribe(context.Background(), s.channel())
	msgs := s.ps.Channel()
	go func() {
		defer close(s.done)
		for m := range msgs {
			s.wake(m.Payload)
		}
	}()
	return s
}

// Close ends the notification subscription and wakes every watch. It does
// not close the Redis client. Close the qcache.Client first.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	for _, ws := range s.waiters {
		for ch := range ws {
			close(ch)
		}
	}
	s.waiters = nil
	s.mu.Unlock()
	err := s.ps.Close()
	<-s.done
	return err
}

func (s *Store) channel() string { return s.cfg.prefix + "notify" }

// encode returns the key's segments as a JSON array: unambiguous, whatever
// the segments hold.
func encode(k qcache.Key) string {
	if k == nil {
		k = qcache.Key{}
	}
	b, _ := json.Marshal([]string(k))
	return string(b)
}

func (s *Store) valueKey(id string) string { return s.cfg.prefix + "v:" + id }

// ValueKey returns the Redis key that holds key's value (for inspection and
// tests).
func (s *Store) ValueKey(key qcache.Key) string { return s.valueKey(encode(key)) }

func (s *Store) seqKey() string { return s.cfg.prefix + "seq" }

// Load implements qcache.SharedStore.
func (s *Store) Load(ctx context.Context, key qcache.Key) (qcache.SharedLookup, error) {
	id := encode(key)
	keys := make([]string, 0, len(key)+4)
	keys = append(keys, s.seqKey(), s.valueKey(id), s.cfg.prefix+"x:"+id)
	for i := 0; i <= len(key); i++ {
		keys = append(keys, s.cfg.prefix+"p:"+encode(key[:i]))
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return qcache.SharedLookup{}, fmt.Errorf("redisbus: load %s: %w", key, err)
	}
	var out qcache.SharedLookup
	out.Version = max(num(vals[0]), 1)
	raw, ok := vals[1].(string)
	if !ok {
		return out, nil
	}
	v, kind, ok := parseValue(raw)
	switch {
	case !ok:
		out.Corrupt = true
		return out, nil
	case kind == "L":
		out.TooLarge, out.Value.DataUpdatedAt = true, v.DataUpdatedAt
		return out, nil
	}
	out.Value, out.Found = v, true
	var mark uint64
	for _, m := range vals[2:] {
		mark = max(mark, num(m))
	}
	out.Invalidated = mark > v.Version
	return out, nil
}

func num(v any) uint64 {
	s, _ := v.(string)
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// parseValue reads "qc1 <version> <unix ns> <kind>\n<data>".
func parseValue(raw string) (v qcache.SharedValue, kind string, ok bool) {
	head, data, ok := strings.Cut(raw, "\n")
	if !ok {
		return v, "", false
	}
	f := strings.Fields(head)
	if len(f) != 4 || f[0] != "qc1" || (f[3] != "d" && f[3] != "L") {
		return v, "", false
	}
	ver, err1 := strconv.ParseUint(f[1], 10, 64)
	ns, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || ver == 0 {
		return v, "", false
	}
	return qcache.SharedValue{Data: []byte(data), DataUpdatedAt: time.Unix(0, ns), Version: ver}, f[3], true
}

// storeScript writes a value. Version "0" is data set now: it takes a new
// version and marks the key's older fetches invalidated.
var storeScript = redis.NewScript(`
local v = ARGV[1]
if v == '0' then
	if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], 1) end
	v = redis.call('INCR', KEYS[1])
	redis.call('SET', KEYS[3], v, 'PX', ARGV[6])
end
redis.call('SET', KEYS[2], 'qc1 ' .. v .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. '\n' .. ARGV[4], 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1`)

// Store implements qcache.SharedStore.
func (s *Store) Store(ctx context.Context, key qcache.Key, v qcache.SharedValue, ttl time.Duration) error {
	id := encode(key)
	ttl = min(max(ttl, time.Second), s.cfg.maxTTL)
	kind, data := "d", v.Data
	tooLarge := len(data) > s.cfg.maxBytes
	if tooLarge {
		kind, data = "L", nil
	}
	err := storeScript.Run(ctx, s.rdb,
		[]string{s.seqKey(), s.valueKey(id), s.cfg.prefix + "x:" + id},
		strconv.FormatUint(v.Version, 10), strconv.FormatInt(v.DataUpdatedAt.UnixNano(), 10), kind, data,
		ttl.Milliseconds(), s.cfg.maxTTL.Milliseconds(), s.channel(), id).Err()
	if err != nil {
		return fmt.Errorf("redisbus: store %s: %w", key, err)
	}
	if tooLarge {
		return fmt.Errorf("redisbus: store %s: %d bytes over StoreMaxValueBytes %d: %w",
			key, len(v.Data), s.cfg.maxBytes, qcache.ErrSharedValueTooLarge)
	}
	return nil
}

// Delete implements qcache.SharedStore.
func (s *Store) Delete(ctx context.Context, key qcache.Key) error {
	if err := s.rdb.Del(ctx, s.valueKey(encode(key))).Err(); err != nil {
		return fmt.Errorf("redisbus: delete %s: %w", key, err)
	}
	return nil
}

var invalidateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], 1) end
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], v, 'PX', ARGV[1])
return v`)

// Invalidate implements qcache.SharedStore.
func (s *Store) Invalidate(ctx context.Context, prefix qcache.Key, exact bool) error {
	mark := s.cfg.prefix + "p:" + encode(prefix)
	if exact {
		mark = s.cfg.prefix + "x:" + encode(prefix)
	}
	if err := invalidateScript.Run(ctx, s.rdb, []string{s.seqKey(), mark}, s.cfg.maxTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("redisbus: invalidate %s: %w", prefix, err)
	}
	return nil
}

var leaseScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return redis.call('PTTL', KEYS[1])`)

// TryLease implements qcache.SharedStore: SET NX PX with a random token.
func (s *Store) TryLease(ctx context.Context, key qcache.Key) (string, time.Duration, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	n, err := leaseScript.Run(ctx, s.rdb, []string{s.cfg.prefix + "l:" + encode(key)}, token,
		s.cfg.leaseTTL.Milliseconds()).Int64()
	if err != nil {
		return "", 0, fmt.Errorf("redisbus: lease %s: %w", key, err)
	}
	if n == -1 {
		return token, 0, nil
	}
	// Held: its time left (at least 1ms, also when it expired meanwhile).
	return "", max(time.Duration(n)*time.Millisecond, time.Millisecond), nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('PUBLISH', ARGV[2], ARGV[3])
	return 1
end
return 0`)

// Release implements qcache.SharedStore: the lease is deleted only while
// token holds it (a lease that ran out and was taken by another replica is
// left alone).
func (s *Store) Release(ctx context.Context, key qcache.Key, token string) error {
	id := encode(key)
	if err := releaseScript.Run(ctx, s.rdb, []string{s.cfg.prefix + "l:" + id}, token, s.channel(), id).Err(); err != nil {
		return fmt.Errorf("redisbus: release %s: %w", key, err)
	}
	return nil
}

// Watch implements qcache.SharedStore: wait returns on a notification for
// key since the Watch, after StorePoll or d (whichever is shorter), or when
// ctx ends.
func (s *Store) Watch(key qcache.Key) (wait func(context.Context, time.Duration), stop func()) {
	id := encode(key)
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return func(context.Context, time.Duration) {}, func() {}
	}
	ws := s.waiters[id]
	if ws == nil {
		ws = map[chan struct{}]struct{}{}
		s.waiters[id] = ws
	}
	ws[ch] = struct{}{}
	s.mu.Unlock()
	wait = func(ctx context.Context, d time.Duration) {
		// A context's deadline, not a timer channel: see internal/wait.
		ctx, cancel := context.WithTimeout(ctx, min(d, s.cfg.poll))
		defer cancel()
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	stop = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ws := s.waiters[id]; ws != nil {
			delete(ws, ch)
			if len(ws) == 0 {
				delete(s.waiters, id)
			}
		}
	}
	return wait, stop
}

func (s *Store) wake(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.waiters[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

var _ qcache.SharedStore = (*Store)(nil)
