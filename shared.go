package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"
)

// ---------- the contract ----------

// SharedStore is a tier of data shared by the replicas of a service, so
// that N replicas make one upstream fetch per key per stale window instead
// of N (WithSharedStore). It is mechanics only: the client decides what is
// fresh, who fetches and what to do when the store fails, and calls the
// store only where a fetch would start (never on the hit path).
// github.com/qcache-go/qcache/redisbus implements it on Redis
// (redisbus.NewStore); SharedStore is the seam for another engine.
//
// Versions order fetches and invalidations across replicas without their
// clocks: the store keeps a counter. Load returns it (never 0); a fetch is
// stamped with the version its Load returned; Invalidate advances it and
// remembers the new value for the prefix; a stored value whose version is
// below a later Invalidate of its key or of a prefix of it is reported
// Invalidated. So a fetch that started before an invalidation (on any
// replica) never serves as fresh after it.
//
// Every method may be called concurrently. An error means the store could
// not be reached or refused the call; the client then fetches upstream
// itself for a while (see WithSharedStore).
type SharedStore interface {
	// Load returns what the store holds for key, and the store's version.
	Load(ctx context.Context, key Key) (SharedLookup, error)
	// Store writes v for key, to expire after ttl, and wakes the Waits on
	// key. A v with Version 0 is data set now (SetData): the store gives
	// it a new version, later than every version Load returned before, and
	// marks older fetches of the key invalidated. A store that refuses v
	// for its size returns an error wrapping ErrSharedValueTooLarge, after
	// recording that the key is too large (SharedLookup.TooLarge), so that
	// the other replicas fetch it themselves at once.
	Store(ctx context.Context, key Key, v SharedValue, ttl time.Duration) error
	// Delete removes key's value (a corrupt one).
	Delete(ctx context.Context, key Key) error
	// Invalidate marks the values of every key that starts with prefix
	// (exactly prefix, when exact) invalidated: it advances the version and
	// records it for prefix.
	Invalidate(ctx context.Context, prefix Key, exact bool) error
	// TryLease takes key's lease when nobody holds it, for a duration of
	// the store's choosing, and returns its token. When another holder has
	// it, token is "" and left says how long that lease still runs (more
	// than 0): a holder that dies never blocks the others for longer.
	TryLease(ctx context.Context, key Key) (token string, left time.Duration, err error)
	// Release gives key's lease back when token still holds it, and wakes
	// the Waits on key.
	Release(ctx context.Context, key Key, token string) error
	// Watch starts watching key for a Store or a Release. The client calls
	// it before TryLease, so that nothing that happens after a failed
	// TryLease goes unseen. wait blocks until such a Store or Release has
	// happened since the Watch, until d passed, or until ctx ends; it may
	// return early (a store without notifications polls), and the client
	// then looks again. stop ends the watch; wait is not called after it.
	Watch(key Key) (wait func(ctx context.Context, d time.Duration), stop func())
}

// SharedValue is one entry's data in a SharedStore.
type SharedValue struct {
	Data          []byte    // the data as JSON (the encoding of the Bus)
	DataUpdatedAt time.Time // when it was fetched upstream or set: its age is counted from it
	Version       uint64    // the store version the fetch that produced it started at; 0: set now
}

// SharedLookup is what SharedStore.Load found for a key.
type SharedLookup struct {
	Value       SharedValue // when Found
	Found       bool
	Invalidated bool   // Found, and an Invalidate of the key or a prefix of it came after Value.Version
	TooLarge    bool   // no value: the last one was too large to share (Value.DataUpdatedAt says when)
	Corrupt     bool   // something unreadable is stored: the client counts it and deletes it
	Version     uint64 // the store's version now (never 0): the stamp of a fetch that starts after this Load
}

// ErrSharedValueTooLarge is wrapped by SharedStore.Store when a value is too
// large to share: that key is fetched by every replica itself.
var ErrSharedValueTooLarge = errors.New("qcache: value too large for the shared store")

// SharedStats are counters of a client's shared tier since it was made.
type SharedStats struct {
	Hits         uint64 `json:"hits"`          // fetches answered from the shared tier, without an upstream request
	Misses       uint64 `json:"misses"`        // fetches that went upstream with the shared tier's lease, or after their wait, and wrote back
	Waits        uint64 `json:"waits"`         // fetches that waited for another replica's fetch of the key
	WaitTimeouts uint64 `json:"wait_timeouts"` // of those, fetches that went upstream themselves when the other's lease ran out
	Direct       uint64 `json:"direct"`        // explicit refetches (Fetch, Refetch): always upstream, written back
	Errors       uint64 `json:"errors"`        // store calls that failed
	Fallbacks    uint64 `json:"fallbacks"`     // fetches that went upstream without the shared tier, because the store failed or was down
	Corrupt      uint64 `json:"corrupt"`       // unreadable values found (then deleted and fetched upstream)
	Skipped      uint64 `json:"skipped"`       // values not shared: too large for the store, or not encodable as JSON
	Writes       uint64 `json:"writes"`        // values written: fetch results and SetData
}

// SharedStats returns the client's shared-tier counters; all zero without
// WithSharedStore.
func (c *Client) SharedStats() SharedStats {
	t := c.shared
	if t == nil {
		return SharedStats{}
	}
	return SharedStats{Hits: t.hits.Load(), Misses: t.misses.Load(), Waits: t.waits.Load(),
		WaitTimeouts: t.waitTimeouts.Load(), Direct: t.direct.Load(), Errors: t.errors.Load(),
		Fallbacks: t.fallbacks.Load(), Corrupt: t.corrupt.Load(), Skipped: t.skipped.Load(),
		Writes: t.writes.Load()}
}

// WithSharedStore puts a shared tier under the client's cache: where a
// fetch would start, the client first looks the key up in s.
//
//   - A value younger than the query's StaleTime, not invalidated, is used
//     as it is, with its original DataUpdatedAt (so it turns stale on every
//     replica at the same moment), and no upstream request is made.
//   - Otherwise one replica takes the key's lease and fetches; the others
//     wait for its value (the store wakes them), and fetch themselves when
//     its lease runs out without one. After an upstream fetch the value is
//     written back, to expire after the query's GCTime.
//   - Explicit refetches (Fetch, Observer.Refetch, Client.Refetch) need data
//     requested after they asked: they go upstream and write back.
//   - Client.Invalidate, Query.Invalidate, InvalidateAll and mutations'
//     invalidations mark the shared values stale once, before they refetch
//     (the bus tells the other replicas to refetch; they then find the
//     value stale too). SetData, Update and the like write through.
//   - Local queries stay out of the shared tier; data travels as JSON and is
//     validated (Validate) when read. A value that does not decode is
//     counted (SharedStats.Corrupt), deleted and fetched upstream.
//
// The lookup is part of the fetch: under the entry's one fetch in flight,
// before the first attempt, outside WithMaxConcurrentFetches's slots (a
// shared hit takes no upstream slot), and it is not an attempt: Retry,
// Timeout and the hooks' attempt counts are about upstream requests only
// (a shared hit ends with FetchEnd's Attempt 0).
//
// When a store call fails, the fetch goes upstream itself (counted in
// SharedStats.Fallbacks), a Warn line is logged, and the client leaves the
// store alone for a second before it tries again: while the store is down
// every replica fetches for itself, and sharing resumes once it is back.
// Invalidations and SetData made while the store is down do not reach it.
// Remove does not touch the shared tier. Client.Close waits for the
// write-backs and lease releases of the fetches it ends (each store call
// outside a fetch is bounded by 5 s).
func WithSharedStore(s SharedStore) ClientOption {
	if s == nil {
		panic("qcache: WithSharedStore: nil SharedStore")
	}
	return func(c *clientConfig) { c.shared = s }
}

// ---------- the client's side ----------

// sharedRetryAfter is how long the client leaves a failing store alone.
const sharedRetryAfter = time.Second

// sharedCallTimeout bounds the store calls made outside a fetch
// (invalidation marks, SetData write-through).
const sharedCallTimeout = 5 * time.Second

// sharedTier is a client's end of its SharedStore.
type sharedTier struct {
	c             *Client
	store         SharedStore
	downUntil     atomic.Int64 // unix nanoseconds until which the store is left alone; 0 while up
	corruptLogged atomic.Int64 // unix nanoseconds of the last Warn about a corrupt value

	hits, misses, waits, waitTimeouts, direct   atomic.Uint64
	errors, fallbacks, corrupt, skipped, writes atomic.Uint64
}

func newSharedTier(c *Client) *sharedTier {
	if c.cfg.shared == nil {
		return nil
	}
	return &sharedTier{c: c, store: c.cfg.shared}
}

// up reports whether the store may be called.
func (t *sharedTier) up() bool {
	d := t.downUntil.Load()
	return d == 0 || time.Now().UnixNano() >= d
}

// failed records a failed store call; ctx is the call's. A call ended by
// its own context (a fetch cancelled) is no failure of the store.
func (t *sharedTier) failed(ctx context.Context, op string, key Key, err error) {
	if ctx.Err() != nil {
		return
	}
	t.errors.Add(1)
	until := time.Now().Add(sharedRetryAfter).UnixNano()
	if t.downUntil.Swap(until) == 0 {
		// One line when the store goes down, one when it is back: never
		// one per key.
		t.c.cfg.logger.WarnContext(ctx, "qcache: shared store failed; fetching upstream until it is back",
			"op", op, "key", shortURL(key.String()), "err", err, "retry_after", sharedRetryAfter)
	}
}

// ok records a store call that succeeded.
func (t *sharedTier) ok(ctx context.Context) {
	if t.downUntil.Load() != 0 && t.downUntil.Swap(0) != 0 {
		t.c.cfg.logger.InfoContext(ctx, "qcache: shared store reachable again")
	}
}

// sharedFor returns the client's shared tier when q takes part in it.
func (q *Query[P, T]) sharedFor() *sharedTier {
	if q.cfg.local {
		return nil
	}
	return q.c.shared
}

// sharedRun is the shared tier's part of one fetch that goes upstream.
type sharedRun struct {
	t       *sharedTier
	version uint64 // the store version the fetch started at
	token   string // the lease held, if any
}

// sharedBegin runs before a fetch's first attempt. It reports done when the
// fetch is over without an upstream request: with data from the shared tier
// (op.dataAt is then the data's own DataUpdatedAt), or with the cause of its
// cancellation. Otherwise the fetch goes upstream and r, when not nil,
// writes the result back in sharedEnd.
func (e *entry[P, T]) sharedBegin(ctx context.Context, op *fetchOp[T]) (r *sharedRun, data T, done bool, err error) {
	t := e.q.sharedFor()
	if t == nil {
		return nil, data, false, nil
	}
	if !t.up() {
		t.fallbacks.Add(1)
		return nil, data, false, nil
	}
	e.mu.Lock()
	direct := op.direct
	e.mu.Unlock()
	r = &sharedRun{t: t}
	s := t.store
	// hit ends the fetch with v; fail ends the shared part after a failed
	// store call, and the fetch goes upstream without writing back.
	hit := func(v sharedData[T]) (*sharedRun, T, bool, error) {
		t.hits.Add(1)
		if !v.at.IsZero() {
			op.dataAt, op.hasDataAt = v.at.Sub(e.q.c.gc.epoch), true
		}
		return nil, v.data, true, nil
	}
	fail := func(call string, err error) (*sharedRun, T, bool, error) {
		if r.token != "" {
			r.release(ctx, e.entryKey())
		}
		var zero T
		if ctx.Err() != nil {
			return nil, zero, true, op.fc.causeErr()
		}
		t.failed(ctx, call, e.entryKey(), err)
		t.fallbacks.Add(1)
		return nil, zero, false, nil
	}
	look, lerr := s.Load(ctx, e.entryKey())
	if lerr != nil {
		return fail("load", lerr)
	}
	t.ok(ctx)
	r.version = look.Version
	if direct {
		t.direct.Add(1)
		return r, data, false, nil
	}
	if v, ok := e.sharedUsable(ctx, t, look, time.Time{}, false); ok {
		return hit(v)
	}
	if look.TooLarge && e.sharedFresh(look.Value.DataUpdatedAt) {
		return r, data, false, nil // too large to share: every replica fetches it, none waits
	}
	seen := look.Value.DataUpdatedAt
	var deadline time.Time
	for {
		wait, stop := s.Watch(e.entryKey())
		token, left, lerr := s.TryLease(ctx, e.entryKey())
		if lerr != nil || token != "" {
			stop()
		}
		if lerr != nil {
			return fail("lease", lerr)
		}
		if token != "" {
			r.token = token
			// Look again: the value may have landed between the last Load
			// and the lease.
			look, lerr := s.Load(ctx, e.entryKey())
			if lerr != nil {
				return fail("load", lerr)
			}
			r.version = look.Version
			if v, ok := e.sharedUsable(ctx, t, look, seen, !deadline.IsZero()); ok {
				r.release(ctx, e.entryKey())
				return hit(v)
			}
			t.misses.Add(1)
			return r, data, false, nil
		}
		now := time.Now()
		if deadline.IsZero() {
			t.waits.Add(1)
			deadline = now.Add(max(left, time.Millisecond))
		} else if !now.Before(deadline) {
			// The lease waited for ran out without a value, and another
			// replica took the next one first: fetch without waiting again.
			stop()
			t.waitTimeouts.Add(1)
			t.misses.Add(1)
			return r, data, false, nil
		}
		wait(ctx, deadline.Sub(now))
		stop()
		if ctx.Err() != nil {
			return nil, data, true, op.fc.causeErr()
		}
		look, lerr = s.Load(ctx, e.entryKey())
		if lerr != nil {
			return fail("load", lerr)
		}
		r.version = look.Version
		if v, ok := e.sharedUsable(ctx, t, look, seen, true); ok {
			return hit(v)
		}
		if look.TooLarge && e.sharedFresh(look.Value.DataUpdatedAt) {
			return r, data, false, nil
		}
	}
}

// sharedData is a value read from the shared tier.
type sharedData[T any] struct {
	data T
	at   time.Time
}

// sharedFresh reports whether data of at is younger than StaleTime.
func (e *entry[P, T]) sharedFresh(at time.Time) bool {
	st := e.q.cfg.staleTime
	return st == Forever || time.Now().Before(at.Add(st))
}

// sharedUsable decodes look's value when the fetch may use it: found, not
// invalidated, not older than the entry's own data, and fresh, or (after a
// wait) stored since the value seen before it, which a fetch that started
// after this one's request wrote. A value that does not decode or validate
// is counted and deleted.
func (e *entry[P, T]) sharedUsable(ctx context.Context, t *sharedTier, look SharedLookup, seen time.Time, waited bool) (sharedData[T], bool) {
	var out sharedData[T]
	if look.Corrupt {
		t.corruptFound(ctx, e.entryKey())
		return out, false
	}
	if !look.Found || look.Invalidated {
		return out, false
	}
	at := look.Value.DataUpdatedAt
	if cur := e.snap.Load(); cur.hasData && at.Before(cur.updatedAt(e.q.c)) {
		return out, false
	}
	if !e.sharedFresh(at) && !(waited && !at.Equal(seen)) {
		return out, false
	}
	var v T
	if err := json.Unmarshal(look.Value.Data, &v); err != nil {
		t.corruptFound(ctx, e.entryKey())
		return out, false
	}
	if err := validate(&v); err != nil {
		t.corruptFound(ctx, e.entryKey())
		return out, false
	}
	return sharedData[T]{data: v, at: at}, true
}

// corruptFound counts an unreadable value and deletes it. It logs at Warn
// at most once a second: garbage written over many keys is one line.
func (t *sharedTier) corruptFound(ctx context.Context, key Key) {
	n := t.corrupt.Add(1)
	now := time.Now().UnixNano()
	if last := t.corruptLogged.Load(); now-last >= int64(time.Second) && t.corruptLogged.CompareAndSwap(last, now) {
		t.c.cfg.logger.WarnContext(ctx, "qcache: corrupt value in the shared store; deleted and fetched upstream",
			"key", shortURL(key.String()), "corrupt_total", n)
	}
	if err := t.store.Delete(ctx, key); err != nil {
		t.failed(ctx, "delete", key, err)
	}
}

func (r *sharedRun) release(ctx context.Context, key Key) {
	token := r.token
	r.token = ""
	// Released even when the fetch was cancelled: the others need not wait
	// for the lease to run out.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedCallTimeout)
	defer cancel()
	if err := r.t.store.Release(ctx, key, token); err != nil {
		r.t.failed(ctx, "release", key, err)
	}
}

// sharedEnd runs after a fetch that went upstream has settled: a value it
// stored is written back, then the lease is released (in that order, so
// that a replica that takes the lease next finds the value).
func (e *entry[P, T]) sharedEnd(ctx context.Context, r *sharedRun, op *fetchOp[T], outcome Outcome) {
	if r == nil {
		return
	}
	if outcome == OutcomeSuccess {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedCallTimeout)
		r.t.write(wctx, e.entryKey(), op.data, e.q.c.timeAt(op.dataAt), r.version, e.q.cfg.gcTime)
		cancel()
	}
	if r.token != "" {
		r.release(ctx, e.entryKey())
	}
}

// write stores v for key with its DataUpdatedAt and version.
func (t *sharedTier) write(ctx context.Context, key Key, v any, at time.Time, version uint64, ttl time.Duration) {
	data, err := json.Marshal(v)
	if err != nil {
		t.skipped.Add(1)
		t.c.cfg.logger.DebugContext(ctx, "qcache: not shared: the data does not encode as JSON (mark the query Local)",
			"key", shortURL(key.String()), "err", err)
		return
	}
	err = t.store.Store(ctx, key, SharedValue{Data: data, DataUpdatedAt: at, Version: version}, ttl)
	switch {
	case err == nil:
		t.writes.Add(1)
		t.ok(ctx)
	case errors.Is(err, ErrSharedValueTooLarge):
		t.skipped.Add(1)
	default:
		t.failed(ctx, "store", key, err)
	}
}

// sharedSetData writes data set on this replica (SetData, Update …)
// through to the shared tier.
func (q *Query[P, T]) sharedSetData(key Key, v T) {
	t := q.sharedFor()
	if t == nil || !t.up() || q.c.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedCallTimeout)
	defer cancel()
	t.write(ctx, key, v, time.Now(), 0, q.cfg.gcTime)
}

// sharedInvalidate marks the shared values that f selects stale, before
// the local invalidation refetches anything. A Predicate and the conditions
// on the state do not reach the store: the whole prefix is marked (wider,
// never narrower).
func (c *Client) sharedInvalidate(ctx context.Context, key Key, exact bool) {
	t := c.shared
	if t == nil || !t.up() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedCallTimeout)
	defer cancel()
	if err := t.store.Invalidate(ctx, key, exact); err != nil {
		t.failed(ctx, "invalidate", key, err)
		return
	}
	t.ok(ctx)
}

// sharedInvalidateKey is sharedInvalidate for Query.Invalidate(p).
func (q *Query[P, T]) sharedInvalidateKey(ctx context.Context, p P) {
	if q.sharedFor() == nil {
		return
	}
	if key, err := q.keyFn(p); err == nil {
		q.c.sharedInvalidate(ctx, key, true)
	}
}

// sharedInvalidateAll is sharedInvalidate for Query.InvalidateAll: the
// query's static prefix, as the bus publishes it.
func (q *Query[P, T]) sharedInvalidateAll(ctx context.Context) {
	if q.sharedFor() != nil {
		q.c.sharedInvalidate(ctx, q.static, false)
	}
}
