package qcache

import (
	"context"
	"reflect"
	"time"
)

// Hooks are optional functions that qcache calls as it works, for metrics,
// traces and logs (the qcacheprom and qcacheotel sub-modules are built on
// them). A nil field costs nothing. Every hook is called outside every lock
// of the cache, on the goroutine that did the work; it must return quickly
// and must not block. A hook that panics is recovered and logged at Error;
// the cache goes on.
//
// Hits and misses are not hooks: the hit path stays free of calls. They are
// counted per query: Query.Stats and Client.QueryStats.
type Hooks struct {
	// FetchStart is called when a fetch starts, before its first attempt,
	// with the fetch's context (which carries the values of the context of
	// the call that started it). The context it returns, if not nil, is the
	// one the fetch function and FetchEnd get: a tracer starts a span here.
	FetchStart func(ctx context.Context, f FetchInfo) context.Context
	// FetchEnd is called once per fetch that FetchStart saw, when its
	// function has returned for the last time.
	FetchEnd func(ctx context.Context, f FetchResult)
	// Retry is called before each retry's wait, with the error of the
	// attempt that failed.
	Retry func(ctx context.Context, f FetchInfo, err error, delay time.Duration)
	// Evicted is called when an entry leaves the cache.
	Evicted func(e EvictInfo)
	// ObserverAdded and ObserverRemoved are called when Use starts an
	// observer and when it ends.
	ObserverAdded, ObserverRemoved func(query string, key Key)
	// WSConnected is called when a WebSocket link is up; WSDropped when it
	// went down (err says why; nil when the stream was closed).
	WSConnected func(url string)
	WSDropped   func(url string, err error)
	// WSMessage is called after each message was handed to the handler,
	// with the handler's error, if any.
	WSMessage func(url string, size int, err error)
	// BusPublished and BusReceived are called for each event sent to, or
	// taken from, the other replicas; BusDropped for an event that was not
	// sent or not applied (reason says why); BusResync when every local
	// entry was invalidated because events were lost.
	BusPublished, BusReceived func(kind EventKind)
	BusDropped                func(kind EventKind, reason string)
	BusResync                 func()
}

// FetchInfo describes a fetch for Hooks.
type FetchInfo struct {
	Query   string // the query's name (QueryName): bounded, fit for a metric label
	Key     Key    // the entry's key: unbounded, for spans and logs, never for metric labels
	Attempt int    // 1 for the first attempt
}

// FetchResult describes a fetch that ended.
type FetchResult struct {
	FetchInfo         // Attempt is the number of attempts made
	Outcome   Outcome // how it ended
	Err       error   // the last attempt's error (for OutcomeError and OutcomeCancelled)
	Duration  time.Duration
	// StatusCode and Bytes are those of the last HTTP answer (NewQuery only;
	// 0 otherwise): its status, and the bytes of its body that were read.
	StatusCode int
	Bytes      int64
}

// Outcome is how a fetch ended.
type Outcome int

const (
	OutcomeSuccess    Outcome = iota // the data was stored
	OutcomeError                     // it failed after its retries; the entry holds the error
	OutcomeCancelled                 // Cancel, Client.Close, or nobody wanted it any more; its result was dropped
	OutcomeSuperseded                // it succeeded, but a SetData or a Remove came after it started: nothing stored
)

// String returns "success", "error", "cancelled" or "superseded".
func (o Outcome) String() string {
	switch o {
	case OutcomeSuccess:
		return "success"
	case OutcomeError:
		return "error"
	case OutcomeCancelled:
		return "cancelled"
	case OutcomeSuperseded:
		return "superseded"
	}
	return "Outcome(?)"
}

// EvictInfo describes an entry that left the cache.
type EvictInfo struct {
	Query  string
	Key    Key
	Reason EvictReason
}

// EvictReason says why an entry left the cache.
type EvictReason int

const (
	EvictGC         EvictReason = iota // unobserved for GCTime
	EvictMaxEntries                    // WithMaxEntries took it, least recently used first
	EvictRemove                        // Remove, or a Bus event of another replica
)

// String returns "gc", "max_entries" or "remove".
func (r EvictReason) String() string {
	switch r {
	case EvictGC:
		return "gc"
	case EvictMaxEntries:
		return "max_entries"
	case EvictRemove:
		return "remove"
	}
	return "EvictReason(?)"
}

// WithHooks installs h; see Hooks. Options given later replace earlier
// ones whole.
func WithHooks(h Hooks) ClientOption { return func(c *clientConfig) { c.hooks = h } }

// callHook runs f, a hook, recovering a panic: a broken hook never breaks
// the cache.
func (c *Client) callHook(name string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.cfg.logger.ErrorContext(c.ctx, "qcache: hook panicked", "hook", name, "panic", r)
		}
	}()
	f()
}

// fetchScope is what one fetch and the HTTP layer tell each other, through
// the attempt's context: what the entry holds, for a conditional request,
// and what the last answer was, for the entry and for FetchEnd. Only the
// fetch's own goroutine touches it.
type fetchScope struct {
	// Of the data the entry held when the fetch started; prev is nil when
	// it has none that came from this server.
	prev     *httpMeta
	prevData any // a T

	// Of the last answer.
	status      int32
	notModified bool // 304: the entry's data is current
	same        bool // a body byte-identical to prev's: prevData returned, not decoded
	bytes       int64
	meta        *httpMeta // of the answer that brought data
}

// httpMeta is what an HTTP answer says of its data: its validators, and a
// hash of its body. An entry keeps it beside its data; it is never changed
// once made.
type httpMeta struct {
	etag, lastModified string
	hash               uint64
}

type scopeKey struct{}

// scopeFrom returns the fetch's scope, or nil.
func scopeFrom(ctx context.Context) *fetchScope {
	sc, _ := ctx.Value(scopeKey{}).(*fetchScope)
	return sc
}

// JoinHooks returns Hooks that call, for each event, the hooks of hs that
// are set, in the order given: so that several adapters (qcacheprom,
// qcacheotel, a logger of one's own) share one client. The FetchStart
// hooks are chained: each gets the context the one before it returned, and
// FetchEnd and Retry get the last one's. A field that no hook of hs sets
// stays nil, and costs nothing. JoinHooks does not recover panics itself:
// the client recovers a panic of a joined hook, and the hooks after it are
// not called for that event.
func JoinHooks(hs ...Hooks) Hooks {
	var j Hooks
	j.FetchStart = join(hs, func(h Hooks) func(context.Context, FetchInfo) context.Context { return h.FetchStart },
		func(fs []func(context.Context, FetchInfo) context.Context) func(context.Context, FetchInfo) context.Context {
			return func(ctx context.Context, f FetchInfo) context.Context {
				for _, h := range fs {
					if x := h(ctx, f); x != nil {
						ctx = x
					}
				}
				return ctx
			}
		})
	j.FetchEnd = join(hs, func(h Hooks) func(context.Context, FetchResult) { return h.FetchEnd },
		func(fs []func(context.Context, FetchResult)) func(context.Context, FetchResult) {
			return func(ctx context.Context, r FetchResult) {
				for _, h := range fs {
					h(ctx, r)
				}
			}
		})
	j.Retry = join(hs, func(h Hooks) func(context.Context, FetchInfo, error, time.Duration) { return h.Retry },
		func(fs []func(context.Context, FetchInfo, error, time.Duration)) func(context.Context, FetchInfo, error, time.Duration) {
			return func(ctx context.Context, f FetchInfo, err error, d time.Duration) {
				for _, h := range fs {
					h(ctx, f, err, d)
				}
			}
		})
	j.Evicted = join(hs, func(h Hooks) func(EvictInfo) { return h.Evicted },
		func(fs []func(EvictInfo)) func(EvictInfo) {
			return func(e EvictInfo) {
				for _, h := range fs {
					h(e)
				}
			}
		})
	observer := func(fs []func(string, Key)) func(string, Key) {
		return func(query string, k Key) {
			for _, h := range fs {
				h(query, k)
			}
		}
	}
	j.ObserverAdded = join(hs, func(h Hooks) func(string, Key) { return h.ObserverAdded }, observer)
	j.ObserverRemoved = join(hs, func(h Hooks) func(string, Key) { return h.ObserverRemoved }, observer)
	j.WSConnected = join(hs, func(h Hooks) func(string) { return h.WSConnected },
		func(fs []func(string)) func(string) {
			return func(url string) {
				for _, h := range fs {
					h(url)
				}
			}
		})
	j.WSDropped = join(hs, func(h Hooks) func(string, error) { return h.WSDropped },
		func(fs []func(string, error)) func(string, error) {
			return func(url string, err error) {
				for _, h := range fs {
					h(url, err)
				}
			}
		})
	j.WSMessage = join(hs, func(h Hooks) func(string, int, error) { return h.WSMessage },
		func(fs []func(string, int, error)) func(string, int, error) {
			return func(url string, size int, err error) {
				for _, h := range fs {
					h(url, size, err)
				}
			}
		})
	kind := func(fs []func(EventKind)) func(EventKind) {
		return func(k EventKind) {
			for _, h := range fs {
				h(k)
			}
		}
	}
	j.BusPublished = join(hs, func(h Hooks) func(EventKind) { return h.BusPublished }, kind)
	j.BusReceived = join(hs, func(h Hooks) func(EventKind) { return h.BusReceived }, kind)
	j.BusDropped = join(hs, func(h Hooks) func(EventKind, string) { return h.BusDropped },
		func(fs []func(EventKind, string)) func(EventKind, string) {
			return func(k EventKind, reason string) {
				for _, h := range fs {
					h(k, reason)
				}
			}
		})
	j.BusResync = join(hs, func(h Hooks) func() { return h.BusResync },
		func(fs []func()) func() {
			return func() {
				for _, h := range fs {
					h()
				}
			}
		})
	return j
}

// join picks field out of each of hs: nil when none is set, the one that is
// when only one is, else all of them called in turn by many.
func join[F any](hs []Hooks, field func(Hooks) F, many func([]F) F) F {
	var fs []F
	for _, h := range hs {
		if f := field(h); !reflect.ValueOf(f).IsNil() {
			fs = append(fs, f)
		}
	}
	switch len(fs) {
	case 0:
		var zero F
		return zero
	case 1:
		return fs[0]
	}
	return many(fs)
}
