package qcache

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/qcache-go/qcache/internal/endpoint"
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
	clone   func(T) T // Clone; nil: values are shared with the cache
}

func newQuery[P comparable, T any](c *Client, name string, opts []QueryOption) *Query[P, T] {
	if c == nil {
		panic("qcache: " + name + ": nil Client")
	}
	q := &Query[P, T]{c: c, cfg: defaultQueryConfig(), name: name}
	for _, o := range c.cfg.queryDefaults {
		o(&q.cfg)
	}
	for _, o := range opts {
		o(&q.cfg)
	}
	q.clone = cloneFor[T](name, q.cfg.clone)
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
	q.fetchFn = func(ctx context.Context, p P) (T, error) {
		path, query, _, err := b.Bind(p)
		if err != nil {
			var zero T
			return zero, &RequestError{err}
		}
		return doJSON[T](ctx, c, he.method, he.url(path, query), he.header, nil, false)
	}
	c.addQuery(q)
	return q
}

// NewQueryFunc declares a query over any other source (a database, gRPC):
// fetch is called, at most once at a time per key, with a context that ends
// when nobody wants the result any more. Keys are key, then one segment per
// path-bound value of P (a scalar P is one segment; a struct's untagged and
// `path`-tagged exported fields, in declaration order), then a query segment
// built from `query`-tagged fields. Caching, retries and every other
// behaviour are those of NewQuery. It panics when P cannot bind.
func NewQueryFunc[P comparable, T any](c *Client, key Key,
	fetch func(ctx context.Context, p P) (T, error), opts ...QueryOption) *Query[P, T] {
	name := "func " + key.String()
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

// attempt runs one call of the fetch function, bounded by Timeout, with a
// panic turned into an error.
func (q *Query[P, T]) attempt(ctx context.Context, p P) (v T, err error) {
	if q.cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, q.cfg.timeout)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, &panicError{value: r}
		}
	}()
	return q.fetchFn(ctx, p)
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
	c := q.c
	for {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		e := q.lookup(p)
		if e == nil {
			key, err := q.keyFn(p)
			if err != nil {
				return nil, fmt.Errorf("qcache: %s: %w", q.name, err)
			}
			ne := newEntry(q, p, key) // flagNew: no eviction takes it before it is locked below
			ne.lastUse.Store(c.useClock.Add(1))
			var loaded bool
			e, loaded = q.entries.loadOrStore(p, ne)
			if !loaded {
				c.entries.Add(1)
				c.evict()
				e.mu.Lock()
				e.flags.And(^flagNew)
				if e.isGone() { // Remove took it meanwhile
					e.mu.Unlock()
					continue
				}
				e.scheduleGCLocked()
				return e, nil
			}
		}
		e.mu.Lock()
		if !e.isGone() {
			return e, nil
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
// A Get of fresh data does not allocate and takes no lock.
func (q *Query[P, T]) Get(ctx context.Context, p P) (T, error) {
	if e := q.entries.readOnly().m[p]; e != nil {
		if e.servable() && !q.c.closed.Load() {
			q.c.hits.add()
			e.touch()
			return q.out(e.snap.Load().data), nil
		}
	}
	return q.outErr(q.getSlow(ctx, p))
}

func (q *Query[P, T]) getSlow(ctx context.Context, p P) (T, error) {
	var zero T
	e, err := q.lockedEntry(p)
	if err != nil {
		return zero, err
	}
	c := q.c
	if e.freshLocked() {
		data := e.snap.Load().data
		e.mu.Unlock()
		c.hits.add()
		return data, nil
	}
	if cur := e.snap.Load(); q.cfg.swr && cur.hasData {
		data := cur.data
		if ctx.Err() == nil { // an ended context starts no fetch
			e.joinLocked(wantPin)
		}
		e.mu.Unlock()
		c.hits.add()
		return data, nil
	}
	if ctx.Err() != nil {
		e.mu.Unlock()
		return zero, fmt.Errorf("qcache: %s: %w", e.keyText(), context.Cause(ctx))
	}
	c.misses.Add(1)
	e.lastUse.Store(c.useClock.Add(1))
	op := e.joinLocked(wantWait)
	e.mu.Unlock()
	return e.wait(ctx, op)
}

// Fetch returns data from a fetch that started after the call: when a fetch
// is already in flight, Fetch waits for the one follow-up fetch that starts
// when it settles (shared by every explicit refetch asked meanwhile), so that
// a request that left before a write never answers for after it.
func (q *Query[P, T]) Fetch(ctx context.Context, p P) (T, error) {
	var zero T
	if ctx.Err() != nil {
		return zero, fmt.Errorf("qcache: %s: %w", q.name, context.Cause(ctx))
	}
	e, err := q.lockedEntry(p)
	if err != nil {
		return zero, err
	}
	op := e.refetchLocked(wantWait)
	e.mu.Unlock()
	return q.outErr(e.wait(ctx, op))
}

// Prefetch starts a fetch for p when its data is missing or stale (or joins
// the one in flight) and returns at once. Errors land in State.
func (q *Query[P, T]) Prefetch(p P) {
	e, err := q.lockedEntry(p)
	if err != nil {
		q.c.cfg.logger.Debug("qcache: prefetch", "query", q.name, "err", err)
		return
	}
	if !e.freshLocked() {
		e.joinLocked(wantPin)
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
		q.c.cfg.logger.Debug("qcache: SetData", "query", q.name, "err", err)
		return
	}
	e.setDataLocked(v)
	e.mu.Unlock()
	q.publishSetData(e.key, v)
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
			q.publishSetData(e.key, v)
			return
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
	if e := q.lookup(p); e != nil {
		return append(Key(nil), e.key...)
	}
	k, _ := q.keyFn(p)
	return k
}
