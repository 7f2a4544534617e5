package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/qcache-go/qcache/internal/backoff"
	"github.com/qcache-go/qcache/internal/wait"
)

// Mutation is a typed write: Do sends a request with a JSON body of type B
// to the endpoint bound by P, and decodes the answer into R. Around the
// request it runs the mutation's hooks (optimistic updates and their
// rollback, MutationOnSuccess, MutationOnError, MutationOnSettled) and invalidates the queries the
// write made outdated. Make one with NewMutation when the program starts and
// share it; it is safe for concurrent use.
type Mutation[P comparable, B, R any] struct {
	c    *Client
	name string // "POST /todos/$id", for errors
	ep   httpEndpoint
	cfg  mutationConfig

	queued bool // MutationSerial or MutationScope
	scope  any  // the queue's scope: the scope name, or the mutation itself

	onMutate  []func(context.Context, P, B) (func(), error)
	onSuccess []func(context.Context, R, P, B)
	onError   []func(context.Context, error, P, B)
	onSettled []func(context.Context, R, error, P, B)
}

// NewMutation declares a mutation over HTTP. ep.Method "" means POST. P
// binds the URL template exactly as in NewQuery (path and query values,
// escaped); B is encoded as the JSON request body (Content-Type
// application/json; use struct{} for an empty object); R is decoded from the
// JSON answer and validated like a query's T, and a 204 or empty answer
// gives the zero R.
//
// NewMutation panics, as NewQuery does, when the template is malformed, when
// P cannot bind it, when a relative URL is given to a client without
// WithBaseURL, and when a hook option (MutationOnMutate, MutationOnSuccess, MutationOnError,
// MutationOnSettled) was given a function of other types than P, B and R, naming
// the types it got and the ones it needs.
func NewMutation[P comparable, B, R any](c *Client, ep Endpoint, opts ...MutationOption) *Mutation[P, B, R] {
	if c == nil {
		panic("qcache: NewMutation " + ep.URL + ": nil Client")
	}
	he := compileEndpoint(c, ep, reflect.TypeFor[P](), http.MethodPost)
	m := &Mutation[P, B, R]{c: c, name: he.method + " " + ep.URL, ep: he}
	for _, o := range opts {
		o(&m.cfg)
	}
	for _, h := range m.cfg.hooks {
		m.addHook(h)
	}
	switch {
	case m.cfg.scope != "":
		m.queued, m.scope = true, m.cfg.scope
	case m.cfg.serial:
		m.queued, m.scope = true, m
	}
	return m
}

// addHook checks h against the mutation's types and installs it.
func (m *Mutation[P, B, R]) addHook(h mutationHook) {
	var ok bool
	var want any
	switch h.kind {
	case "MutationOnMutate":
		ok, want = appendHook(&m.onMutate, h.fn)
	case "MutationOnSuccess":
		ok, want = appendHook(&m.onSuccess, h.fn)
	case "MutationOnError":
		ok, want = appendHook(&m.onError, h.fn)
	case "MutationOnSettled":
		ok, want = appendHook(&m.onSettled, h.fn)
	}
	if !ok {
		panic(fmt.Sprintf("qcache: NewMutation %s: %s takes %T; this mutation needs %T",
			m.name, h.kind, h.fn, want))
	}
}

// appendHook appends fn to list when it is an F, and returns a nil F to name
// the type wanted otherwise.
func appendHook[F any](list *[]F, fn any) (ok bool, want F) {
	f, ok := fn.(F)
	if ok {
		*list = append(*list, f)
	}
	return ok, want
}

// Key returns the key of p: the bound path split on "/", then the query
// segment, as Query.Key builds it for the same template (without a
// KeyPrefix). It is the key MutationSerial queues calls by, and matches the key of a
// query on the same URL: Filter{Key: m.Key(p)} selects that query's entry.
// For a p that cannot be bound it returns the key as far as it can be built.
func (m *Mutation[P, B, R]) Key(p P) Key {
	_, _, k, _ := m.ep.binding.Bind(p)
	return Key(k)
}

// Do runs the mutation: it waits for its turn when MutationSerial or MutationScope
// queues it, runs the MutationOnMutate hooks, sends body as JSON to the URL bound by
// p and decodes the answer into R. On success the MutationOnSuccess hooks run; on
// failure the rollbacks of the MutationOnMutate hooks run, then the MutationOnError hooks.
// Then the MutationInvalidates filters are invalidated (after a failure too) and Do
// waits for the refetches that starts; then the MutationOnSettled hooks run, and Do
// returns. Hooks run on the calling goroutine with ctx.
//
// Errors are those of a query: *HTTPError for an answer outside 2xx,
// *DecodeError for a body that does not decode or validate, and an error
// wrapping ctx's for a call whose ctx ends. A failed request is not retried
// unless MutationRetry says so. While the client is offline (SetOnline) the
// request waits, after the MutationOnMutate hooks, until it is back online or ctx
// ends. Client.Close cancels the request, and Do returns ErrClosed.
//
// Do returns at once, running no hook, with ErrClosed after Client.Close,
// with ctx's error when ctx has already ended, and with an error when p
// cannot be bound or body cannot be encoded. When ctx ends while the
// refetches of a successful mutation are still running, Do still returns
// the result and no error: the write happened, and a caller that took an
// error for a failure might send it again.
func (m *Mutation[P, B, R]) Do(ctx context.Context, p P, body B) (R, error) {
	var zero R
	c := m.c
	if c.closed.Load() {
		return zero, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("qcache: %s: %w", m.name, context.Cause(ctx))
	}
	path, query, key, err := m.ep.binding.Bind(p)
	if err != nil {
		return zero, fmt.Errorf("qcache: %s: %w", m.name, err)
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return zero, fmt.Errorf("qcache: %s: encode body: %w", m.name, err)
	}
	u := m.ep.url(path, query)
	if m.queued {
		release, err := m.turn(ctx, key)
		if err != nil {
			return zero, err
		}
		defer release()
	}

	// From here on the mutation has started: every path ends in the
	// settling below.
	var rollbacks []func()
	for _, h := range m.onMutate {
		rb, herr := h(ctx, p, body)
		if rb != nil {
			rollbacks = append(rollbacks, rb)
		}
		if herr != nil {
			err = fmt.Errorf("qcache: %s: OnMutate: %w", m.name, herr)
			break
		}
	}
	var r R
	if err == nil {
		r, err = m.send(ctx, u, payload)
	}
	if err == nil {
		for _, h := range m.onSuccess {
			h(ctx, r, p, body)
		}
	} else {
		r = zero
		for i := len(rollbacks) - 1; i >= 0; i-- {
			rollbacks[i]()
		}
		for _, h := range m.onError {
			h(ctx, err, p, body)
		}
	}
	m.invalidate(ctx)
	for _, h := range m.onSettled {
		h(ctx, r, err, p, body)
	}
	return r, err
}

// send makes the request, with its retries; Client.Close cancels it.
func (m *Mutation[P, B, R]) send(ctx context.Context, u string, payload []byte) (R, error) {
	var zero R
	c := m.c
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	defer stop()
	closed := func() bool { return errors.Is(context.Cause(rctx), ErrClosed) }

	for failures := 0; ; {
		if !c.online.Load() {
			select {
			case <-c.onlineWait():
			case <-rctx.Done():
				if closed() {
					return zero, ErrClosed
				}
				return zero, fmt.Errorf("qcache: %s: waiting to be online: %w", m.name, context.Cause(rctx))
			}
		}
		actx, acancel := rctx, context.CancelFunc(func() {})
		if m.cfg.timeout > 0 {
			actx, acancel = context.WithTimeout(rctx, m.cfg.timeout)
		}
		r, err := doJSON[R](actx, c, m.ep.method, u, m.ep.header, payload, true, nil)
		acancel()
		if err == nil {
			return r, nil
		}
		if rctx.Err() != nil {
			if closed() {
				return zero, ErrClosed
			}
			return zero, err
		}
		failures++
		if failures > m.cfg.retry || !retryable(err) {
			return zero, err
		}
		delay, ok := m.retryDelay(failures-1, err)
		if !ok {
			return zero, err // the server asks for a longer wait than the cap
		}
		c.n[nRetries].Add(1)
		c.cfg.logger.DebugContext(rctx, "qcache: retrying mutation", "mutation", m.name, "attempt", failures+1, "delay", delay, "err", err)
		if !wait.Sleep(rctx, delay) {
			if closed() {
				return zero, ErrClosed
			}
			return zero, fmt.Errorf("qcache: %s: waiting to retry: %w (last error: %w)", m.name, context.Cause(rctx), err)
		}
	}
}

// maxMutationRetryDelay caps every wait before a mutation's retry, as
// MaxRetryDelay's default does for queries.
const maxMutationRetryDelay = 30 * time.Second

// retryDelay is the wait before retry n (0 for the first), as for queries:
// it reports false when the server asks for longer than the cap, and the
// mutation then fails with the server's answer instead of waiting.
func (m *Mutation[P, B, R]) retryDelay(n int, err error) (time.Duration, bool) {
	var he *HTTPError
	if errors.As(err, &he) {
		if d, ok, within := backoff.RetryAfterWithin(he.Header, time.Now(), maxMutationRetryDelay); ok {
			return d, within
		}
	}
	if m.cfg.retryDelay != nil {
		return min(max(m.cfg.retryDelay(n, err), 0), maxMutationRetryDelay), true
	}
	return backoff.Exponential(n, time.Second, maxMutationRetryDelay), true
}

// invalidate invalidates the MutationInvalidates filters, each matching entry once,
// and waits for the refetches that starts until they settle or ctx ends.
func (m *Mutation[P, B, R]) invalidate(ctx context.Context) {
	if len(m.cfg.invalidates) == 0 || m.c.closed.Load() {
		return
	}
	seen := map[anyEntry]bool{}
	var waits []func(context.Context) error
	for _, f := range m.cfg.invalidates {
		m.c.sharedInvalidate(ctx, f.Key, f.Exact)
		m.c.publishFilter(EventInvalidate, f)
		for _, e := range m.c.matching(f) {
			if seen[e] {
				continue
			}
			seen[e] = true
			if w := e.invalidate(ctx, f.Refetch, wantWait); w != nil {
				waits = append(waits, w)
			}
		}
	}
	_ = waitAll(ctx, waits)
}

// ---------- mutation options ----------

// MutationOption configures a Mutation in NewMutation.
type MutationOption func(*mutationConfig)

type mutationConfig struct {
	invalidates []Filter
	retry       int
	retryDelay  func(failureCount int, err error) time.Duration
	timeout     time.Duration // bounds each attempt; 0: none
	serial      bool          // queue Do calls per key
	scope       string        // queue Do calls across mutations of this scope
	hooks       []mutationHook
}

// mutationHook is a typed hook kept untyped until NewMutation checks it
// against the mutation's types.
type mutationHook struct {
	kind string // "MutationOnMutate", "MutationOnSuccess", "MutationOnError", "MutationOnSettled"
	fn   any
}

func (c *mutationConfig) addHook(kind string, fn any, isNil bool) {
	if !isNil {
		c.hooks = append(c.hooks, mutationHook{kind, fn})
	}
}

// MutationInvalidates adds filters that are invalidated after every Do that settles,
// successful or not, before Do returns: after a success because the server
// changed, after a failure because an optimistic update was rolled back to
// data that may be outdated and the server may have applied part of the
// change. Do waits for the refetches the invalidation starts (Filter.Refetch
// says which) until they settle or its context ends; their errors land in
// the entries' State, never in Do's result. An entry matched by several
// filters is invalidated once. Calls that never start (the client is
// closed, ctx has ended, p cannot be bound, ctx ends while waiting for a
// turn under MutationSerial or MutationScope) invalidate nothing.
func MutationInvalidates(filters ...Filter) MutationOption {
	filters = append([]Filter(nil), filters...)
	return func(c *mutationConfig) { c.invalidates = append(c.invalidates, filters...) }
}

// Invalidates is the old name of MutationInvalidates.
//
// Deprecated: use MutationInvalidates.
func Invalidates(filters ...Filter) MutationOption { return MutationInvalidates(filters...) }

// MutationRetry sets how many times a failed request of a mutation is
// retried after the first attempt (default 0: mutations are not retried,
// since they are usually not idempotent). As for queries, 4xx answers other
// than 408 and 429, decode and validation errors are never retried, and a
// Retry-After header sets the delay.
func MutationRetry(n int) MutationOption {
	if n < 0 {
		panic(fmt.Sprintf("qcache: MutationRetry(%d): negative", n))
	}
	return func(c *mutationConfig) { c.retry = n }
}

// MutationTimeout bounds each attempt of a mutation's request, from the
// request to the end of the response's body (default 0: no bound but Do's
// context and the http.Client's own Timeout). An attempt that runs out
// fails with an error wrapping context.DeadlineExceeded; it is retried, as
// any transport error, only when MutationRetry allows it (the server may
// have applied the write before the answer was cut).
func MutationTimeout(d time.Duration) MutationOption {
	nonNegative("MutationTimeout", d)
	return func(c *mutationConfig) { c.timeout = d }
}

// MutationRetryDelay sets the delay before each retry of a mutation, as
// RetryDelay does for a query (default min(1s·2^failureCount, 30s)).
func MutationRetryDelay(f func(failureCount int, err error) time.Duration) MutationOption {
	return func(c *mutationConfig) { c.retryDelay = f }
}

// MutationSerial makes Do calls of the mutation whose parameters have the same key
// (Mutation.Key) run one at a time, in the order they were called: each
// waits for the one before it to settle, hooks and invalidation included.
// Calls with different keys still run in parallel. Combined with
// MutationScope, the queue is shared by every mutation of the scope, per
// key.
func MutationSerial() MutationOption {
	return func(c *mutationConfig) { c.serial = true }
}

// Serial is the old name of MutationSerial.
//
// Deprecated: use MutationSerial.
func Serial() MutationOption { return MutationSerial() }

// MutationScope makes Do calls of every mutation of the client given the
// same scope name run one at a time, in the order they were called, whatever
// their parameters (TanStack Query's scope.id). With MutationSerial as well, the
// queue is per scope and key: calls of the scope's mutations on the same key
// run one at a time, calls on different keys in parallel. An empty name
// turns the scope off.
func MutationScope(name string) MutationOption {
	return func(c *mutationConfig) { c.scope = name }
}

// MutationOnMutate adds a hook that runs before the request, once the call has its
// turn (see MutationSerial), typically to update cached data optimistically with
// OptimisticUpdate, Query.Update or Query.SetData. The rollback it returns
// (nil for none) runs when the mutation fails, before the MutationOnError hooks;
// the rollbacks of several MutationOnMutate hooks run in reverse order. An error
// from the hook fails the mutation without sending it; the rollbacks of the
// hooks that ran, including one returned with the error, still run.
//
// P and B must be the mutation's types, or NewMutation panics naming both;
// with a function literal Go infers them.
func MutationOnMutate[P comparable, B any](f func(ctx context.Context, p P, body B) (rollback func(), err error)) MutationOption {
	return func(c *mutationConfig) { c.addHook("MutationOnMutate", f, f == nil) }
}

// OnMutate is the old name of MutationOnMutate.
//
// Deprecated: use MutationOnMutate.
func OnMutate[P comparable, B any](f func(ctx context.Context, p P, body B) (rollback func(), err error)) MutationOption {
	return MutationOnMutate(f)
}

// MutationOnSuccess adds a hook that runs after a successful request, with its
// decoded result, before the MutationInvalidates filters are invalidated.
//
// P, B and R must be the mutation's types, or NewMutation panics naming
// both.
func MutationOnSuccess[P comparable, B, R any](f func(ctx context.Context, r R, p P, body B)) MutationOption {
	return func(c *mutationConfig) { c.addHook("MutationOnSuccess", f, f == nil) }
}

// OnSuccess is the old name of MutationOnSuccess.
//
// Deprecated: use MutationOnSuccess.
func OnSuccess[P comparable, B, R any](f func(ctx context.Context, r R, p P, body B)) MutationOption {
	return MutationOnSuccess(f)
}

// MutationOnError adds a hook that runs after a failed mutation (the request or an
// MutationOnMutate hook failed, or the context ended or the client closed during
// the call), once the rollbacks have run and before the MutationInvalidates filters
// are invalidated. err is what Do returns.
//
// P and B must be the mutation's types, or NewMutation panics naming both.
func MutationOnError[P comparable, B any](f func(ctx context.Context, err error, p P, body B)) MutationOption {
	return func(c *mutationConfig) { c.addHook("MutationOnError", f, f == nil) }
}

// OnError is the old name of MutationOnError.
//
// Deprecated: use MutationOnError.
func OnError[P comparable, B any](f func(ctx context.Context, err error, p P, body B)) MutationOption {
	return MutationOnError(f)
}

// MutationOnSettled adds a hook that runs last, after success or failure, once the
// MutationInvalidates filters were invalidated and the refetches they started have
// settled (or ctx ended). r is the zero R when err is not nil; err is what
// Do returns.
//
// P, B and R must be the mutation's types, or NewMutation panics naming
// both.
func MutationOnSettled[P comparable, B, R any](f func(ctx context.Context, r R, err error, p P, body B)) MutationOption {
	return func(c *mutationConfig) { c.addHook("MutationOnSettled", f, f == nil) }
}

// OnSettled is the old name of MutationOnSettled.
//
// Deprecated: use MutationOnSettled.
func OnSettled[P comparable, B, R any](f func(ctx context.Context, r R, err error, p P, body B)) MutationOption {
	return MutationOnSettled(f)
}

// ---------- optimistic updates ----------

// OptimisticUpdate replaces p's data with f(old, ok), as Query.Update does,
// and returns a rollback that puts back the data as it was: the old data, or
// no data when there was none (the entry is removed then, as by
// Query.Remove). The rollback does nothing when p's data was written again
// since (by a fetch, SetData, a WebSocket push, another update), so it never
// overwrites newer data; nor does it when the client is closed. It is meant
// for MutationOnMutate:
//
//	qcache.MutationOnMutate(func(ctx context.Context, id int, t Todo) (func(), error) {
//		return qcache.OptimisticUpdate(todo, id, func(Todo, bool) Todo { return t }), nil
//	})
func OptimisticUpdate[P comparable, T any](q *Query[P, T], p P, f func(old T, ok bool) T) (rollback func()) {
	for {
		e, err := q.lockedEntry(p)
		if err != nil {
			return func() {}
		}
		cur := e.snap.Load()
		old, had, ver := cur.data, cur.hasData, e.dataVer
		e.mu.Unlock()
		in := old // old stays the cache's, for the rollback
		if had {
			in = q.out(old)
		}
		v := f(in, had)
		e.mu.Lock()
		if e.isGone() || e.dataVer != ver {
			e.mu.Unlock()
			continue
		}
		e.setDataLocked(v)
		mine := e.dataVer
		e.mu.Unlock()
		var once sync.Once
		return func() {
			once.Do(func() {
				e.mu.Lock()
				if e.isGone() || e.dataVer != mine || q.c.closed.Load() {
					e.mu.Unlock()
					return
				}
				if had {
					e.setDataLocked(old)
					e.mu.Unlock()
					return
				}
				e.mu.Unlock()
				e.remove()
			})
		}
	}
}

// ---------- serialised calls ----------

// mutationQueues holds one FIFO queue per (client, scope, key) while a call
// holds or waits for it; an idle queue is dropped.
var mutationQueues = struct {
	mu sync.Mutex
	m  map[queueID]*mutationQueue
}{m: map[queueID]*mutationQueue{}}

type queueID struct {
	c     *Client
	scope any    // scope name, or the mutation for MutationSerial alone
	key   string // "" when the scope is not per key
}

type mutationQueue struct {
	calls   int             // the holder and the waiters
	waiting []chan struct{} // in call order; closed when the turn is given
}

// turn waits until the call is first in its queue, and returns the function
// that hands the turn on. It fails when ctx ends or the client closes first.
func (m *Mutation[P, B, R]) turn(ctx context.Context, key []string) (release func(), err error) {
	id := queueID{c: m.c, scope: m.scope}
	if m.cfg.serial {
		id.key = strings.Join(key, "\x00")
	}
	qs := &mutationQueues
	release = func() {
		qs.mu.Lock()
		defer qs.mu.Unlock()
		q := qs.m[id]
		q.calls--
		if len(q.waiting) > 0 {
			close(q.waiting[0])
			q.waiting = q.waiting[1:]
		}
		if q.calls == 0 {
			delete(qs.m, id)
		}
	}

	qs.mu.Lock()
	q := qs.m[id]
	if q == nil {
		q = &mutationQueue{}
		qs.m[id] = q
	}
	q.calls++
	if q.calls == 1 {
		qs.mu.Unlock()
		return release, nil
	}
	ch := make(chan struct{})
	q.waiting = append(q.waiting, ch)
	qs.mu.Unlock()

	var cause error
	select {
	case <-ch:
		return release, nil
	case <-ctx.Done():
		cause = fmt.Errorf("qcache: %s: waiting for its turn: %w", m.name, context.Cause(ctx))
	case <-m.c.ctx.Done():
		cause = ErrClosed
	}
	qs.mu.Lock()
	for i, w := range q.waiting {
		if w == ch {
			q.waiting = append(q.waiting[:i:i], q.waiting[i+1:]...)
			q.calls--
			qs.mu.Unlock()
			return nil, cause
		}
	}
	qs.mu.Unlock()
	release() // the turn came meanwhile: hand it on
	return nil, cause
}
