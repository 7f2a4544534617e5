package qcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The contexts of a fetch. A fetch function gets a context that carries
// the values of the context of the call that started the fetch, ends when
// the fetch is cancelled (its cause says why: context.Canceled, or
// ErrClosed), and ends when the attempt's Timeout runs out
// (context.DeadlineExceeded). Made of context.WithoutCancel,
// context.WithValue and context.WithTimeout, that costs a miss a dozen
// allocations and a timer, though most fetch functions return long before
// their Timeout, many without ever asking for Done. The types below do
// the same in the fetch's own memory (fetchOp holds one of each) and make
// a channel only for a fetch, and arm a timer only for an attempt, whose
// Done is asked for.

// errFetchAborted is what the joiners of a fetch get when the goroutine
// that ran it on its caller's behalf left it without settling it
// (runtime.Goexit in the fetch function).
var errFetchAborted = errors.New("qcache: the fetch's goroutine exited before it settled")

// fetchValues is the parent of a fetch's context: it never ends, and
// carries the values of from, the context of the call that started the
// fetch, and the fetch's scope: context.WithoutCancel(from) and a
// context.WithValue of the scope in one.
type fetchValues struct {
	from  context.Context
	scope *fetchScope
}

func (v *fetchValues) Deadline() (time.Time, bool) { return time.Time{}, false }
func (v *fetchValues) Done() <-chan struct{}       { return nil }
func (v *fetchValues) Err() error                  { return nil }
func (v *fetchValues) String() string              { return "qcache.fetchValues" }

func (v *fetchValues) Value(key any) any {
	if _, ok := key.(scopeKey); ok {
		return v.scope
	}
	return v.from.Value(key)
}

// fetchCtx is the context of a fetch: the values of fetchValues, ended by
// cancel with a cause, as context.WithCancelCause(&vals) would be, in the
// fetch's own memory. Most fetches end without anyone asking for Done, so
// the stdlib context it stands for is made only when Done is first asked
// for (or a context derived from it, or context.AfterFunc, which ask for
// Done), or when context.Cause looks for its cause; from then on
// everything is that context's: its channel, its error and cause, and the
// children that register with it without a goroutine. Err needs neither.
type fetchCtx struct {
	vals  fetchValues
	ended atomic.Bool // cancel has run
	mu    sync.Mutex  // serializes arm and cancel
	cause error       // the first cancel's cause; written under mu before ended
	armed atomic.Pointer[armedFetchCtx]
}

type armedFetchCtx struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// cancel ends the context with cause (context.Canceled when nil); only the
// first call counts, as with a context.CancelCauseFunc.
func (f *fetchCtx) cancel(cause error) {
	f.mu.Lock()
	if f.ended.Load() {
		f.mu.Unlock()
		return
	}
	if cause == nil {
		cause = context.Canceled
	}
	f.cause = cause
	f.ended.Store(true)
	t := f.armed.Load()
	f.mu.Unlock()
	if t != nil {
		t.cancel(cause)
	}
}

// causeErr is context.Cause(f), without making the stdlib context.
func (f *fetchCtx) causeErr() error {
	if !f.ended.Load() {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cause
}

// arm returns the stdlib context f stands for, made on first use.
func (f *fetchCtx) arm() *armedFetchCtx {
	if t := f.armed.Load(); t != nil {
		return t
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.armed.Load(); t != nil {
		return t
	}
	ctx, cancel := context.WithCancelCause(&f.vals)
	t := &armedFetchCtx{ctx: ctx, cancel: cancel}
	if f.ended.Load() {
		cancel(f.cause)
	}
	f.armed.Store(t)
	return t
}

func (f *fetchCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (f *fetchCtx) Done() <-chan struct{}       { return f.arm().ctx.Done() }

func (f *fetchCtx) Err() error {
	if t := f.armed.Load(); t != nil {
		// Its error and its cause change together: ended is set before
		// cancel gets to it.
		return t.ctx.Err()
	}
	if f.ended.Load() {
		return context.Canceled
	}
	return nil
}

func (f *fetchCtx) Value(key any) any {
	switch key.(type) {
	case scopeKey:
		return f.vals.scope
	case *int:
		// Perhaps the key the stdlib's cancel contexts answer with
		// themselves, which context.Cause and the contexts derived from f
		// ask for: the stdlib context f stands for answers it.
		return f.arm().ctx.Value(key)
	}
	return f.vals.from.Value(key)
}

func (f *fetchCtx) String() string { return "qcache.fetchCtx" }

// attemptCtx is the context of one attempt: its parent, the fetch's
// context, ended as well when the query's Timeout has passed since the
// attempt started, and once the attempt has returned (context.Canceled, as
// the cancel of a context.WithTimeout deferred by the attempt would).
//
// Err and Deadline need no timer. The first Done (or a context derived
// from it, or context.AfterFunc, which ask for Done) makes the
// context.WithDeadline of the parent that the attempt stands for, and from
// then on everything is that context's: its channel, its error, its cause
// (context.Cause finds its cancelCtx through Value), and the children
// derived from it register with it as with any stdlib context, without a
// goroutine.
type attemptCtx struct {
	parent   context.Context
	c        *Client
	deadline time.Duration // since the client's epoch
	endedAt  atomic.Int64  // when the attempt returned, since the client's epoch, plus one; 0 before

	mu sync.Mutex // serializes arm and end
	// armed is the stdlib context the attempt stands for, made when Done
	// is first asked for, or when Err first finds the attempt ended: from
	// then on Err is its, which never changes once non-nil.
	armed atomic.Pointer[armedCtx]
}

type armedCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// start makes a the context of an attempt that starts now under parent,
// with timeout d.
func (a *attemptCtx) start(parent context.Context, c *Client, d time.Duration) {
	a.parent, a.c, a.deadline = parent, c, addSat(c.clock(), d)
}

// end runs when the attempt has returned: the context ends, and its timer,
// if armed, stops.
func (a *attemptCtx) end() {
	a.mu.Lock()
	a.endedAt.Store(int64(a.c.clock()) + 1)
	t := a.armed.Load()
	a.mu.Unlock()
	if t != nil {
		t.cancel()
	}
}

// arm returns the stdlib context the attempt stands for, made on first use.
func (a *attemptCtx) arm() *armedCtx {
	if t := a.armed.Load(); t != nil {
		return t
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.armLocked()
}

// armLocked is arm with a.mu held: a context.WithDeadline of the parent
// while the attempt is live, else a context ended as the attempt has
// (endedLocked), which the parent's later end does not change.
func (a *attemptCtx) armLocked() *armedCtx {
	if t := a.armed.Load(); t != nil {
		return t
	}
	var t *armedCtx
	if x := a.endedLocked(); x != nil {
		base := context.WithoutCancel(a.parent)
		if x.err == context.DeadlineExceeded {
			ctx, cancel := context.WithDeadlineCause(base, time.Time{}, x.cause)
			t = &armedCtx{ctx: ctx, cancel: cancel}
		} else {
			ctx, cancel := context.WithCancelCause(base)
			cancel(x.cause)
			t = &armedCtx{ctx: ctx, cancel: func() {}}
		}
	} else {
		ctx, cancel := context.WithDeadline(a.parent, a.c.timeAt(a.deadline))
		t = &armedCtx{ctx: ctx, cancel: cancel}
	}
	a.armed.Store(t)
	return t
}

type ctxEnd struct{ err, cause error }

// endedLocked returns how the unarmed context has ended, nil while it has
// not; a.mu is held. Of the attempt's end and its deadline, the earlier
// counts, as for the context.WithDeadline it stands for with a deferred
// cancel; the parent's end is looked at first.
func (a *attemptCtx) endedLocked() *ctxEnd {
	switch endedAt := time.Duration(a.endedAt.Load()); {
	case a.parent.Err() != nil:
		return &ctxEnd{a.parent.Err(), context.Cause(a.parent)}
	case endedAt != 0 && endedAt-1 < a.deadline:
		return &ctxEnd{context.Canceled, context.Canceled}
	case a.c.clock() >= a.deadline:
		return &ctxEnd{context.DeadlineExceeded, context.DeadlineExceeded}
	}
	return nil
}

func (a *attemptCtx) Deadline() (time.Time, bool) {
	if t := a.armed.Load(); t != nil {
		return t.ctx.Deadline()
	}
	d := a.c.timeAt(a.deadline)
	if pd, ok := a.parent.Deadline(); ok && pd.Before(d) {
		return pd, true
	}
	return d, true
}

func (a *attemptCtx) Done() <-chan struct{} { return a.arm().ctx.Done() }

func (a *attemptCtx) Err() error {
	if t := a.armed.Load(); t != nil {
		return t.ctx.Err()
	}
	if a.parent.Err() == nil && a.endedAt.Load() == 0 && a.c.clock() < a.deadline {
		return nil // live: the common answer, without a lock or a context
	}
	// Ended: the context is armed ended so, so that Err never changes.
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.armLocked().ctx.Err()
}

func (a *attemptCtx) Value(key any) any {
	if _, ok := key.(*int); ok {
		// Perhaps the stdlib's cancel-context key, which context.Cause
		// asks for: the attempt's own context answers it (the parent's
		// would give the parent's cause), as fetchCtx.Value does.
		return a.arm().ctx.Value(key)
	}
	if t := a.armed.Load(); t != nil {
		return t.ctx.Value(key)
	}
	return a.parent.Value(key)
}

func (a *attemptCtx) String() string { return "qcache.attemptCtx" }
