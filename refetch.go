package qcache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Observer watches one entry and keeps it fresh: it fetches on start, polls,
// and refetches on focus and reconnect, as its options say, and delivers the
// newest state on Changes. Make one with Query.Use; end it with Close, its
// context, or Client.Close.
type Observer[T any] struct {
	c     *Client
	src   obsSource[T]
	ctx   context.Context
	fixed *State[T] // the state of an observer that could not start

	// mu guards cfg, interval, notify, eq, ch and chClosed, and the view
	// its source keeps (the selected value, the placeholder).
	mu       sync.Mutex
	cfg      useConfig
	interval func() time.Duration // asks the RefetchIntervalFunc with the entry's state
	eq       func(a, b T) bool    // equality of data for DataChanged; nil: every new value is a change
	out      func(T) T            // the query's Clone, for Use's observers; nil: none
	// ch is Changes's channel. An observer woken by every change
	// (AnyChange) makes it on the first call of Changes, with the state as
	// it then is, which is the last one it would have delivered: most
	// observers are never read through it (State, or a service that only
	// keeps data fresh), and an idle channel costs more than the rest of
	// the observer's record. One that NotifyOn narrows has it from the
	// start, as the last state delivered may not be the current one.
	ch chan State[T]

	// The goroutine sleeps on wake; what woke it is in events, the end of
	// its step included (evStepped, with the result in stepOK). One
	// channel, and a tick in the client's deadline queue instead of a
	// timer, keep an idle observer small. (A semaphore on a mutex would be
	// 100 bytes smaller, but a goroutine blocked on a mutex is not durably
	// blocked: it would stop the clock of every testing/synctest bubble
	// that holds an observer.)
	wake   chan struct{}
	events atomic.Uint32

	// The small fields together, in one word with events.
	flags       atomic.Uint32 // obsEnabled (read under the entry's lock) and obsEnded
	chClosed    bool          // guarded by mu
	placeholder bool          // guarded by mu: the source shows SetParams's placeholder
	notify      Notify        // guarded by mu: what wakes Changes: NotifyOn's, or defaults
	defaults    Notify        // AnyChange for Use, DataChanged for UseSelect
	stepOK      bool          // written by a step before it signals evStepped
	stopped     bool          // guarded by stepMu: the observer ended, ticks do nothing

	wg sync.WaitGroup

	// Steps run one at a time: the goroutine's, and the interval ticks,
	// which run on goroutines of their own (see gcDue).
	stepMu sync.Mutex
	p      poller // guarded by stepMu
	// tickPos is the place of the observer's next interval tick in the
	// client's deadline queue (gc.go) plus one, 0 while none is queued;
	// guarded by the queue's lock. A *time.Timer per observer cost 156
	// bytes with its function; a place in the queue costs 28.
	tickPos int32
}

// Observer events, bits of Observer.events.
const (
	evChange    = 1 << iota // the entry's state or the options changed
	evTick                  // the interval tick is due
	evFocus                 // the client regained focus
	evReconnect             // the client came back online
	evRemount               // the mount
	evEnable                // Enabled turned on
	evQuit                  // Close or Client.Close
	evStepped               // the goroutine's step has returned
)

// obsSource is what an observer knows of its entry, whatever the entry's P
// and data type: a link (select.go), which also selects the observer's
// value and moves it between entries.
type obsSource[T any] interface {
	// view returns the observer's state now.
	view() State[T]
	// withView calls f with the observer's state now, while no delivery
	// can run (the entry and the observer's mu are locked).
	withView(f func(v *State[T]))
	// lastChange returns when the entry's state last changed, from which
	// intervals count.
	lastChange() time.Time
	// stale reports whether the entry's data is stale now.
	stale() bool
	// deliverSlow is deliver of the link, for the entry's state when the
	// observer is the entry's watcher (Use, where T is the query's).
	deliverSlow(s State[T], changed bool)
	// intervalFunc returns a function that asks f, a RefetchIntervalFunc
	// for the query's data type, with the entry's state; it panics when f
	// is of another type.
	intervalFunc(f any) func() time.Duration
	autoFetch()
	explicitFetch(ctx context.Context) error
	// detach leaves the entry for good.
	detach()
	// move moves the observer to p's entry (SetParams).
	move(p any) error
}

// Use starts an observer of p's entry. It fetches per RefetchOnMount
// (default: when the data is stale; that fetch has started when Use
// returns), shows cached data at once meanwhile, and then keeps the data
// fresh as opts say. Changes delivers the current
// state at once, then after every change (NotifyOn narrows that). The
// observer ends, and its goroutine with it, on Close, when ctx ends, or on
// Client.Close.
//
// Use panics when RefetchIntervalFunc was given a function of another data
// type than T (the method Query.RefetchIntervalFunc is checked by the
// compiler instead), and when Equal was given one of another type.
func (q *Query[P, T]) Use(ctx context.Context, p P, opts ...UseOption) *Observer[T] {
	return use(q, ctx, p, identity[T], q.clone, AnyChange, opts)
}

func identity[T any](v T) T { return v }

// use starts an observer whose state is q's entry's, its data passed
// through sel (once per new data) and out (on every read).
func use[P comparable, T, D any](q *Query[P, T], ctx context.Context, p P, sel func(T) D, out func(D) D,
	defaults Notify, opts []UseOption) *Observer[D] {
	cfg := defaultUseConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	o := &Observer[D]{
		c: q.c, ctx: ctx,
		wake:     make(chan struct{}, 1),
		defaults: defaults,
		out:      out,
	}
	l := &link[P, T, D]{q: q, o: o, p: p, sel: sel, plain: defaults == AnyChange} // Use: AnyChange and the identity
	l.w = l
	if l.plain {
		l.w = any(o).(watcher[T]) // the entry calls o: Observer.deliver
	}
	o.src = l
	o.setConfig(cfg)
	if o.notify&AnyChange == 0 {
		o.ch = make(chan State[D], 1)
	}
	e, err := q.lockedEntry(p)
	if err != nil {
		o.endEarly(State[D]{Status: StatusError, Err: err, IsStale: true})
		return o
	}
	l.e.Store(e)
	if !q.c.addObserver(o) {
		e.mu.Unlock()
		o.endEarly(State[D]{Status: StatusError, Err: ErrClosed, IsStale: true})
		return o
	}
	l.attachLocked(e, true)
	e.mu.Unlock()
	e.observerEvent(true)
	o.wg.Add(1)
	o.stepMu.Lock() // the goroutine's steps and its end wait for the mount
	if !o.start() {
		o.stepMu.Unlock()
		o.cleanup()
		o.wg.Done()
		return o
	}
	if ctx.Err() == nil { // an ended context starts no fetch
		o.mountLocked()
	}
	o.stepMu.Unlock()
	return o
}

// start starts the observer's goroutine as Client.goroutine does, without
// the two closures that would stay allocated while it lives.
func (o *Observer[T]) start() bool {
	c := o.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	go o.main()
	return true
}

func (o *Observer[T]) main() {
	defer o.c.wg.Done()
	runOwned(o.run)
}

func (o *Observer[T]) endEarly(s State[T]) {
	o.fixed = &s
	if o.ch == nil {
		o.ch = make(chan State[T], 1)
	}
	o.ch <- s
	close(o.ch)
	o.chClosed = true
	o.flags.Or(obsEnded)
}

// setConfig installs cfg; it panics on an interval function of another
// data type than the query's, or an equality of another type than T.
func (o *Observer[T]) setConfig(cfg useConfig) {
	var f func() time.Duration
	if cfg.intervalFunc != nil {
		f = o.src.intervalFunc(cfg.intervalFunc)
	}
	notify := cfg.notify
	if notify == 0 {
		notify = o.defaults
	}
	var eq func(a, b T) bool
	if notify&AnyChange == 0 || cfg.equal != nil {
		eq = equalFor[T](cfg) // only DataChanged without AnyChange compares data
	}
	o.mu.Lock()
	o.cfg, o.interval, o.eq, o.notify = cfg, f, eq, notify
	o.mu.Unlock()
	if cfg.enabled {
		o.flags.Or(obsEnabled)
	} else {
		o.flags.And(^uint32(obsEnabled))
	}
}

// Bits of Observer.flags.
const (
	obsEnabled = 1 << iota // Enabled
	obsEnded               // the observer has ended
)

func (o *Observer[T]) enabled() bool { return o.flags.Load()&obsEnabled != 0 }

// State returns the observer's current state: its entry's, with the
// selected value for UseSelect and the placeholder while SetParams's new
// entry loads. It is current whatever NotifyOn says.
func (o *Observer[T]) State() State[T] {
	if o.fixed != nil {
		return *o.fixed
	}
	return o.src.view()
}

// Changes returns a channel that holds the newest state after each change
// that NotifyOn selects (by default every change for Use, a change of the
// selected value for UseSelect): a slow reader misses intermediate states
// but never blocks the cache. It holds the current state as soon as Use
// returns, and is closed when the observer ends.
func (o *Observer[T]) Changes() <-chan State[T] {
	o.mu.Lock()
	ch := o.ch
	o.mu.Unlock()
	if ch == nil {
		ch = o.makeChanges()
	}
	return ch
}

// makeChanges makes the channel of an observer woken by every change, on
// the first call of Changes (or at the end, or when NotifyOn narrows): it
// holds the current state, which is the last one delivered. The view and
// the channel are made while no delivery can run, so none is lost between
// them.
func (o *Observer[T]) makeChanges() chan State[T] {
	var ch chan State[T]
	o.src.withView(func(v *State[T]) {
		if o.ch == nil {
			o.ch = make(chan State[T], 1)
			o.ch <- *v
			if o.chClosed {
				close(o.ch)
			}
		}
		ch = o.ch
	})
	return ch
}

// Refetch fetches now, even when the observer is disabled, and returns the
// state after the fetch. It is an explicit refetch: when a fetch is in
// flight, it waits for the follow-up fetch that starts after it. While it
// runs, State().IsRefetching() is true and the data is kept. ctx ends the
// wait, not the fetch.
func (o *Observer[T]) Refetch(ctx context.Context) (State[T], error) {
	if o.fixed != nil {
		return *o.fixed, o.fixed.Err
	}
	if o.flags.Load()&obsEnded != 0 {
		return o.State(), fmt.Errorf("qcache: refetch of an ended observer: %w", ErrClosed)
	}
	err := o.src.explicitFetch(ctx)
	return o.State(), err
}

// SetOptions changes the observer's options live: opts are applied on top of
// the current ones (the Go form of re-rendering with new options). Turning
// Enabled on fetches per RefetchOnMount.
func (o *Observer[T]) SetOptions(opts ...UseOption) {
	o.mu.Lock()
	cfg := o.cfg
	o.mu.Unlock()
	wasOn := cfg.enabled
	for _, opt := range opts {
		opt(&cfg)
	}
	if n := cfg.notify; n != 0 && n&AnyChange == 0 {
		// Narrower from now on: the channel holds what was delivered so
		// far, while every change still is.
		o.Changes()
	}
	o.setConfig(cfg)
	ev := uint32(evChange)
	if !wasOn && cfg.enabled {
		ev |= evEnable
	}
	o.signal(ev)
}

// Close ends the observer and waits for its goroutine to return; Changes is
// closed by then. Close may be called more than once. Called from a callback
// on one of qcache's goroutines (its own RefetchIntervalFunc, a fetch
// function), Close does not wait: the observer ends once the callback
// returns.
func (o *Observer[T]) Close() {
	o.signal(evQuit)
	if inOwnGoroutine() {
		return
	}
	o.wg.Wait()
}

func (o *Observer[T]) focusGained()  { o.signal(evFocus) }
func (o *Observer[T]) reconnected()  { o.signal(evReconnect) }
func (o *Observer[T]) clientClosed() { o.signal(evQuit) }

// signal records ev and wakes the goroutine; it never blocks.
func (o *Observer[T]) signal(ev uint32) {
	o.events.Or(ev)
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// deliverLocked hands s to the reader of Changes, replacing a state not yet
// read, when NotifyOn selects the change (always when first is set), and
// tells the polling. It never blocks, and reports whether the interval
// function must be asked again. Its source calls it under the entry's lock
// and mu; gen is the generation of s's data and last the mark of the state
// before (see notifyMark), which it updates (nil when AnyChange holds);
// changed says
// that s follows a state change, from which the interval counts.
func (o *Observer[T]) deliverLocked(s *State[T], gen uint64, last *notifyMark, changed, first bool) (reask bool) {
	send := first || o.notify&AnyChange != 0
	if last != nil { // nil: AnyChange, and the mark is not kept
		m := markOf(s, gen)
		send = send || last.differs(m, o.notify)
		*last = m
	}
	if send && o.ch != nil && !o.chClosed {
		select {
		case <-o.ch:
		default:
		}
		o.outLocked(s)
		o.ch <- *s
	}
	reask = o.interval != nil
	if changed && !reask && o.cfg.enabled && o.cfg.interval > 0 {
		// A fixed interval counts from this change, which is now: a queued
		// tick moves to one interval from now, without a step. One that is
		// not queued is being handled, or polling is off or over: the
		// step that queues it next counts from this change itself.
		o.c.gc.reschedule(o, o.cfg.interval)
	}
	return reask
}

// deliver is the entry's call of a Use observer after a change of its
// state (changed) or when its data turned stale: an observer woken by every
// change, without a placeholder or a Clone, delivers the state as it is,
// with no view to build and nothing to compare (its selection and mark are
// brought up to date when it is next viewed or NotifyOn changes: at most
// one extra delivery then). The others go through their link. The entry
// holds its lock.
func (o *Observer[T]) deliver(s State[T], changed bool) {
	o.mu.Lock()
	if o.notify&AnyChange == 0 || o.placeholder || o.out != nil {
		o.mu.Unlock()
		o.src.deliverSlow(s, changed)
		return
	}
	reask := o.deliverLocked(&s, 0, nil, changed, false)
	o.mu.Unlock()
	if reask {
		o.signal(evChange) // the interval function is asked again
	}
}

// outLocked replaces s's data with a copy when the query has a Clone.
func (o *Observer[T]) outLocked(s *State[T]) {
	if o.out != nil && s.HasData {
		s.Data = o.out(s.Data)
	}
}

// poller is the interval state of an observer's steps.
type poller struct {
	// lastTick is when the last tick fired (or polling was switched on),
	// on the deadline queue's clock (gcQueue.now): 8 bytes where a
	// time.Time took 24 and the observer one size class more.
	lastTick time.Duration
	prev     time.Duration // the interval in force; 0 when not polling
}

// run is the observer's goroutine: it sleeps until an event (an option
// change, a state change that its interval function must see, focus,
// reconnect, the end) and fetches as the options say. Ticks fire the
// interval after the latest of the entry's last state change, the last
// tick, and the moment polling was switched on (by options or by the
// interval function), so a slow fetch never stacks ticks and observers of
// one entry share one fetch per interval.
//
// The goroutine itself only waits: the mount runs on Use's caller (see
// mountLocked), and each later step (events, queuing the next tick) on a
// short-lived goroutine while it waits for the result.
// Starting a fetch takes a deep stack, and a stack that grew once stays
// grown (the runtime shrinks only stacks that are mostly unused), so this
// keeps an idle observer at the minimum stack size. Ticks do not wake it:
// they run on a goroutine of their own (see gcDue), and a state change
// moves a fixed interval's tick without a step (see deliver). Of 10,000
// observers ticking in the same millisecond, each tick then starts one
// goroutine besides its fetch, where it started up to four and woke the
// observer's goroutine up to three times.
func (o *Observer[T]) run() {
	defer o.wg.Done()
	defer o.cleanup()
	if o.ctx.Err() != nil {
		return // an ended context starts no fetch
	}
	done := o.ctx.Done()
	for {
		ev := o.events.Swap(0)
		if ev == 0 {
			select {
			case <-o.wake:
			case <-done:
				return
			}
			continue
		}
		if !o.step(ev) {
			return
		}
	}
}

// step handles ev and queues the next tick on a goroutine of its own, and
// reports false when the observer must end. It waits on wake, as the
// goroutine does between steps, for evStepped: events that come meanwhile
// stay in events for the next step.
func (o *Observer[T]) step(ev uint32) bool {
	go runOwned(func() {
		o.stepMu.Lock()
		ok := o.handle(ev)
		if ok {
			o.arm()
		}
		o.stepMu.Unlock()
		o.stepOK = ok
		o.signal(evStepped)
	})
	for o.events.Load()&evStepped == 0 {
		<-o.wake
	}
	o.events.And(^uint32(evStepped))
	return o.stepOK
}

// mountLocked is the mount's step (the fetch per RefetchOnMount, and the
// first tick queued). Use runs it on its caller's goroutine, as Get
// starts its fetch, holding stepMu from before the observer's goroutine
// starts, so that the goroutine's first step and its end come after it.
// Starting the mount on a goroutine of its own would leave one more
// goroutine record per observer for good (the runtime keeps the records of
// every goroutine that was alive at one time, and thousands of observers
// start together); on the observer's goroutine it would grow its stack.
// A RefetchIntervalFunc is user code that may wait for Use to return:
// with one, the first tick is queued by the goroutine's first step, as
// after every change.
func (o *Observer[T]) mountLocked() {
	o.handle(evRemount)
	o.mu.Lock()
	asks := o.interval != nil
	o.mu.Unlock()
	if asks {
		o.signal(evChange)
		return
	}
	o.arm()
}

// gcPos makes the observer's interval tick an item of the client's deadline
// queue (gc.go), which serves thousands of observers' ticks, and the
// entries' deadlines, with one runtime timer.
func (o *Observer[T]) gcPos() *int32 { return &o.tickPos }

// gcDue is the queue's call when the tick is due. The queue calls its due
// items one after another on its one goroutine, and a tick may ask a
// RefetchIntervalFunc (user code) or wait for stepMu behind a step: the
// tick runs on a goroutine of its own, as a timer's function would.
func (o *Observer[T]) gcDue(time.Duration) { go o.tickOwned() }

// tickOwned is the tick's goroutine: one allocation per tick (o, for the
// go statement), where go runOwned(o.tick) made a second for the method
// value.
func (o *Observer[T]) tickOwned() { runOwned(o.tick) }

// tick runs the tick's step on its own short-lived goroutine (see gcDue),
// like every step: waking the observer's goroutine to start one would
// double the goroutines that thousands of observers ticking together queue
// behind.
func (o *Observer[T]) tick() {
	o.stepMu.Lock()
	defer o.stepMu.Unlock()
	if o.stopped {
		return
	}
	o.handle(evTick)
	o.arm()
}

// arm computes when the next tick is due and queues it in the client's
// deadline queue, or takes it out when polling is off; the caller holds
// stepMu.
func (o *Observer[T]) arm() {
	p := &o.p
	g := &o.c.gc
	lastChange := g.clockAt(o.src.lastChange())
	o.mu.Lock()
	cfg, f := o.cfg, o.interval
	o.mu.Unlock()
	d := cfg.interval
	if f != nil {
		d = o.askInterval(f)
	}
	if !cfg.enabled {
		d = 0
	}
	if p.prev == 0 && d > 0 {
		// Polling (re)starts now: the first tick is one interval away.
		p.lastTick = g.now()
	}
	p.prev = d
	if d == 0 {
		g.unschedule(o)
		return
	}
	// Due d after the later of the two, on the queue's clock: the queue
	// fires it when its clock reaches that reading, to the nanosecond, as
	// a timer set for the instant would.
	g.schedule(o, addSat(max(lastChange, p.lastTick), d))
}

// askInterval calls the RefetchIntervalFunc; a panic in it stops polling
// (and is logged) instead of ending the process.
func (o *Observer[T]) askInterval(f func() time.Duration) (d time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			o.c.cfg.logger.ErrorContext(o.ctx, "qcache: RefetchIntervalFunc panicked; polling stops", "panic", r)
			d = 0
		}
	}()
	return max(f(), 0)
}

// handle acts on the events of a step; it reports false when the observer
// must end. The caller holds stepMu.
func (o *Observer[T]) handle(ev uint32) bool {
	p := &o.p
	if ev&evQuit != 0 {
		return false
	}
	o.mu.Lock()
	cfg := o.cfg
	o.mu.Unlock()
	if ev&evTick != 0 && p.prev > 0 {
		g := &o.c.gc
		changed := g.clockAt(o.src.lastChange())
		// The tick is due the interval after the later of the entry's last
		// change and the last tick. A tick that comes earlier (the entry
		// changed after it was queued, by another observer's tick, say)
		// only queues the next one.
		if now := g.now(); now >= addSat(max(changed, p.lastTick), p.prev) {
			p.lastTick = now
			if o.enabled() && (cfg.background || o.c.focused.Load()) {
				o.src.autoFetch()
			}
		}
	}
	if ev&evFocus != 0 {
		o.eventFetch(Trigger(cfg.onFocus))
	}
	if ev&evReconnect != 0 {
		o.eventFetch(Trigger(cfg.onReconnect))
	}
	if ev&evRemount != 0 {
		o.mountFetch()
	}
	if ev&evEnable != 0 {
		// As TanStack's shouldFetchOptionally: an observer switched on
		// fetches stale data, whatever RefetchOnMount says.
		o.eventFetch(WhenStale)
	}
	return true
}

// mountFetch fetches per RefetchOnMount; an entry without data is loaded
// whatever RefetchOnMount says (TanStack's shouldLoadOnMount): Never only
// spares data that is there.
func (o *Observer[T]) mountFetch() {
	o.mu.Lock()
	t := Trigger(o.cfg.onMount)
	o.mu.Unlock()
	if !o.src.view().HasData {
		t = Always
	}
	o.eventFetch(t)
}

func (o *Observer[T]) eventFetch(t Trigger) {
	if !o.enabled() {
		return
	}
	if t == Always || (t == WhenStale && o.src.stale()) {
		o.src.autoFetch()
	}
}

// cleanup detaches the observer from its entry (starting the entry's gc
// clock when it was the last) and the client, takes its tick out of the
// client's deadline queue and closes Changes.
func (o *Observer[T]) cleanup() {
	o.flags.Or(obsEnded)
	// Stopped first, under stepMu: a tick that runs after this does
	// nothing, so none can start a fetch between the detach below (which
	// cancels what nobody wants any more) and the end. Only a step queues
	// a tick (arm, under stepMu, and none runs after this); a deliver
	// before the detach only moves a tick that is queued: once out here,
	// the tick stays out.
	o.stepMu.Lock()
	o.stopped = true
	o.c.gc.unschedule(o)
	o.stepMu.Unlock()
	o.Changes() // made before the detach, it holds the last state the observer saw
	o.src.detach()
	o.c.removeObserver(o)
	o.mu.Lock()
	o.chClosed = true
	close(o.ch)
	o.mu.Unlock()
}

// ---------- observer options ----------

// UseOption configures an Observer in Query.Use and Observer.SetOptions.
type UseOption func(*useConfig)

// Trigger says when an event (mount, focus, reconnect) refetches.
type Trigger int

const (
	WhenStale Trigger = iota // refetch if the data is stale (default)
	Always                   // refetch whatever the data
	Never                    // do not refetch on this event
)

// String returns "WhenStale", "Always" or "Never".
func (t Trigger) String() string {
	switch t {
	case WhenStale:
		return "WhenStale"
	case Always:
		return "Always"
	case Never:
		return "Never"
	}
	return "Trigger(?)"
}

type useConfig struct {
	interval     time.Duration
	intervalFunc any // func(State[T]) time.Duration
	equal        any // func(a, b T) bool
	// The small fields together, so that an idle observer's config stays
	// small: Triggers as int8.
	onFocus, onReconnect, onMount int8
	background                    bool
	enabled                       bool
	deepEqual                     bool
	notify                        Notify // NotifyOn; 0: the observer's default
}

func defaultUseConfig() useConfig { return useConfig{enabled: true} }

// RefetchInterval polls: the observer refetches d after the entry's last
// state change. 0 turns polling off. It replaces a RefetchIntervalFunc.
func RefetchInterval(d time.Duration) UseOption {
	nonNegative("RefetchInterval", d)
	return func(c *useConfig) { c.interval, c.intervalFunc = d, nil }
}

// RefetchIntervalFunc polls with an interval computed from the state. f is
// asked again after every state change and when the data turns stale;
// returning 0 (or less) stops polling until a later answer says otherwise.
// It replaces a RefetchInterval. T must be the query's data type (also for
// UseSelect: f sees the entry's state, not the selected one), or Use
// panics; the method Query.RefetchIntervalFunc takes the same function
// checked by the compiler. A panic in f stops polling and is logged; it
// does not end the process.
func RefetchIntervalFunc[T any](f func(State[T]) time.Duration) UseOption {
	return func(c *useConfig) {
		c.interval, c.intervalFunc = 0, f
		if f == nil {
			c.intervalFunc = nil
		}
	}
}

// RefetchIntervalFunc is the package's RefetchIntervalFunc with f's type
// checked by the compiler against the query's: an observer of q (Use or
// UseSelect) cannot panic on it.
//
//	obs := getJob.Use(ctx, id, getJob.RefetchIntervalFunc(func(s qcache.State[Job]) time.Duration {
//		if s.Data.Done {
//			return 0
//		}
//		return time.Second
//	}))
func (q *Query[P, T]) RefetchIntervalFunc(f func(State[T]) time.Duration) UseOption {
	return RefetchIntervalFunc(f)
}

// RefetchIntervalInBackground keeps polling while the client is not focused
// (default false: interval ticks are skipped while unfocused).
func RefetchIntervalInBackground(on bool) UseOption {
	return func(c *useConfig) { c.background = on }
}

// RefetchOnFocus sets what a focus transition (SetFocused(true) after false)
// does (default WhenStale).
func RefetchOnFocus(t Trigger) UseOption { return func(c *useConfig) { c.onFocus = int8(t) } }

// RefetchOnReconnect sets what going back online (SetOnline(true) after
// false) does (default WhenStale).
func RefetchOnReconnect(t Trigger) UseOption { return func(c *useConfig) { c.onReconnect = int8(t) } }

// RefetchOnMount sets what Use does when the observer starts (default
// WhenStale).
func RefetchOnMount(t Trigger) UseOption { return func(c *useConfig) { c.onMount = int8(t) } }

// Enabled turns every automatic fetch of the observer on or off (default
// on). A disabled observer still fetches on Observer.Refetch.
func Enabled(on bool) UseOption { return func(c *useConfig) { c.enabled = on } }
