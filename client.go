package qcache

import (
	"cmp"
	"context"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Client holds the cache: every Query made from it, their entries, observers
// and streams, and the focus and online state they react to. A Client is
// safe for concurrent use. Call Close when done with it.
type Client struct {
	cfg    clientConfig
	ctx    context.Context // cancelled by Close (cause ErrClosed); streams and tickers watch it, fetches are aborted one by one
	cancel context.CancelCauseFunc

	closed atomic.Bool
	wg     sync.WaitGroup

	mu        sync.Mutex // guards the fields below and wg.Add against Close
	queries   []anyQuery
	observers map[observerHandle]struct{}
	onlineCh  chan struct{} // closed while online

	evictMu    sync.Mutex   // one eviction at a time; inserters past the bound wait for it
	evictAgain atomic.Int64 // after a pass that could not reach the bound: the count at which to try again

	focused atomic.Bool
	online  atomic.Bool

	gc       gcQueue
	entries  atomic.Int64
	useClock atomic.Uint64 // bounded clients: advanced on every use of an entry but the last used; entries keep it (stamp), for LRU eviction

	n         counters // the sums of the queries' counters; hits are summed when read
	overBound atomic.Uint64

	bus    *busLink            // WithBus; nil without
	sem    *semaphore.Weighted // WithMaxConcurrentFetches; nil without
	shared *sharedTier         // WithSharedStore; nil without

	insp inspectState // inspector pages, histories, streams (introspect.go)

	// stateHook, when set (by tests), sees every state an entry publishes,
	// under the entry's lock.
	stateHook func(key Key, state any)
}

// observerHandle is what the client knows of an observer: the events it
// broadcasts and the end it forces.
type observerHandle interface {
	focusGained()
	reconnected()
	clientClosed()
}

// anyQuery is what the client knows of a Query[P, T]: its entries.
type anyQuery interface {
	eachEntry(yield func(anyEntry) bool)
	// eachEntryUnmerged is eachEntry without building a merged map first
	// (Close).
	eachEntryUnmerged(yield func(anyEntry) bool)
	staticPrefix() Key // every key of the query starts with it
	stats() QueryStats
	stopStale() // Client.Close: empties the query's stale heap for good
	// eachMatch calls yield for the entries a filter selects (keyindex.go).
	eachMatch(f Filter, yield func(anyEntry) bool) bool
}

// NewClient returns a client configured by opts. It starts no goroutine,
// except the two of WithBus.
func NewClient(opts ...ClientOption) *Client {
	cfg := defaultClientConfig()
	for _, o := range opts {
		o(&cfg)
	}
	c := &Client{cfg: cfg, observers: map[observerHandle]struct{}{}, onlineCh: make(chan struct{})}
	close(c.onlineCh)
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.gc.epoch = time.Now()
	if cfg.maxFetches > 0 {
		c.sem = semaphore.NewWeighted(int64(cfg.maxFetches))
	}
	c.focused.Store(true)
	c.online.Store(true)
	c.initInspect()
	c.shared = newSharedTier(c)
	c.startBus()
	return c
}

// Close ends every observer, poller and stream, cancels fetches in flight
// (their waiters get ErrClosed), and waits for the client's goroutines to
// return. Later calls on the client and its queries fail with ErrClosed.
// Close is idempotent; it always returns nil.
//
// Callbacks (fetch functions, interval functions, predicates, message
// handlers, hooks) may call Close: called on one of qcache's goroutines,
// Close ends everything as usual but does not wait, since the goroutine it
// would wait for is its caller's; those goroutines return once their
// callbacks do.
func (c *Client) Close() error {
	wait := !inOwnGoroutine()
	c.mu.Lock()
	if c.closed.Swap(true) {
		c.mu.Unlock()
		if wait {
			c.wg.Wait()
		}
		return nil
	}
	obs := make([]observerHandle, 0, len(c.observers))
	for o := range c.observers {
		obs = append(obs, o)
	}
	queries := slices.Clone(c.queries)
	c.mu.Unlock()

	c.cancel(ErrClosed)
	for _, o := range obs {
		o.clientClosed()
	}
	// Fetches have contexts of their own (deriving thousands of them from
	// one parent would make its lock a point of contention): end them here.
	// A fetch cannot start any more: c.goroutine refuses once closed.
	for _, q := range queries {
		q.eachEntryUnmerged(func(e anyEntry) bool { e.abortFetch(ErrClosed); return true })
	}
	if wait {
		c.wg.Wait()
	}
	// Without the wait, no timer can be armed after these: every fetch was
	// abandoned (its result will be dropped) and no write is taken any more.
	c.gc.stop()
	for _, q := range queries {
		q.stopStale()
	}
	return nil
}

// goroutine runs f in a goroutine that Close waits for. It reports false,
// without running f, once the client is closed.
func (c *Client) goroutine(f func()) bool {
	if !c.addRun() {
		return false
	}
	go runOwned(func() {
		defer c.wg.Done()
		f()
	})
	return true
}

// addRun counts a run as a goroutine of the client, which Close waits for:
// a goroutine about to start (goroutine; a fetch's, entry.runCounted) or a
// fetch its caller runs on its own goroutine (entry.runCounted too); the
// run calls c.wg.Done when it returns. It reports false once the client is closed.
func (c *Client) addRun() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	return true
}

// runOwned runs f. Every goroutine of qcache that may call a user's callback
// runs under it, so that Close, called from such a callback, can see from
// its stack that it must not wait for its own goroutine.
//
//go:noinline
func runOwned(f func()) { f() }

var runOwnedName = runtime.FuncForPC(reflect.ValueOf(runOwned).Pointer()).Name()

// inOwnGoroutine reports whether the caller runs under runOwned: on one of
// qcache's goroutines, in a callback. It walks the stack, so it is for
// Close, not for a hot path.
func inOwnGoroutine() bool {
	pcs := make([]uintptr, 64)
	for {
		n := runtime.Callers(2, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs))
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Function == runOwnedName {
			return true
		}
		if !more {
			return false
		}
	}
}

// SetFocused tells the client whether the service is "focused": what that
// means is the caller's (a leader lease held, a tenant active, a UI in
// front). While unfocused, interval polling pauses unless an observer asks
// for RefetchIntervalInBackground. A transition to focused refetches
// observers per their RefetchOnFocus; setting the same value again does
// nothing.
func (c *Client) SetFocused(focused bool) {
	if c.focused.Swap(focused) == focused || !focused {
		return
	}
	for _, o := range c.observerList() {
		o.focusGained()
	}
}

// IsFocused reports the focus state: true until SetFocused(false).
func (c *Client) IsFocused() bool { return c.focused.Load() }

// SetOnline tells the client whether the upstream can be reached. While
// offline, fetches wait in FetchPaused without calling the fetch function
// and go on when back online; a transition to online also refetches
// observers per their RefetchOnReconnect.
func (c *Client) SetOnline(online bool) {
	c.mu.Lock()
	if c.online.Load() == online {
		c.mu.Unlock()
		return
	}
	c.online.Store(online)
	if online {
		close(c.onlineCh)
	} else {
		c.onlineCh = make(chan struct{})
	}
	c.mu.Unlock()
	if online {
		for _, o := range c.observerList() {
			o.reconnected()
		}
	}
}

// IsOnline reports the online state: true until SetOnline(false).
func (c *Client) IsOnline() bool { return c.online.Load() }

// onlineWait returns a channel that is closed while the client is online.
func (c *Client) onlineWait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.onlineCh
}

func (c *Client) observerList() []observerHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]observerHandle, 0, len(c.observers))
	for o := range c.observers {
		out = append(out, o)
	}
	return out
}

// addObserver registers o for broadcasts; it reports false once closed.
func (c *Client) addObserver(o observerHandle) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.observers[o] = struct{}{}
	return true
}

func (c *Client) removeObserver(o observerHandle) {
	c.mu.Lock()
	delete(c.observers, o)
	c.mu.Unlock()
}

func (c *Client) addQuery(q anyQuery) {
	c.mu.Lock()
	c.queries = append(c.queries, q)
	c.mu.Unlock()
}

func (c *Client) queryList() []anyQuery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.queries)
}

// Stats are counters of a client since it was made. Every fetch that has
// settled counts in exactly one of FetchSuccesses, FetchErrors and
// FetchCancelled, so Fetches is their sum plus the fetches in flight.
//
// Its JSON form uses snake_case names: json.Marshal(client.Stats()) is fit to
// serve as it is.
type Stats struct {
	Entries        int    `json:"entries"`         // now
	Observers      int    `json:"observers"`       // now
	Hits           uint64 `json:"hits"`            // Get answered from memory
	Misses         uint64 `json:"misses"`          // Get that waited for a fetch
	Fetches        uint64 `json:"fetches"`         // fetches started
	FetchErrors    uint64 `json:"fetch_errors"`    // fetches failed after their retries
	Deduplicated   uint64 `json:"deduplicated"`    // callers that joined a fetch in flight
	Retries        uint64 `json:"retries"`         // retried attempts, of fetches and mutations
	Evictions      uint64 `json:"evictions"`       // entries evicted by WithMaxEntries
	FetchSuccesses uint64 `json:"fetch_successes"` // fetches that succeeded (stored, or superseded by SetData or Remove)
	FetchCancelled uint64 `json:"fetch_cancelled"` // fetches cancelled by Cancel, Close or nobody waiting
	OverBound      uint64 `json:"over_bound"`      // inserts that left more entries than WithMaxEntries, because nothing else could be evicted
	StaleServed    uint64 `json:"stale_served"`    // Get answered with stale data (StaleWhileRevalidate); also counted in Hits
	NotModified    uint64 `json:"not_modified"`    // 304 answers that kept the data without decoding it (also in FetchSuccesses)
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	obs := len(c.observers)
	c.mu.Unlock()
	var hits uint64
	for _, q := range c.queryList() {
		hits += q.stats().Hits
	}
	return Stats{
		Entries:        int(c.entries.Load()),
		Observers:      obs,
		Hits:           hits,
		Misses:         c.n[nMisses].Load(),
		Fetches:        c.n[nFetches].Load(),
		FetchErrors:    c.n[nFetchErrors].Load(),
		Deduplicated:   c.n[nDedup].Load(),
		Retries:        c.n[nRetries].Load(),
		Evictions:      c.n[nEvictions].Load(),
		FetchSuccesses: c.n[nFetchSuccesses].Load(),
		FetchCancelled: c.n[nFetchCancelled].Load(),
		OverBound:      c.overBound.Load(),
		StaleServed:    c.n[nStaleServed].Load(),
		NotModified:    c.n[nNotModified].Load(),
	}
}

// evict removes unobserved, idle entries, least recently used first, until
// the client holds at most 95% of WithMaxEntries (so that eviction is
// amortised over many inserts). It runs on the goroutine that inserted past
// the bound; other inserters past the bound wait for it, so that the bound
// holds under concurrent inserts too. Entries just inserted are never taken:
// when nothing else can go, the bound is exceeded and counted in
// Stats.OverBound, and the next pass waits until 5% more entries came (a
// pass per insert would scan every entry each time).
func (c *Client) evict() {
	max := int64(c.cfg.maxEntries)
	if max <= 0 || c.entries.Load() <= max {
		return
	}
	defer func() {
		if c.entries.Load() > max {
			c.overBound.Add(1)
		}
	}()
	if c.entries.Load() < c.evictAgain.Load() {
		return
	}
	// The Evicted hooks run once evictMu is released (hooks run outside
	// every lock of the cache): one that inserts, to keep a key warm, runs
	// evict again.
	for _, e := range c.evictLocked(max) {
		e.evicted(EvictMaxEntries)
	}
}

// evictLocked is evict's pass under evictMu; it returns the entries it
// removed, whose Evicted hooks the caller runs.
func (c *Client) evictLocked(max int64) (removed []anyEntry) {
	c.evictMu.Lock()
	defer c.evictMu.Unlock()
	if n := c.entries.Load(); n <= max || n < c.evictAgain.Load() {
		return nil // another inserter evicted, or found nothing to evict, meanwhile
	}
	queries := c.queryList()

	target := max - max/20
	var candidates []anyEntry
	for _, q := range queries {
		q.eachEntry(func(e anyEntry) bool {
			if e.evictable() {
				candidates = append(candidates, e)
			}
			return true
		})
	}
	// Oldest first. Entries keep the low 32 bits of the use clock, so ages
	// are compared, which the wrap does not disturb (an entry unused for
	// 2³² misses may pass for a young one: the order is a heuristic).
	now := uint32(c.useClock.Load())
	slices.SortFunc(candidates, func(a, b anyEntry) int {
		return cmp.Compare(now-b.lastUsed(), now-a.lastUsed())
	})
	for _, e := range candidates {
		if c.entries.Load() <= target {
			break
		}
		if e.evict() { // counts itself
			removed = append(removed, e)
		}
	}
	if n := c.entries.Load(); n > max {
		c.evictAgain.Store(n + max/20 + 1)
	} else {
		c.evictAgain.Store(0)
	}
	return removed
}
