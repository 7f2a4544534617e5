package qcache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/qcache-go/qcache/internal/wait"
)

// Key identifies a cache entry: segments such as {"users", "42", "?page=2"}.
// Query.Key says how a query builds them.
type Key []string

// String returns the segments joined by "/", with a query segment appended
// directly: "users/42?page=2".
func (k Key) String() string {
	var b strings.Builder
	for i, s := range k {
		if i > 0 && !strings.HasPrefix(s, "?") {
			b.WriteByte('/')
		}
		b.WriteString(s)
	}
	return b.String()
}

// HasPrefix reports whether prefix matches k segment by segment: {"users",
// "42"} is a prefix of {"users", "42", "posts"} and of {"users", "42",
// "?page=2"}, not of {"users", "420"}.
func (k Key) HasPrefix(prefix Key) bool {
	return len(prefix) <= len(k) && slices.Equal(k[:len(prefix)], prefix)
}

// RefetchType says which invalidated entries Invalidate refetches.
type RefetchType int

const (
	RefetchActive   RefetchType = iota // default: refetch matching entries that have an enabled observer
	RefetchInactive                    // refetch matching entries without an enabled observer
	RefetchAll                         // refetch every matching entry
	RefetchNone                        // only mark them stale
)

// Filter selects entries across every query of a client. The zero Filter
// matches every entry. Key, Exact and Predicate look at the key; Stale,
// FetchStatus and Where at the entry's state as it is when the filter is
// applied (TanStack's query filters).
type Filter struct {
	Key       Key            // prefix to match, segment by segment; nil matches every entry
	Exact     bool           // match Key exactly instead of as a prefix
	Predicate func(Key) bool // optional extra condition
	Refetch   RefetchType    // what Invalidate refetches

	// Stale: Only stale entries, Not stale ones (fresh), or Either.
	Stale Cond
	// FetchStatus, when not empty, selects entries whose fetch status is
	// one of these.
	FetchStatus []FetchStatus
	// Where is an optional extra condition on the entry's key and state
	// summary; Predicate, which sees the key only, stays for the key alone.
	Where func(EntryInfo) bool
}

// Cond is a condition on a yes-or-no property of an entry, such as
// Filter.Stale.
type Cond int8

const (
	Either Cond = iota // whatever the property (the zero value)
	Only               // only entries that have the property
	Not                // only entries that do not have it
)

// holds reports whether c accepts an entry for which the property is v.
func (c Cond) holds(v bool) bool { return c == Either || (c == Only) == v }

// EntryInfo summarizes one entry for Filter.Where and Filter.MatchEntry.
// Key is the entry's own: it must not be modified.
type EntryInfo struct {
	Key           Key
	Status        Status
	FetchStatus   FetchStatus
	HasData       bool
	IsStale       bool
	IsInvalidated bool
	DataUpdatedAt time.Time
	Observers     int // observers of the entry (enabled or not)
}

// Match reports whether the filter selects key by Key, Exact and
// Predicate, the conditions on the key alone; MatchEntry checks the
// others too.
func (f Filter) Match(key Key) bool {
	if f.Exact {
		if !slices.Equal(key, f.Key) {
			return false
		}
	} else if !key.HasPrefix(f.Key) {
		return false
	}
	return f.Predicate == nil || f.Predicate(key)
}

// MatchEntry reports whether the filter selects the entry that info
// describes: Match of its key, then Stale, FetchStatus and Where.
func (f Filter) MatchEntry(info EntryInfo) bool {
	return f.Match(info.Key) && f.matchState(info)
}

// onState reports whether f has conditions on the entry's state.
func (f Filter) onState() bool {
	return f.Stale != Either || len(f.FetchStatus) > 0 || f.Where != nil
}

func (f Filter) matchState(info EntryInfo) bool {
	return f.Stale.holds(info.IsStale) &&
		(len(f.FetchStatus) == 0 || slices.Contains(f.FetchStatus, info.FetchStatus)) &&
		(f.Where == nil || f.Where(info))
}

// mayMatch reports whether f can select a key that starts with static,
// so that whole queries are skipped without looking at their entries.
func (f Filter) mayMatch(static Key) bool {
	n := min(len(static), len(f.Key))
	if !slices.Equal(static[:n], f.Key[:n]) {
		return false
	}
	return !f.Exact || len(f.Key) >= len(static)
}

// matching returns the entries f selects (eachMatch, keyindex.go, finds
// them without a slice).
func (c *Client) matching(f Filter) []anyEntry {
	var out []anyEntry
	c.eachMatch(f, func(e anyEntry) bool {
		out = append(out, e)
		return true
	})
	return out
}

// Invalidate marks every entry f selects as invalidated, hence stale whatever
// its StaleTime, then refetches those that f.Refetch names (by default the
// ones with an enabled observer). The others refetch on their next Get or
// Use. Refetches are explicit: a fetch already in flight does not count as
// fresh, and a follow-up fetch runs after it. Invalidate returns when the
// refetches it started have settled or ctx ends; their errors land in each
// entry's State, not here. With a ctx that has already ended, Invalidate
// marks the entries, starts no refetch and returns ctx's error.
func (c *Client) Invalidate(ctx context.Context, f Filter) error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.sharedInvalidate(ctx, f.Key, f.Exact)
	c.publishFilter(EventInvalidate, f)
	return c.invalidateLocal(ctx, f)
}

// invalidateLocal is Invalidate without telling the other replicas: for
// what only this client missed (a WebSocket reconnect) and for what came
// from them.
func (c *Client) invalidateLocal(ctx context.Context, f Filter) error {
	rt := refetchFor(ctx, f.Refetch)
	var waits []func(context.Context) error
	c.eachMatch(f, func(e anyEntry) bool {
		if w := e.invalidate(ctx, rt, wantWait); w != nil {
			waits = append(waits, w)
		}
		return true
	})
	return waitAll(ctx, waits)
}

// refetchFor is rt, or RefetchNone when ctx has ended: a call whose context
// has ended never calls a fetch function.
func refetchFor(ctx context.Context, rt RefetchType) RefetchType {
	if ctx.Err() != nil {
		return RefetchNone
	}
	return rt
}

// Refetch refetches every entry f selects now, invalidated or not, and
// returns when those fetches have settled or ctx ends (f.Refetch is
// ignored). Like Fetch, each refetch returns data requested after the call.
// With a ctx that has already ended it does nothing and returns ctx's error.
func (c *Client) Refetch(ctx context.Context, f Filter) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qcache: refetch: %w", context.Cause(ctx))
	}
	var waits []func(context.Context) error
	c.eachMatch(f, func(e anyEntry) bool {
		if w := e.refetch(ctx, wantWait); w != nil {
			waits = append(waits, w)
		}
		return true
	})
	return waitAll(ctx, waits)
}

// waitAll calls every wait (once ctx has ended each returns at once, and
// leaves its fetch) and returns the first error.
func waitAll(ctx context.Context, waits []func(context.Context) error) error {
	var first error
	for _, w := range waits {
		if err := w(ctx); err != nil && first == nil {
			first = err
		}
	}
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("qcache: %w", context.Cause(ctx))
	}
	return first
}

// Cancel stops the fetches in flight of every entry f selects. Their entries
// go back to the state they had before the fetch (data kept, FetchIdle) and
// their waiters get an error wrapping context.Canceled.
func (c *Client) Cancel(f Filter) {
	c.eachMatch(f, func(e anyEntry) bool {
		e.cancelFetch()
		return true
	})
}

// Remove drops every entry f selects. Entries that have observers are reset
// instead (data dropped) and refetched for them.
func (c *Client) Remove(f Filter) {
	c.publishFilter(EventRemove, f)
	c.eachMatch(f, func(e anyEntry) bool {
		e.remove()
		return true
	})
}

// Keys returns the keys of the entries f selects, sorted.
func (c *Client) Keys(f Filter) []Key {
	var keys []Key
	c.eachMatch(f, func(e anyEntry) bool {
		keys = append(keys, append(Key(nil), e.entryKey()...))
		return true
	})
	slices.SortFunc(keys, func(a, b Key) int { return slices.Compare(a, b) })
	return keys
}

// InvalidateEvery invalidates f every interval until stop is called, ctx
// ends or the client closes (the seed page's "invalidate on interval").
// Each round does not wait for the refetches of the one before. stop waits
// for the goroutine to return; it may be called more than once. It panics if
// every is not positive.
func (c *Client) InvalidateEvery(ctx context.Context, every time.Duration, f Filter) (stop func()) {
	if every <= 0 {
		panic(fmt.Sprintf("qcache: InvalidateEvery(%v): interval not positive", every))
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	started := c.goroutine(func() {
		defer close(done)
		t := wait.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.invalidateRound(ctx, f)
			case <-ctx.Done():
				return
			case <-c.ctx.Done():
				return
			}
		}
	})
	if !started {
		close(done)
	}
	return func() {
		cancel()
		<-done
	}
}

// logFilterPanic, deferred by a goroutine of qcache's that matches a
// user's Filter, logs a panicking Predicate or Where (as "qcache: <where>:
// filter predicate panicked", with args) instead of letting it end the
// process.
func (c *Client) logFilterPanic(ctx context.Context, where string, args ...any) {
	if r := recover(); r != nil {
		c.cfg.logger.ErrorContext(ctx, "qcache: "+where+": filter predicate panicked", append(args, "panic", r)...)
	}
}

// invalidateRound is one round of InvalidateEvery. It runs on the client's
// goroutine, so a panicking Predicate is logged instead of ending the
// process.
func (c *Client) invalidateRound(ctx context.Context, f Filter) {
	defer c.logFilterPanic(ctx, "InvalidateEvery")
	c.eachMatch(f, func(e anyEntry) bool {
		e.invalidate(ctx, f.Refetch, wantPin)
		return true
	})
}

// Invalidate invalidates p's entry and refetches it when it has an enabled
// observer, as Client.Invalidate does for one entry. It returns when that
// refetch has settled or ctx ends.
func (q *Query[P, T]) Invalidate(ctx context.Context, p P) error {
	if q.c.closed.Load() {
		return ErrClosed
	}
	q.sharedInvalidateKey(ctx, p)
	q.publishKey(EventInvalidate, p)
	e := q.lookup(p)
	if e == nil {
		return nil
	}
	if w := e.invalidate(ctx, refetchFor(ctx, RefetchActive), wantWait); w != nil {
		return w(ctx)
	}
	return waitAll(ctx, nil)
}

// InvalidateAll invalidates every entry of the query, as Client.Invalidate
// does, refetching those with an enabled observer.
func (q *Query[P, T]) InvalidateAll(ctx context.Context) error {
	if q.c.closed.Load() {
		return ErrClosed
	}
	q.sharedInvalidateAll(ctx)
	q.publishAll()
	var waits []func(context.Context) error
	rt := refetchFor(ctx, RefetchActive)
	q.eachEntry(func(e anyEntry) bool {
		if w := e.invalidate(ctx, rt, wantWait); w != nil {
			waits = append(waits, w)
		}
		return true
	})
	return waitAll(ctx, waits)
}
