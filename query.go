package qcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache/internal/endpoint"
	"golang.org/x/sync/semaphore"
)

// Endpoint describes an HTTP request that a Query sends.
type Endpoint struct {
	Method string      // "" means GET
	URL    string      // "/users/$userId" (joined to the base URL) or absolute; "{userId}" also accepted
	Header http.Header // sent with every request of the query, after the client's headers
}

// Query is a typed, cached read: one entry per parameter value P, holding
// data of type T. Make one with NewQuery or NewQueryFunc when the program
// starts and share it; it is safe for concurrent use.
type Query[P comparable, T any] struct {
	c       *Client
	cfg     queryConfig
	name    string
	fetchFn func(ctx context.Context, p P) (T, error)
	keyFn   func(p P) (Key, error)
	static  Key // the segments every key of the query starts with
	entries entryMap[P, T]
	gc      entryHeap[P, T] // the idle entries by gc deadline
	stale   staleHeap[P, T] // the fresh entries by the time they turn stale

	hits       stripedCounter // the hit path's counter; the client's Hits sum them
	n          counters
	nEntries   atomic.Int64
	nObservers atomic.Int64
	http       bool                // NewQuery: fetches make conditional requests
	sem        *semaphore.Weighted // MaxConcurrentFetches; nil without
	clone      func(T) T           // Clone; nil: values are shared with the cache
	emptySnap  *snapshot[T]        // the state of every new entry
	// bindMayFail: keyFn can fail (NewQuery refuses empty and dot-segment
	// path values), so a new entry's p is bound once before it is made.
	// A function query's binding checks no value, so its keys always bind.
	bindMayFail bool
}

func (q *Query[P, T]) stats() QueryStats { return q.Stats() }
func (q *Query[P, T]) stopStale()        { q.stale.stop() }

func newQuery[P comparable, T any](c *Client, name string, opts []QueryOption) *Query[P, T] {
	if c == nil {
		panic("qcache: " + name + ": nil Client")
	}
	q := &Query[P, T]{c: c, cfg: defaultQueryConfig(), name: name, emptySnap: &snapshot[T]{}}
	q.gc.g = &c.gc
	q.stale.g = &c.gc
	for _, o := range c.cfg.queryDefaults {
		o(&q.cfg)
	}
	for _, o := range opts {
		o(&q.cfg)
	}
	q.clone = cloneFor[T](name, q.cfg.clone)
	if q.cfg.name != "" {
		q.name = q.cfg.name
	}
	if q.cfg.maxFetches > 0 {
		q.sem = semaphore.NewWeighted(int64(q.cfg.maxFetches))
	}
	return q
}

// NewQuery declares a query over HTTP. P binds the URL template: a struct
// whose exported fields carry `path:"name"` or `query:"name"` tags (an
// untagged field binds the template variable of its name, case-
// insensitively); a string or integer when the template has exactly one
// variable; struct{} when it has none. T is decoded from the JSON body and,
// where T or *T has `Validate() error`, validated.
//
// NewQuery panics, naming the variable and the type, when the template is
// malformed or P cannot bind it, and when a relative URL is given to a client
// without WithBaseURL: a definition is code, as with http.ServeMux patterns.
func NewQuery[P comparable, T any](c *Client, ep Endpoint, opts ...QueryOption) *Query[P, T] {
	if c == nil {
		panic("qcache: NewQuery " + ep.URL + ": nil Client")
	}
	he := compileEndpoint(c, ep, reflect.TypeFor[P](), http.MethodGet)
	b := he.binding
	q := newQuery[P, T](c, he.method+" "+ep.URL, opts)
	prefix := q.cfg.keyPrefix
	q.static = joinKey(prefix, literalSegments(ep.URL, b.Absolute()))
	q.keyFn = func(p P) (Key, error) {
		_, _, key, err := b.Bind(p)
		return joinKey(prefix, key), err
	}
	q.http = true
	q.bindMayFail = true
	q.fetchFn = func(ctx context.Context, p P) (T, error) {
		path, query, _, err := b.Bind(p)
		if err != nil {
			var zero T
			return zero, &RequestError{err}
		}
		return doJSON[T](ctx, c, he.method, he.url(path, query), he.header, nil, false, scopeFrom(ctx))
	}
	c.addQuery(q)
	return q
}

// NewQueryFunc declares a query over any other source (a database, gRPC):
// fetch is called, at most once at a time per key, with a context that ends
// when nobody wants the result any more and that carries the values of the
// context of the call that started the fetch (trace spans, request IDs);
// callers that join a fetch in flight share the starter's values. Keys are key, then one segment per
// path-bound value of P (a scalar P is one segment; a struct's untagged and
// `path`-tagged exported fields, in declaration order), then a query segment
// built from `query`-tagged fields. Caching, retries and every other
// behaviour are those of NewQuery. It panics when P cannot bind.
func NewQueryFunc[P comparable, T any](c *Client, key Key,
	fetch func(ctx context.Context, p P) (T, error), opts ...QueryOption) *Query[P, T] {
	name := key.String()
	if fetch == nil {
		panic("qcache: NewQueryFunc " + key.String() + ": nil fetch function")
	}
	q := newQuery[P, T](c, name, opts)
	b, err := endpoint.CompileFunc(reflect.TypeFor[P]())
	if err != nil {
		panic(err.Error())
	}
	prefix := joinKey(q.cfg.keyPrefix, key)
	q.static = prefix
	q.keyFn = func(p P) (Key, error) {
		_, _, k, err := b.Bind(p)
		return joinKey(prefix, k), err
	}
	q.fetchFn = fetch
	c.addQuery(q)
	return q
}

// literalSegments returns the path segments of a template that come before
// its first variable: every key of the query starts with them.
func literalSegments(tmpl string, absolute bool) []string {
	if absolute {
		if i := strings.Index(tmpl, "://"); i >= 0 {
			rest := tmpl[i+3:]
			j := strings.IndexByte(rest, '/')
			if j < 0 {
				return nil
			}
			tmpl = rest[j:]
		}
	}
	if i := strings.IndexAny(tmpl, "?#"); i >= 0 {
		tmpl = tmpl[:i]
	}
	complete := true
	if i := strings.IndexAny(tmpl, "${"); i >= 0 {
		tmpl, complete = tmpl[:i], false
	}
	segs := strings.Split(tmpl, "/")
	if !complete {
		segs = segs[:len(segs)-1] // the segment the variable is in
	}
	var out []string
	for _, s := range segs {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (q *Query[P, T]) staticPrefix() Key { return q.static }

func joinKey(a, b []string) Key {
	k := make(Key, 0, len(a)+len(b))
	return append(append(k, a...), b...)
}

// attempt runs one call of the fetch function, bounded by Timeout (through
// a, the attempt's context, unused without one), with a panic turned into
// an error.
func (q *Query[P, T]) attempt(ctx context.Context, a *attemptCtx, p P) (v T, err error) {
	if q.cfg.timeout > 0 {
		a.start(ctx, q.c, q.cfg.timeout)
		ctx = a
		defer a.end()
	}
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, &panicError{value: r}
		}
	}()
	return q.fetchFn(ctx, p)
}

func (q *Query[P, T]) eachEntryUnmerged(yield func(anyEntry) bool) {
	q.entries.eachUnmerged(func(e *entry[P, T]) bool { return yield(e) })
}

func (q *Query[P, T]) eachEntry(yield func(anyEntry) bool) {
	q.entries.each(func(e *entry[P, T]) bool { return yield(e) })
}

// lookup returns the entry of p, if any.
func (q *Query[P, T]) lookup(p P) *entry[P, T] {
	return q.entries.load(p)
}

// lockedEntry returns the entry of p, created if needed, locked and not
// removed.
func (q *Query[P, T]) lockedEntry(p P) (*entry[P, T], error) {
	e, created, err := q.lockedEntryNoGC(p)
	if created {
		e.scheduleGCLocked()
	}
	return e, err
}

// lockedEntryNoGC is lockedEntry for a caller that is about to start a
// fetch, which would take a new entry's gc deadline away at once: it
// reports whether it created the entry, and leaves a created entry's gc
// clock to the caller (scheduleGCLocked, when it starts no fetch after
// all).
func (q *Query[P, T]) lockedEntryNoGC(p P) (e *entry[P, T], created bool, err error) {
	c := q.c
	if p != p {
		// A NaN in P: no map finds it again, so every call would insert
		// an entry that could never be deleted.
		return nil, false, fmt.Errorf("qcache: %s: %w", q.name, ErrNaNParams)
	}
	for {
		if c.closed.Load() {
			return nil, false, ErrClosed
		}
		e := q.lookup(p)
		if e == nil {
			if q.bindMayFail {
				if _, err := q.keyFn(p); err != nil {
					return nil, false, fmt.Errorf("qcache: %s: %w", q.name, err)
				}
			}
			ne := newEntry(q, p) // flagNew: no eviction takes it before it is locked below
			ne.stamp()
			var loaded bool
			e, loaded = q.entries.storeMissed(p, ne)
			if !loaded {
				c.entries.Add(1)
				q.nEntries.Add(1)
				c.evict()
				e.mu.Lock()
				e.flags.And(^flagNew)
				if e.isGone() { // Remove took it meanwhile
					e.mu.Unlock()
					continue
				}
				return e, true, nil
			}
		}
		e.mu.Lock()
		if !e.isGone() {
			return e, false, nil
		}
		e.mu.Unlock()
	}
}

// Get returns the data for p: from memory while it is fresh, otherwise from
// a fetch, shared with every other caller that wants p meanwhile. With
// StaleWhileRevalidate, stale data is returned at once and refetched in the
// background. ctx ends this caller's wait, not the fetch (which is cancelled
// only when nobody wants it any more). On a failed fetch Get returns the
// error, even when older data is cached (Peek returns that).
//
// A Get of fresh data does not allocate and takes no lock. When ctx can
// never end (its Done is nil, as context.Background's is) and Get starts
// the fetch itself, the fetch runs on Get's goroutine instead of one of
// its own: nothing could cut that wait short, and a goroutine would only
// cost. Every other rule holds as for a fetch on its own goroutine: other
// callers join it, Cancel, Remove and Client.Close end its function's
// context and its joiners' waits at once, and Get returns once the
// function has returned (with context.Canceled or ErrClosed); callbacks
// (the fetch function, hooks) may call Client.Close.
func (q *Query[P, T]) Get(ctx context.Context, p P) (T, error) {
	if e := q.entries.readOnly().m[p]; e != nil {
		if v, ok := e.hit(); ok && !q.c.closed.Load() {
			q.hits.add()
			e.touch()
			return q.out(v), nil
		}
	}
	return q.outErr(q.getSlow(ctx, p))
}

func (q *Query[P, T]) getSlow(ctx context.Context, p P) (T, error) {
	var zero T
	e, created, err := q.lockedEntryNoGC(p)
	if err != nil {
		return zero, err
	}
	// ctx is looked at once: a context that ends between two looks (its
	// deadline passing meanwhile) would leave a new entry with neither a
	// fetch nor a gc deadline.
	ended := ctx.Err() != nil
	if created && ended {
		// No fetch will start: the new entry's gc clock does. (A new entry
		// is neither fresh nor has data or an error, so every other way
		// below starts one.)
		e.scheduleGCLocked()
	}
	if e.freshLocked() {
		data := e.snap.Load().data
		e.mu.Unlock()
		q.hits.add()
		return data, nil
	}
	if cur := e.snap.Load(); q.cfg.swr && cur.hasData {
		data := cur.data
		if !ended { // an ended context starts no fetch
			e.joinLocked(ctx, wantPin)
		}
		e.mu.Unlock()
		q.hits.add()
		q.count(nStaleServed)
		return data, nil
	}
	if err := e.cachedErrLocked(); err != nil {
		e.mu.Unlock()
		q.hits.add()
		return zero, err
	}
	if ended {
		e.mu.Unlock()
		return zero, fmt.Errorf("qcache: %s: %w", e.keyText(), context.Cause(ctx))
	}
	q.count(nMisses)
	e.stamp()
	op := e.joinLocked(ctx, inlineIf(ctx))
	inline := op.claimInlineLocked()
	e.mu.Unlock()
	v, err := e.await(ctx, op, inline)
	if err != nil && q.cfg.staleIfError > 0 && ctx.Err() == nil && !errors.Is(err, ErrClosed) {
		if data, ok := e.youngData(q.cfg.staleIfError); ok {
			return data, nil
		}
	}
	return v, err
}

// cachedErrLocked returns the entry's error while CacheErrors keeps it.
func (e *entry[P, T]) cachedErrLocked() error {
	q := e.q
	if q.cfg.errorTTL <= 0 {
		return nil
	}
	f := e.failedLocked()
	if f == nil || f.err == nil || FetchStatus(e.snap.Load().fetchStatus) != FetchIdle || f.invalidated ||
		time.Since(f.at) >= q.cfg.errorTTL || !q.cfg.cacheErr(f.err) {
		return nil
	}
	return f.err
}

// youngData returns the entry's data when it is younger than d
// (StaleIfError).
func (e *entry[P, T]) youngData(d time.Duration) (T, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	if !s.hasData || e.isGone() || e.q.c.clock()-s.dataUpdatedAt >= d {
		var zero T
		return zero, false
	}
	return s.data, true
}

// Fetch returns data from a fetch that started after the call: when a fetch
// is already in flight, Fetch waits for the one follow-up fetch that starts
// when it settles (shared by every explicit refetch asked meanwhile), so that
// a request that left before a write never answers for after it. Like Get,
// Fetch runs a fetch that it starts on its own goroutine when ctx can never
// end.
func (q *Query[P, T]) Fetch(ctx context.Context, p P) (T, error) {
	var zero T
	if ctx.Err() != nil {
		return zero, fmt.Errorf("qcache: %s: %w", q.name, context.Cause(ctx))
	}
	e, err := q.lockedEntry(p)
	if err != nil {
		return zero, err
	}
	e.stamp() // a read, as Get's: the entry is the one used last
	op := e.refetchLocked(ctx, inlineIf(ctx))
	op.direct = true
	inline := op.claimInlineLocked()
	e.mu.Unlock()
	return q.outErr(e.await(ctx, op, inline))
}

// Prefetch starts a fetch for p when its data is missing or stale (or joins
// the one in flight) and returns at once. Errors land in State.
func (q *Query[P, T]) Prefetch(p P) {
	e, err := q.lockedEntry(p)
	if err != nil {
		q.c.cfg.logger.DebugContext(q.c.ctx, "qcache: prefetch", "query", q.name, "err", err)
		return
	}
	if !e.freshLocked() {
		e.joinLocked(context.Background(), wantPin)
	}
	e.mu.Unlock()
}

// Peek returns the cached data for p, fresh or stale, without fetching.
func (q *Query[P, T]) Peek(p P) (T, bool) {
	if e := q.lookup(p); e != nil {
		s := e.snap.Load()
		if s.hasData {
			return q.out(s.data), true
		}
		return s.data, false
	}
	var zero T
	return zero, false
}

// State returns a snapshot of p's entry; a missing entry is pending and
// stale. It does not create the entry.
func (q *Query[P, T]) State(p P) State[T] {
	if e := q.lookup(p); e != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		s := e.stateLocked()
		if s.HasData {
			s.Data = q.out(s.Data)
		}
		return s
	}
	return State[T]{IsStale: true}
}

// SetData stores v as p's data, fresh as of now, and tells p's observers. A
// fetch that started before SetData does not overwrite v when it settles:
// its waiters get v. SetData creates the entry if needed; it does nothing
// once the client is closed.
func (q *Query[P, T]) SetData(p P, v T) {
	e, err := q.lockedEntry(p)
	if err != nil {
		q.c.cfg.logger.DebugContext(q.c.ctx, "qcache: SetData", "query", q.name, "err", err)
		return
	}
	e.setDataLocked(v)
	e.mu.Unlock()
	q.publishSetData(p, v)
}

// Update replaces p's data with f(old, ok), where ok reports whether there
// was data, as SetData does. f runs without locks held and may run more than
// once when the data changes meanwhile; it must not block for long.
func (q *Query[P, T]) Update(p P, f func(old T, ok bool) T) {
	for {
		e, err := q.lockedEntry(p)
		if err != nil {
			return
		}
		cur := e.snap.Load()
		old, ok, ver := cur.data, cur.hasData, e.dataVer
		e.mu.Unlock()
		if ok {
			old = q.out(old)
		}
		v := f(old, ok)
		e.mu.Lock()
		if !e.isGone() && e.dataVer == ver {
			e.setDataLocked(v)
			e.mu.Unlock()
			q.publishSetData(p, v)
			return
		}
		e.mu.Unlock()
	}
}

// UpdateExisting replaces p's data with f(old) when p has data, as SetData
// does, and reports whether it did. Unlike Update it never creates an
// entry: a push that patches cached lists must not invent entries for keys
// nobody asked for. f runs without locks held and may run more than once
// when the data changes meanwhile.
func (q *Query[P, T]) UpdateExisting(p P, f func(old T) T) bool {
	for {
		e := q.lookup(p)
		if e == nil {
			return false
		}
		e.mu.Lock()
		cur := e.snap.Load()
		if e.isGone() || !cur.hasData {
			gone := e.isGone()
			e.mu.Unlock()
			if gone {
				continue // replaced meanwhile: look again
			}
			return false
		}
		old, ver := q.out(cur.data), e.dataVer // Clone: f gets a copy
		e.mu.Unlock()
		v := f(old)
		e.mu.Lock()
		if !e.isGone() && e.dataVer == ver {
			e.setDataLocked(v)
			e.mu.Unlock()
			q.publishSetData(p, v)
			return true
		}
		e.mu.Unlock()
	}
}

// Remove drops p's entry from the cache. An entry that has observers is
// reset instead (data dropped, state pending) and refetched for them.
func (q *Query[P, T]) Remove(p P) {
	q.publishKey(EventRemove, p)
	if e := q.lookup(p); e != nil {
		e.remove()
	}
}

// Key returns the cache key of p (see the package documentation). For a p
// that cannot be bound (an empty path value) it returns the key as far as it
// can be built.
func (q *Query[P, T]) Key(p P) Key {
	k, _ := q.keyFn(p)
	return k
}
