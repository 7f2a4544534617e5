package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache/internal/backoff"
	"github.com/qcache-go/qcache/internal/wait"
	"golang.org/x/sync/semaphore"
)

// anyEntry is what the client and filters know of an entry, whatever its
// types.
type anyEntry interface {
	entryKey() Key
	// lastUsed is the low 32 bits of the client's use clock when the
	// entry was last used.
	lastUsed() uint32
	evictable() bool
	// evict removes the entry when it may be evicted, and reports whether
	// it did; the caller runs the Evicted hook (evicted) outside its locks.
	evict() bool
	evicted(reason EvictReason)
	// invalidate marks the entry stale and, when rt asks for it, starts an
	// explicit refetch; the returned function waits for that refetch (nil
	// when none started).
	// The refetch carries ctx's values (not its cancellation).
	// w says whether the caller will call wait (wantWait: it counts as a
	// waiter until then) or not (wantPin).
	invalidate(ctx context.Context, rt RefetchType, w want) (wait func(context.Context) error)
	// refetch starts an explicit refetch and returns its wait.
	refetch(ctx context.Context, w want) (wait func(context.Context) error)
	cancelFetch()
	abortFetch(cause error) // as cancelFetch, with waiters getting cause
	remove()
	// setJSON sets data received from a Bus (bus.go).
	setJSON(data []byte) error
	// restoreJSON sets data with the age it had in another cache, when it
	// is newer than the entry's (Hydrate, shared tiers).
	restoreJSON(data []byte, updatedAt time.Time, invalidated bool) (restored bool, err error)
}

// entry is the cache entry of one (query, P): its state, the one fetch in
// flight, the one follow-up fetch, its observers and its timers. Every state
// change goes through setLocked, which publishes it and notifies observers.
type entry[P comparable, T any] struct {
	// What a hit reads, flags and snap, comes first: 16 bytes, which lie in
	// one cache line wherever the 80-byte size class places the entry (at
	// a multiple of 16), as do gcQueued and dataVer beside them, so that a
	// hit, and each match of a prefix invalidation, misses the cache once.
	// The four 4-byte fields fill two words; with a P of up to two words
	// (a string) the entry fills the 80-byte size class
	// (TestEntryStaysOneSizeClass).

	// Read without the lock, on the hit path.
	flags atomic.Uint32 // flagFresh, flagGone, flagNew, flagInvalidated and the fresh generation
	// gcQueued is the entry's place in its query's gc heap plus one (0: not
	// there), guarded by the heap's lock.
	gcQueued int32
	snap     atomic.Pointer[snapshot[T]] // the state, replaced whole under mu on every change; read on the hit path
	// dataVer is advanced whenever Data changes, for Update: only equality
	// is asked, so it wraps harmlessly. What a fetch in flight must know of
	// the invalidations, SetData calls and resets that came after it started
	// is marked on the fetch itself (fetchOp.invalidated, hasSetData, reset).
	// Guarded by mu.
	dataVer uint32
	// lastUse is the low 32 bits of client.useClock when the entry was last
	// used, for LRU eviction, which compares ages (the clock minus it) so
	// that the wrap does no harm.
	lastUse  atomic.Uint32
	mu       sync.Mutex
	q        *Query[P, T]
	inflight *fetchOp[T]
	// ext holds the error, the HTTP meta and the live part (observers);
	// nil until the entry has one of them.
	ext *entryExt[T]
	p   P // the entry's key is derived from it on demand (entryKey): a stored Key cost 56 bytes an entry
	// gcAt is when gc removes the entry, as the gc queue counts; 0 while it
	// is not due. Written under mu and the query's gc heap lock both.
	gcAt time.Duration
}

// Bits of entry.flags.
const (
	flagFresh uint32 = 1 << iota // data present, not invalidated, younger than StaleTime
	flagGone                     // removed (set under mu, never cleared): lookups skip it
	flagNew                      // inserted, not yet locked by its inserter: never evicted
	// flagInvalidated is State.IsInvalidated, kept here rather than in the
	// snapshot so that invalidating an entry publishes no snapshot: it
	// changes under mu only, and only while flagFresh is clear
	// (invalidated data is stale), so a hit never sees it set.
	flagInvalidated
	flagStaleQueued // a live item of the query's stale heap turns it stale (stale.go)

	// The bits above these count the turns to fresh, so that the hit path
	// can tell that the data it loaded was fresh all along (see hit), and
	// the stale heap which of an entry's items is live.
	freshGenOne uint32 = 1 << 5
)

func (e *entry[P, T]) isFresh() bool { return e.flags.Load()&flagFresh != 0 }
func (e *entry[P, T]) isGone() bool  { return e.flags.Load()&flagGone != 0 }

// invalidatedLocked reports whether the entry is invalidated; e.mu is
// held.
func (e *entry[P, T]) invalidatedLocked() bool { return e.flags.Load()&flagInvalidated != 0 }

// hit returns the entry's data when it is fresh and not removed, without a
// lock: the hit path. It loads the flags, the snapshot, and the flags
// again. A turn to stale clears the flag before it publishes the next
// snapshot, and a turn to fresh publishes the snapshot before it sets the
// flag and advances the generation; so equal flags, fresh, around the load
// mean that the snapshot loaded was the fresh one (a Remove that reset the
// entry and a refetch that made it fresh again in between change the
// generation). flagInvalidated, which changes with no snapshot, is never
// set while the entry is fresh, and the stale heap's flag may change at any
// time; a change of either between the loads only makes the hit take the
// slow path.
func (e *entry[P, T]) hit() (T, bool) {
	f := e.flags.Load()
	if f&(flagFresh|flagGone) == flagFresh {
		s := e.snap.Load()
		if e.flags.Load() == f {
			return s.data, true
		}
	}
	var zero T
	return zero, false
}

// markGone sets flagGone and reports whether it was not set before.
func (e *entry[P, T]) markGone() bool { return e.flags.Or(flagGone)&flagGone == 0 }

// swapFlags sets the bits set and clears the bits clear of the flags in
// one atomic step, or none when they are so already.
func (e *entry[P, T]) swapFlags(set, clear uint32) {
	for {
		f := e.flags.Load()
		n := f&^clear | set
		if n == f || e.flags.CompareAndSwap(f, n) {
			return
		}
	}
}

func (e *entry[P, T]) setFresh(fresh bool) {
	if fresh {
		e.flags.Add(freshGenOne) // the generation wraps harmlessly: only equality is asked
		e.flags.Or(flagFresh)
	} else {
		e.flags.And(^flagFresh)
	}
}

// entryLive holds what only some entries need: those with observers or an
// explicit refetch waiting. Most cached entries never do, and keep the
// pointer (in entryExt) nil.
type entryLive[T any] struct {
	observers  []watcher[T]
	followUp   *fetchOp[T] // explicit refetches asked while inflight runs
	lastChange time.Time   // kept once live: what observers count intervals from
}

// liveLocked returns the entry's live part, or nil; e.mu is held.
func (e *entry[P, T]) liveLocked() *entryLive[T] {
	if e.ext == nil {
		return nil
	}
	return e.ext.live
}

// lv returns the entry's live part, made on first use; e.mu is held.
func (e *entry[P, T]) lv() *entryLive[T] {
	if e.ext == nil {
		e.ext = &entryExt[T]{}
	}
	if e.ext.live == nil {
		// Its state changed before it was live: when its data or its error
		// last landed is the last change known (intervals count from it).
		l := &entryLive[T]{lastChange: e.snap.Load().updatedAt(e.q.c)}
		if f := e.ext.failed; f != nil && f.at.After(l.lastChange) {
			l.lastChange = f.at
		}
		e.ext.live = l
	}
	return e.ext.live
}

func (e *entry[P, T]) observersLocked() []watcher[T] {
	if l := e.liveLocked(); l != nil {
		return l.observers
	}
	return nil
}

func (e *entry[P, T]) followUpLocked() *fetchOp[T] {
	if l := e.liveLocked(); l != nil {
		return l.followUp
	}
	return nil
}

// fetchOp is one fetch: started at once, or as a follow-up when the fetch in
// flight settles. Its fields other than data and err are guarded by the
// entry's lock.
type fetchOp[T any] struct {
	// done is closed when the fetch settles. It is made when the op is
	// handed to a caller that waits on it (doneLocked), so a fetch that its
	// starter runs on its own goroutine, and nobody joins, needs none.
	done chan struct{}
	data T
	err  error
	from context.Context // whose values the fetch carries: the context of the call that started it
	// The counts and flags fill three words together: with the contexts
	// below, an op of a T of one word (an int, a pointer) fits the
	// 256-byte size class, which a miss allocates and clears.
	waiters  int32 // callers blocked in wait
	prevFail int32 // FailureCount before the fetch, restored on cancel
	failures int32 // failed attempts, written by the fetch's goroutine before it settles
	pinned   bool  // wanted by someone who does not wait (Prefetch, invalidation, StaleWhileRevalidate)
	settled  bool  // done is closed: settled, or abandoned before its function returned
	nested   bool  // started from inside another fetch's function: takes no slot of a fetch bound
	// inline: the caller that started the fetch runs it on its own
	// goroutine (runCounted, from await); claimed: that caller has taken it on.
	inline, claimed bool
	// What came while the fetch was in flight: an invalidation (its result
	// lands stale, and callers who want fresh data wait for the next fetch),
	// a reset by Remove (its result is not stored).
	invalidated bool
	reset       bool
	hasSetData  bool // setData holds the last SetData while the fetch ran
	direct      bool // an explicit refetch (Fetch, Refetch): the shared tier is not read (shared.go)
	hasDataAt   bool // dataAt is set
	// The fetch's scope, the parent of its context and its first attempt's
	// context, kept here rather than allocated one by one: written by the
	// goroutine that runs the fetch before it settles.
	scope fetchScope
	fc    fetchCtx // the fetch's context, ended by abandonLocked and settleLocked
	att   attemptCtx
	// The last SetData while the fetch ran: what its waiters get, even when
	// the entry is removed before the fetch settles.
	setData T
	// dataAt is when the data landed, since the client's epoch; for a
	// shared hit, the data's own DataUpdatedAt.
	dataAt time.Duration
}

func newEntry[P comparable, T any](q *Query[P, T], p P) *entry[P, T] {
	e := &entry[P, T]{q: q, p: p}
	e.flags.Store(flagNew)
	e.snap.Store(q.emptySnap) // shared: snapshots are replaced whole, never written
	return e
}

// want says who asks for a fetch.
type want int

const (
	wantWait     want = iota // a caller that blocks in wait (Get, Fetch, Refetch)
	wantPin                  // a caller that wants the result stored and does not wait
	wantObserver             // an observer: the fetch lives while an observer or waiter wants it
	// wantInline is a wantWait that runs the fetch on its own goroutine when
	// it starts it (claimInlineLocked): a caller whose context can never
	// end, so that waiting cannot be cut short.
	wantInline
)

// closedChan is a closed channel: the done of an op that settled before
// anyone asked for its channel.
var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// doneLocked makes op's done channel if it has none yet; e.mu is held.
func (op *fetchOp[T]) doneLocked() {
	if op.done == nil {
		op.done = make(chan struct{})
	}
}

// closeDoneLocked marks op's done channel closed; e.mu is held.
func (op *fetchOp[T]) closeDoneLocked() {
	if op.done == nil {
		op.done = closedChan
	} else {
		close(op.done)
	}
}

// claimInlineLocked reports whether the caller, which has just got op from
// joinLocked or refetchLocked with wantInline, must run it itself
// (await); e.mu is held, as it was for the join.
func (op *fetchOp[T]) claimInlineLocked() bool {
	if !op.inline || op.claimed {
		return false
	}
	op.claimed = true
	return true
}

func (op *fetchOp[T]) add(w want) {
	switch w {
	case wantWait, wantInline:
		op.waiters++
	case wantPin:
		op.pinned = true
	}
}

// Freshness actions for setLocked: what a change does to the two parts of
// the state kept in the entry's flags, fresh and invalidated.
const (
	keepFresh       = iota // neither changes
	makeFresh              // data landed: not invalidated, fresh for StaleTime
	makeInvalidated        // stale and invalidated (the data is kept)
	makeStale              // stale and not invalidated: a reset, which drops the data
)

// setLocked is the one place that changes the state: it applies mut to a
// copy of the snapshot and publishes it for lock-free readers (no copy
// when mut is nil: a change of the flags only, such as an invalidation),
// updates freshness and invalidation, and tells the observers.
func (e *entry[P, T]) setLocked(mut func(*snapshot[T]), fresh int) {
	wasInvalidated := e.invalidatedLocked()
	switch fresh {
	case makeInvalidated:
		e.stopStaleTimerLocked()
		e.swapFlags(flagInvalidated, flagFresh) // in one step: invalidated data is never fresh
	case makeStale:
		e.stopStaleTimerLocked()
		e.swapFlags(0, flagFresh|flagInvalidated)
	case makeFresh:
		e.swapFlags(0, flagInvalidated) // markFreshLocked, below, sets flagFresh
	}
	old, ver, failed := e.snap.Load(), e.dataVer, e.failedLocked()
	n := old
	if mut != nil {
		c := *old
		mut(&c)
		n = &c
		e.snap.Store(n)
	}
	if fresh == makeFresh {
		e.markFreshLocked()
	}
	if l := e.liveLocked(); l != nil {
		l.lastChange = time.Now()
	}
	if w := e.q.c.insp.watch.Load(); w != nil { // an inspector is open, or WithHistory (introspect.go)
		e.noteChange(w, old, n, wasInvalidated, e.dataVer != ver, failed)
	}
	if h := e.q.c.stateHook; h != nil {
		h(e.entryKey(), e.stateLocked())
	}
	e.notifyLocked(true)
}

// setDataLocked stores v as fresh data, winning over every fetch in flight.
func (e *entry[P, T]) setDataLocked(v T) {
	if op := e.inflight; op != nil {
		op.setData, op.hasSetData = v, true
	}
	now := e.q.c.clock()
	e.setLocked(func(s *snapshot[T]) { e.dataVer++; e.succeedLocked(s, v, nil, now) }, makeFresh)
}

// restoreJSON decodes data into T, validates it as a fetched body is, and
// sets it as the entry's data as of updatedAt when that is newer than the
// data the entry holds (or it holds none); it reports whether it did. It
// is how data moves between caches with its age (Hydrate; shared tiers):
// see restoreLocked. A decoding or validation error leaves the entry as it
// was.
func (e *entry[P, T]) restoreJSON(data []byte, updatedAt time.Time, invalidated bool) (bool, error) {
	v, err := decodeValue[T](data)
	if err != nil {
		return false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.restoreLocked(v, updatedAt, invalidated), nil
}

// restoreLocked sets v as the entry's data as of updatedAt, and reports
// whether it did: only when the entry holds no data or older data
// (TanStack's hydrate), and is neither removed nor closed. Unlike SetData
// it keeps updatedAt, so StaleTime counts from it (data older than
// StaleTime lands stale), restores the invalidated flag, and does not win
// over a fetch in flight: that fetch's result, newer, replaces v when it
// lands. A time ahead of this clock counts as now, so that a skewed clock
// cannot stretch freshness. It does not publish.
func (e *entry[P, T]) restoreLocked(v T, updatedAt time.Time, invalidated bool) bool {
	if e.isGone() || e.q.c.closed.Load() {
		return false
	}
	at := updatedAt.Sub(e.q.c.gc.epoch) // as an offset from the client's epoch (clock.go)
	if now := e.q.c.clock(); at > now {
		at = now
	}
	if cur := e.snap.Load(); cur.hasData && at <= cur.dataUpdatedAt {
		return false
	}
	fresh := makeFresh
	if invalidated {
		fresh = makeInvalidated
	}
	e.setLocked(func(s *snapshot[T]) { e.dataVer++; e.succeedLocked(s, v, nil, at) }, fresh)
	return true
}

// decodeValue decodes data into a T and validates it, as a fetched body is.
func decodeValue[T any](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("decode into %T: %w", v, err)
	}
	if err := validate(&v); err != nil {
		return v, fmt.Errorf("validate %T: %w", v, err)
	}
	return v, nil
}

// stateLocked returns the state with IsStale filled in.
func (e *entry[P, T]) stateLocked() State[T] {
	s := e.snap.Load().state(e.q.c, e.ext)
	s.IsInvalidated = e.invalidatedLocked()
	s.IsStale = !e.freshLocked()
	return s
}

// freshLocked reports whether the data is fresh now: the fresh flag, and
// not yet StaleTime old. The second test makes the boundary exact: the
// timer that clears the flag may run after a reader that is due at the
// same instant, and only the lock-free hit path reads the flag alone.
func (e *entry[P, T]) freshLocked() bool {
	if !e.isFresh() {
		return false
	}
	st := e.q.cfg.staleTime
	return st == Forever || e.q.c.clock() < addSat(e.snap.Load().dataUpdatedAt, st)
}

func (e *entry[P, T]) notifyLocked(changed bool) {
	obs := e.observersLocked()
	if len(obs) == 0 {
		return
	}
	s := e.stateLocked()
	for _, o := range obs {
		o.deliver(s, changed)
	}
}

func (e *entry[P, T]) markFreshLocked() {
	e.stopStaleTimerLocked()
	st := e.q.cfg.staleTime
	if st <= 0 || !e.snap.Load().hasData || e.isGone() {
		e.setFresh(false)
		return
	}
	if st == Forever {
		e.setFresh(true)
		return
	}
	// StaleTime counts from DataUpdatedAt: now for fetched data, earlier
	// for restored data (restoreLocked).
	at := addSat(e.snap.Load().dataUpdatedAt, st)
	if at <= e.q.c.clock() {
		e.setFresh(false)
		return
	}
	e.setFresh(true)
	// One item in the query's stale heap, not a timer of its own: see
	// stale.go.
	e.q.stale.push(e, at, freshGenOf(e.flags.Load()))
}

func (e *entry[P, T]) markStaleLocked() {
	e.stopStaleTimerLocked()
	e.setFresh(false)
}

// stopStaleTimerLocked takes the entry's data out of the stale heap: its
// item there turns dead, and a turn that is already on its way finds the
// data fresh in another generation, or stale, and does nothing.
func (e *entry[P, T]) stopStaleTimerLocked() {
	e.q.stale.drop(e)
}

// turnStale runs when StaleTime has passed since the data landed, when the
// stale heap finds the entry's item of fresh generation gen due. Observers
// are told (their interval function is asked again) but the turn does not
// count as a state change for interval timing.
func (e *entry[P, T]) turnStale(gen uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.flags.Load(); f&flagFresh == 0 || freshGenOf(f) != gen {
		return // turned stale, or fresh again, since it was queued
	}
	if e.freshLocked() {
		// Not due after all: its data changed without a turn to fresh.
		// Queue it again for the data it holds.
		e.markFreshLocked()
		return
	}
	e.setFresh(false)
	e.notifyLocked(false)
}

// ---------- fetching ----------

// joinLocked returns the fetch in flight, or starts one: the path of callers
// content with any fetch that is running (Get, Prefetch, mount, interval,
// focus, reconnect).
func (e *entry[P, T]) joinLocked(ctx context.Context, w want) *fetchOp[T] {
	if op := e.inflight; op != nil && (op.reset || op.invalidated) {
		// It started before a Remove reset the entry, or before the entry
		// was invalidated: its result is not fresh, so wait for the fetch
		// after it (one, shared by every such caller).
		return e.refetchLocked(ctx, w)
	}
	if op := e.inflight; op != nil {
		e.q.count(nDedup)
		op.add(w)
		op.doneLocked()
		return op
	}
	op := &fetchOp[T]{from: ctx}
	op.add(w)
	e.startLocked(op, w)
	return op
}

// refetchLocked returns a fetch that starts now or, when one is in flight,
// the follow-up that starts when it settles: the path of explicit refetches,
// which need data requested after they asked.
func (e *entry[P, T]) refetchLocked(ctx context.Context, w want) *fetchOp[T] {
	if e.inflight == nil {
		op := &fetchOp[T]{from: ctx}
		op.add(w)
		e.startLocked(op, w)
		return op
	}
	lv := e.lv()
	if lv.followUp == nil {
		lv.followUp = &fetchOp[T]{done: make(chan struct{}), from: ctx}
	} else {
		e.q.count(nDedup)
	}
	lv.followUp.add(w)
	return lv.followUp
}

// startLocked starts op: on a goroutine of its own, or, for w ==
// wantInline, on its starter's (which claims it with claimInlineLocked and
// runs it in await).
func (e *entry[P, T]) startLocked(op *fetchOp[T], w want) {
	c := e.q.c
	// The fetch has a cancellation of its own (Client.Close cancels it
	// through abortFetch), and the values of the context of the call that
	// started it: trace spans, request IDs. Joiners share them. op.fc.vals
	// does what context.WithoutCancel and a context.WithValue for the scope
	// would, and op.fc what context.WithCancelCause of them would, in the
	// op's own memory.
	op.fc.vals = fetchValues{from: op.from, scope: &op.scope}
	op.nested = scopeFrom(op.from) != nil
	op.from = nil // kept in op.fc.vals only
	op.prevFail = e.snap.Load().failureCount
	e.inflight = op
	e.stopGCLocked()
	status := Fetching
	if !c.online.Load() {
		status = FetchPaused
	}
	e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(status); s.failureCount = 0 }, keepFresh)
	e.q.count(nFetches)
	if w == wantInline {
		if c.addRun() {
			op.inline = true
		} else {
			e.abandonLocked(op, ErrClosed)
		}
		return
	}
	op.doneLocked()
	if !c.addRun() {
		e.abandonLocked(op, ErrClosed)
		return
	}
	go e.runCounted(op) // as Client.goroutine does, without its two closures
}

// runCounted runs op, counted in the client's WaitGroup (addRun), under
// runOwned: on a goroutine of its own (startLocked), or on the goroutine
// of the caller that claimed it (claimInlineLocked, await), as
// Client.goroutine would run it on one of its own: Close waits for it, and
// callbacks that call Close from inside it see that they run on qcache's
// behalf. Should run end abnormally (runtime.Goexit in the fetch function,
// a panic outside it that the inline caller recovers), op is abandoned, so
// that its joiners do not wait for ever.
func (e *entry[P, T]) runCounted(op *fetchOp[T]) {
	c := e.q.c
	ok := false
	defer func() {
		if !ok {
			e.mu.Lock()
			e.abandonLocked(op, errFetchAborted)
			e.mu.Unlock()
		}
		c.wg.Done()
	}()
	runOwned(func() { e.run(op) })
	ok = true
}

// run is the goroutine of one fetch: attempts, retries with their delays,
// pauses while offline, then settle, with the hooks around them.
func (e *entry[P, T]) run(op *fetchOp[T]) {
	q := e.q
	c := q.c
	hooks := &c.cfg.hooks
	info := FetchInfo{Query: q.name, Attempt: 1}
	if hooks.FetchStart != nil || hooks.FetchEnd != nil || hooks.Retry != nil {
		info.Key = e.entryKey()
	}
	// ctx is what the fetch function gets: op.fc, or what FetchStart made
	// of it. Waits and cancellation go by op.fc.
	var ctx context.Context = &op.fc
	var start time.Duration // since the client's epoch; FetchEnd's Duration
	if hooks.FetchEnd != nil {
		start = c.clock()
	}
	// Every fetch has a scope (op.scope; op.fc carries it): the HTTP
	// layer's channel, and how a fetch started from inside this one's
	// function knows that it is nested.
	sc := &op.scope
	if q.http {
		e.mu.Lock()
		if s := e.snap.Load(); s.hasData && e.metaLocked() != nil {
			sc.prev, sc.prevData = e.metaLocked(), s.data
		}
		e.mu.Unlock()
	}
	if h := hooks.FetchStart; h != nil {
		replaced := false
		c.callHook("FetchStart", func() {
			if x := h(ctx, info); x != nil {
				ctx, replaced = x, true
			}
		})
		if replaced {
			// What FetchStart made need not derive from op.fc.
			ctx = context.WithValue(ctx, scopeKey{}, sc)
		}
	}
	attempts := 0
	sh, data, done, err := e.sharedBegin(ctx, op)
	for failures := 0; !done; {
		if err = e.waitOnline(op); err != nil {
			break
		}
		var release func()
		if release, err = e.acquireSlot(op); err != nil {
			break
		}
		attempts++
		a := &op.att // the first attempt's context; a context left to a goroutine of the function is never reused
		if attempts > 1 {
			a = new(attemptCtx)
		}
		func() {
			defer release() // even when the function ends its goroutine (runtime.Goexit)
			data, err = q.attempt(ctx, a, e.p)
		}()
		if err == nil {
			break
		}
		if cause := op.fc.causeErr(); cause != nil {
			err = cause
			break
		}
		failures++
		op.failures = int32(failures)
		if !q.shouldRetry(failures, err) {
			break
		}
		delay, ok := q.retryDelay(failures-1, err)
		if !ok {
			break // the server asks for a longer wait than MaxRetryDelay: give the retry up
		}
		// Only a failure that is retried is a change of its own: the last
		// one arrives with the error, in one change.
		e.noteFailure(op, failures)
		q.count(nRetries)
		c.cfg.logger.DebugContext(ctx, "qcache: retrying fetch", "query", q.name, "key", e.keyText(),
			"attempt", failures+1, "delay", delay, "err", err)
		if h := hooks.Retry; h != nil {
			info.Attempt = failures
			c.callHook("Retry", func() { h(ctx, info, err, delay) })
		}
		if !wait.Sleep(&op.fc, delay) {
			err = op.fc.causeErr()
			break
		}
	}
	e.mu.Lock()
	outcome := e.settleLocked(op, data, err)
	e.mu.Unlock()
	e.sharedEnd(ctx, sh, op, outcome)
	if outcome == OutcomeError {
		c.cfg.logger.WarnContext(ctx, "qcache: fetch failed", "query", q.name, "key", e.keyText(),
			"attempts", attempts, "err", err)
	}
	if h := hooks.FetchEnd; h != nil {
		info.Attempt = attempts
		r := FetchResult{FetchInfo: info, Outcome: outcome, Duration: c.clock() - start,
			StatusCode: int(sc.status), Bytes: sc.bytes}
		if outcome == OutcomeError || outcome == OutcomeCancelled {
			r.Err = err
		}
		c.callHook("FetchEnd", func() { h(ctx, r) })
	}
}

// acquireSlot takes a slot of the query's and the client's bounds on
// fetches in flight, waiting in FetchQueued, first come first served, while
// there is none; it returns the function that gives them back. It fails
// with the fetch's cancellation.
func (e *entry[P, T]) acquireSlot(op *fetchOp[T]) (release func(), err error) {
	q := e.q
	if (q.sem == nil && q.c.sem == nil) || op.nested {
		// No bound; or its caller, a fetch function, holds a slot and
		// waits for it: a slot of its own could never come with a bound of
		// one.
		return noRelease, nil
	}
	var held []*semaphore.Weighted
	release = func() {
		for _, s := range held {
			s.Release(1)
		}
	}
	queued := false
	for _, s := range [...]*semaphore.Weighted{q.sem, q.c.sem} {
		if s == nil {
			continue
		}
		if !s.TryAcquire(1) {
			if !queued {
				queued = true
				e.setFetchStatus(op, FetchQueued)
			}
			if err := s.Acquire(&op.fc, 1); err != nil {
				release()
				return nil, op.fc.causeErr()
			}
		}
		held = append(held, s)
	}
	if queued {
		e.setFetchStatus(op, Fetching)
	}
	return release, nil
}

func noRelease() {}

// setFetchStatus publishes st while op is the fetch in flight.
func (e *entry[P, T]) setFetchStatus(op *fetchOp[T], st FetchStatus) {
	e.mu.Lock()
	if e.inflight == op && FetchStatus(e.snap.Load().fetchStatus) != st {
		e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(st) }, keepFresh)
	}
	e.mu.Unlock()
}

// waitOnline blocks, in FetchPaused, while the client is offline.
func (e *entry[P, T]) waitOnline(op *fetchOp[T]) error {
	c := e.q.c
	if c.online.Load() {
		if FetchStatus(e.snap.Load().fetchStatus) == FetchPaused {
			// Started offline, online again before this goroutine ran.
			e.mu.Lock()
			if e.inflight == op && FetchStatus(e.snap.Load().fetchStatus) == FetchPaused {
				e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(Fetching) }, keepFresh)
			}
			e.mu.Unlock()
		}
		return nil
	}
	e.mu.Lock()
	if e.inflight == op && FetchStatus(e.snap.Load().fetchStatus) != FetchPaused {
		e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(FetchPaused) }, keepFresh)
	}
	e.mu.Unlock()
	select {
	case <-c.onlineWait():
	case <-op.fc.Done():
		return op.fc.causeErr()
	}
	e.mu.Lock()
	if e.inflight == op {
		e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(Fetching) }, keepFresh)
	}
	e.mu.Unlock()
	return nil
}

func (e *entry[P, T]) noteFailure(op *fetchOp[T], failures int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight == op {
		e.setLocked(func(s *snapshot[T]) { s.failureCount = int32(failures) }, keepFresh)
	}
}

// settleLocked ends op when its function has returned: it stores the result
// unless the entry was removed or a later SetData or reset supersedes it,
// wakes the waiters, and starts the follow-up if one is waiting or restarts
// the gc clock. The result of an op abandoned before (Cancel, nobody wants
// it, Client.Close) is dropped.
func (e *entry[P, T]) settleLocked(op *fetchOp[T], data T, err error) Outcome {
	if op.settled {
		return OutcomeCancelled
	}
	op.settled = true
	if e.inflight == op {
		e.inflight = nil
	}
	op.fc.cancel(nil)
	var gcNow time.Duration // the clock as the gc queue reads it, when read already
	outcome := OutcomeSuccess
	if err != nil {
		e.q.count(nFetchErrors)
		outcome = OutcomeError
	} else {
		e.q.count(nFetchSuccesses)
	}
	switch {
	case e.isGone(), op.reset:
		// The entry was removed, or reset, while this fetch ran: the result
		// goes to its own waiters only (or SetData's value, when one came
		// after the fetch started).
		op.data, op.err = data, e.wrapErr(err)
		if op.hasSetData {
			op.data, op.err = op.setData, nil
		}
		if !e.isGone() {
			e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(FetchIdle) }, keepFresh)
		}
		if err == nil {
			outcome = OutcomeSuperseded
		}
	case op.hasSetData:
		// SetData wins over every fetch that started before it.
		op.data = e.snap.Load().data
		e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(FetchIdle) }, keepFresh)
		if err == nil {
			outcome = OutcomeSuperseded
		}
	case err != nil:
		op.err = e.wrapErr(err)
		now, failures := time.Now(), op.failures
		e.setLocked(func(s *snapshot[T]) {
			s.fetchStatus = uint8(FetchIdle)
			s.status = uint8(StatusError)
			e.setExtLocked(&failure{err: op.err, at: now}, e.metaLocked())
			s.failureCount = failures
		}, makeInvalidated)
	default:
		sc := &op.scope
		changed := false
		if sc.notModified {
			// 304: the data held is current; it is not decoded again.
			data = e.snap.Load().data
			e.q.count(nNotModified)
		} else {
			changed = !sc.same // the same T value again is no change of data
		}
		meta := sc.meta
		if sc.notModified {
			meta = e.metaLocked()
		}
		op.data = data
		now := e.q.c.clock()
		gcNow = now + 1 // as gcQueue.now reads it
		if op.hasDataAt {
			now = op.dataAt // a shared hit keeps its data's age
		} else {
			op.dataAt, op.hasDataAt = now, true // what the shared tier is told (shared.go)
		}
		fresh := makeFresh
		if op.invalidated {
			fresh = makeInvalidated
		}
		e.setLocked(func(s *snapshot[T]) {
			if changed {
				e.dataVer++ // in the change, so that setLocked sees it (introspect.go)
			}
			s.fetchStatus = uint8(FetchIdle)
			e.succeedLocked(s, data, meta, now)
		}, fresh)
	}
	op.closeDoneLocked()
	e.nextLocked(gcNow)
	return outcome
}

// abandonLocked ends op at once, without waiting for its function to
// return: the function's context ends with cause, the waiters get an error
// wrapping cause, the entry goes back to its state before the fetch (data
// kept, fetch status idle), and the result, when it comes, is dropped.
func (e *entry[P, T]) abandonLocked(op *fetchOp[T], cause error) {
	op.fc.cancel(cause)
	if op.settled {
		return
	}
	op.settled = true
	e.q.count(nFetchCancelled)
	if errors.Is(cause, ErrClosed) {
		op.err = ErrClosed
	} else {
		op.err = fmt.Errorf("qcache: fetch %s: %w", e.keyText(), cause)
	}
	if e.inflight == op {
		e.inflight = nil
		prev := op.prevFail
		e.setLocked(func(s *snapshot[T]) { s.fetchStatus = uint8(FetchIdle); s.failureCount = prev }, keepFresh)
	}
	op.closeDoneLocked()
	e.nextLocked(0)
}

// nextLocked runs when the fetch in flight has ended: the follow-up starts,
// or the gc clock restarts.
// now is the gc queue's clock (gcQueue.now) when the caller has read it,
// else 0.
func (e *entry[P, T]) nextLocked(now time.Duration) {
	if next := e.followUpLocked(); next != nil {
		e.ext.live.followUp = nil
		e.startLocked(next, wantWait)
		return
	}
	e.scheduleGCAtLocked(now)
}

// keyText is the key for errors and logs, cut as URLs are (a path value
// of megabytes must not make an error of megabytes).
func (e *entry[P, T]) keyText() string { return shortURL(e.entryKey().String()) }

func (e *entry[P, T]) wrapErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("qcache: fetch %s: %w", e.keyText(), err)
}

// inlineIf returns how a caller that waits with ctx wants a fetch:
// wantInline when ctx can never end (its Done is nil, as
// context.Background's is), since nothing can then cut its wait short, so
// it may as well run a fetch that it starts itself; wantWait otherwise.
func inlineIf(ctx context.Context) want {
	if ctx.Done() == nil {
		return wantInline
	}
	return wantWait
}

// await returns op's result: it runs op on the caller's goroutine first
// when the caller claimed it (claimInlineLocked, under the lock that handed
// op out), else it waits as wait does.
func (e *entry[P, T]) await(ctx context.Context, op *fetchOp[T], inline bool) (T, error) {
	if inline {
		e.runCounted(op)
		return op.data, op.err
	}
	return e.wait(ctx, op)
}

// wait blocks until op settles or ctx ends; a caller whose context ends
// leaves at once, and the fetch is cancelled when nobody wants it any more.
func (e *entry[P, T]) wait(ctx context.Context, op *fetchOp[T]) (T, error) {
	select {
	case <-op.done:
		return op.data, op.err
	case <-ctx.Done():
		select {
		case <-op.done:
			return op.data, op.err
		default:
		}
		e.leave(op)
		var zero T
		return zero, fmt.Errorf("qcache: %s: %w", e.keyText(), context.Cause(ctx))
	}
}

// leave is a waiter of op giving up. When it was the last one and neither
// an observer nor a pinning caller wants op, op is cancelled (or, as a
// follow-up, dropped).
func (e *entry[P, T]) leave(op *fetchOp[T]) {
	e.mu.Lock()
	defer e.mu.Unlock()
	op.waiters--
	if op.waiters > 0 || op.pinned || len(e.observersLocked()) > 0 || op.settled {
		return
	}
	switch op {
	case e.inflight:
		e.abandonLocked(op, context.Canceled)
	case e.followUpLocked():
		e.dropFollowUpLocked(context.Canceled)
	}
}

// unwatchedLocked runs when the last observer has left: a fetch that no
// caller waits for is cancelled and reverted, whoever started it, and a
// follow-up that nobody waits for is dropped.
func (e *entry[P, T]) unwatchedLocked() {
	if f := e.followUpLocked(); f != nil && f.waiters == 0 {
		e.dropFollowUpLocked(context.Canceled)
	}
	if op := e.inflight; op != nil && op.waiters == 0 {
		e.abandonLocked(op, context.Canceled)
	}
}

func (e *entry[P, T]) dropFollowUpLocked(cause error) {
	l := e.ext.live
	f := l.followUp
	l.followUp = nil
	f.settled = true
	if errors.Is(cause, ErrClosed) {
		f.err = ErrClosed
	} else {
		f.err = fmt.Errorf("qcache: fetch %s: %w", e.keyText(), cause)
	}
	f.closeDoneLocked()
}

// cancelLocked stops the fetch in flight and drops the follow-up; their
// waiters get an error wrapping cause (context.Canceled, or ErrClosed).
func (e *entry[P, T]) cancelLocked(cause error) {
	if e.followUpLocked() != nil {
		e.dropFollowUpLocked(cause)
	}
	if op := e.inflight; op != nil {
		e.abandonLocked(op, cause)
	}
}

// shouldRetry says whether a fetch whose attempt number failures failed
// with err is retried: RetryIf's answer, or Retry's count and retryable.
func (q *Query[P, T]) shouldRetry(failures int, err error) bool {
	if f := q.cfg.retryIf; f != nil {
		ok := false
		q.c.callHook("RetryIf", func() { ok = f(failures-1, err) })
		return ok
	}
	return failures <= q.cfg.retry && retryable(err)
}

func retryable(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode < 400 || he.StatusCode >= 500 || he.StatusCode == 408 || he.StatusCode == 429
	}
	var de *DecodeError
	var pe *panicError
	var re *RequestError
	return !errors.As(err, &de) && !errors.As(err, &pe) && !errors.Is(err, ErrResponseTooLarge) && !errors.As(err, &re)
}

// ---------- invalidation, removal, gc ----------

// entryKey returns the entry's key, built from its P (a new Key each call):
// keys are wanted by filters, hooks, errors and logs, never by a hit.
func (e *entry[P, T]) entryKey() Key {
	k, _ := e.q.keyFn(e.p) // it bound when the entry was made
	return k
}

func (e *entry[P, T]) lastUsed() uint32 { return e.lastUse.Load() }

// touch stamps the entry as used by a hit, for WithMaxEntries' LRU order.
// The use clock advances on every use of an entry other than the last one
// used, so no two entries share a stamp; a key hit again and again writes
// nothing.
func (e *entry[P, T]) touch() {
	c := e.q.c
	if c.cfg.maxEntries > 0 && e.lastUse.Load() != uint32(c.useClock.Load()) {
		e.stamp()
	}
}

// stamp marks the entry as the one used last (a miss, Fetch, a hit). Only
// a bounded client (WithMaxEntries) orders its entries by use: an
// unbounded one's misses and Fetch calls skip the shared clock.
func (e *entry[P, T]) stamp() {
	if c := e.q.c; c.cfg.maxEntries > 0 {
		e.lastUse.Store(uint32(c.useClock.Add(1)))
	}
}

func (e *entry[P, T]) hasEnabledObserverLocked() bool {
	for _, o := range e.observersLocked() {
		if o.enabled() {
			return true
		}
	}
	return false
}

func (e *entry[P, T]) invalidate(ctx context.Context, rt RefetchType, w want) func(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isGone() {
		return nil
	}
	if op := e.inflight; op != nil {
		op.invalidated = true
	}
	if f := e.failedLocked(); f != nil && f.err != nil && !f.invalidated {
		e.ext.failed = &failure{err: f.err, at: f.at, invalidated: true} // CacheErrors serves it no more
	}
	// Only flags change: no snapshot is made, so an entry that nobody
	// observes is invalidated without an allocation.
	e.setLocked(nil, makeInvalidated)
	active := e.hasEnabledObserverLocked()
	var refetch bool
	switch rt {
	case RefetchActive:
		refetch = active
	case RefetchInactive:
		refetch = !active
	case RefetchAll:
		refetch = true
	}
	if !refetch {
		return nil
	}
	return e.waitFunc(e.refetchLocked(ctx, w), w)
}

func (e *entry[P, T]) refetch(ctx context.Context, w want) func(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isGone() {
		return nil
	}
	op := e.refetchLocked(ctx, w)
	op.direct = true
	return e.waitFunc(op, w)
}

// waitFunc returns a wait for a detached op: the caller's context ends its
// wait, never the fetch. The fetch's own error is not returned: it lands in
// the entry's State.
func (e *entry[P, T]) waitFunc(op *fetchOp[T], w want) func(context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-op.done:
		case <-ctx.Done():
			select {
			case <-op.done:
			default:
				if w == wantWait {
					e.leave(op)
				}
				return fmt.Errorf("qcache: %s: %w", e.keyText(), context.Cause(ctx))
			}
		}
		switch {
		case errors.Is(op.err, ErrClosed):
			return ErrClosed
		case errors.Is(op.err, context.Canceled):
			return op.err // cancelled: no data came, and State shows no error
		}
		return nil
	}
}

func (e *entry[P, T]) cancelFetch() { e.abortFetch(context.Canceled) }

func (e *entry[P, T]) abortFetch(cause error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cancelLocked(cause)
}

// remove drops the entry. An entry with observers is reset in place instead:
// its data is dropped, fetches already running do not store their results,
// and enabled observers get a new fetch.
func (e *entry[P, T]) remove() {
	if e.removeOrReset() {
		e.evicted(EvictRemove)
	}
}

// removeOrReset is remove under the lock; it reports whether the entry left
// the cache.
func (e *entry[P, T]) removeOrReset() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isGone() {
		return false
	}
	// The fetch in flight, and the one waiting, are for data that is not
	// wanted any more: cancelled, as TanStack's removeQueries does. Their
	// waiters get an error wrapping context.Canceled.
	e.cancelLocked(context.Canceled)
	if len(e.observersLocked()) == 0 {
		return e.removeLocked()
	}
	if op := e.inflight; op != nil { // cancelled above; marked all the same
		op.reset = true
	}
	e.setLocked(func(s *snapshot[T]) {
		e.dataVer++
		*s = snapshot[T]{fetchStatus: s.fetchStatus}
		e.setExtLocked(nil, nil)
	}, makeStale)
	if e.hasEnabledObserverLocked() {
		e.refetchLocked(context.Background(), wantObserver)
	}
	return false
}

// removeLocked marks the entry gone and drops it from its query; it
// reports whether this call did (once per entry, whoever removes it).
func (e *entry[P, T]) removeLocked() bool {
	e.markStaleLocked()
	e.stopGCLocked()
	if !e.markGone() {
		return false
	}
	if w := e.q.c.insp.watch.Load(); w != nil {
		e.noteRemoved(w)
	}
	e.q.entries.delete(e.p, e)
	e.q.c.entries.Add(-1)
	e.q.nEntries.Add(-1)
	return true
}

func (e *entry[P, T]) evictable() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.evictableLocked()
}

func (e *entry[P, T]) evictableLocked() bool {
	return e.flags.Load()&(flagGone|flagNew) == 0 && len(e.observersLocked()) == 0 &&
		e.inflight == nil && e.followUpLocked() == nil
}

func (e *entry[P, T]) evict() bool {
	e.mu.Lock()
	if !e.evictableLocked() {
		e.mu.Unlock()
		return false
	}
	removed := e.removeLocked()
	e.mu.Unlock()
	if removed {
		e.q.count(nEvictions)
	}
	return removed
}

// evicted calls the Evicted hook; e.mu is not held.
func (e *entry[P, T]) evicted(reason EvictReason) {
	c := e.q.c
	if h := c.cfg.hooks.Evicted; h != nil {
		c.callHook("Evicted", func() { h(EvictInfo{Query: e.q.name, Key: e.entryKey(), Reason: reason}) })
	}
}

func (e *entry[P, T]) stopGCLocked() {
	if e.gcAt != 0 {
		e.q.gc.unschedule(e)
	}
}

// scheduleGCLocked (re)starts the gc clock of an idle entry without
// observers; it does nothing for an entry that is observed or fetching.
func (e *entry[P, T]) scheduleGCLocked() { e.scheduleGCAtLocked(0) }

// scheduleGCAtLocked is scheduleGCLocked with the gc queue's clock read
// already (gcQueue.now), or 0 to read it.
func (e *entry[P, T]) scheduleGCAtLocked(now time.Duration) {
	if !e.evictableLocked() || e.q.c.closed.Load() || e.q.cfg.gcTime == Forever {
		e.stopGCLocked()
		return
	}
	if now == 0 {
		now = e.q.c.gc.now()
	}
	e.q.gc.schedule(e, addSat(now, e.q.cfg.gcTime))
}

// gcDue removes the entry, which its query's gc heap has just taken out as
// due at at, when at is still its gc deadline (it was not rescheduled
// meanwhile) and it is still idle and unobserved.
func (e *entry[P, T]) gcDue(at time.Duration) {
	e.mu.Lock()
	removed := false
	if e.gcAt == at && e.evictableLocked() {
		removed = e.removeLocked() // clears gcAt
	}
	e.mu.Unlock()
	if removed {
		e.evicted(EvictGC)
	}
}

// retryDelay is the wait before retry n (0 for the first): Retry-After when
// the server sent one, else the query's RetryDelay or the default backoff,
// at most MaxRetryDelay. It reports false when the server asked for longer
// than MaxRetryDelay, or when RetryDelay panicked (which is logged, as a
// hook's panic is, since it runs on the fetch's goroutine): the fetch then
// fails rather than park the entry.
func (q *Query[P, T]) retryDelay(n int, err error) (time.Duration, bool) {
	var he *HTTPError
	if errors.As(err, &he) {
		if d, ok, within := backoff.RetryAfterWithin(he.Header, time.Now(), q.cfg.maxRetryDelay); ok {
			return d, within
		}
	}
	if f := q.cfg.retryDelay; f != nil {
		d, ok := time.Duration(0), false
		q.c.callHook("RetryDelay", func() { d, ok = f(n, err), true })
		return min(max(d, 0), q.cfg.maxRetryDelay), ok
	}
	return backoff.Exponential(n, time.Second, q.cfg.maxRetryDelay), true
}
