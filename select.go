package qcache

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// UseSelect starts an observer of p's entry whose state carries sel's
// result instead of the entry's data: the Go form of TanStack's select.
// sel runs once per new data of the entry (not once per delivery), and
// Changes wakes only when its result changes (NotifyOn(DataChanged) is the
// default here): a service that watches a job's status is not woken by
// fetches that bring the same status, nor by fetch-state flips.
//
// A result equal to the one the observer holds leaves the held one in
// place (TanStack's structural sharing). Equality is Equal's function when
// given, else == for a comparable S, else reflect.DeepEqual when DeepEqual
// is given; otherwise every new result counts as a change.
//
// A panic in sel is not a crash: the state turns StatusError with an error
// that says so, keeping the last good result as Data, until the next data
// of the entry selects without a panic. Both count as DataChanged. sel, like Equal's function, runs
// while the entry is locked: it must be a pure function of its argument
// and must not call qcache, nor modify its argument, which is shared with
// the cache.
//
// Everything else is Query.Use's: the options, fetching and polling, and a
// RefetchIntervalFunc, which is asked with the entry's own State[T] (TanStack
// passes the query to refetchInterval, not the selected data), so
// q.RefetchIntervalFunc fits here too. UseSelect is a function because
// methods cannot have type parameters of their own.
func UseSelect[P comparable, T, S any](q *Query[P, T], ctx context.Context, p P, sel func(T) S, opts ...UseOption) *Observer[S] {
	if sel == nil {
		panic("qcache: UseSelect: nil select function")
	}
	return use(q, ctx, p, sel, nil, DataChanged, opts)
}

// Notify names what wakes an observer's Changes: a set of the constants
// below, given to NotifyOn.
type Notify uint8

const (
	// DataChanged: the observer's data changed (by its equality, see
	// Equal), appeared or went, or turned placeholder or real. The default
	// of UseSelect.
	DataChanged Notify = 1 << iota
	// StatusChanged: Status changed (pending, success, error).
	StatusChanged
	// FetchStatusChanged: FetchStatus changed (idle, fetching, paused).
	FetchStatusChanged
	// ErrorChanged: Err changed: a new error, or none after one.
	ErrorChanged
	// AnyChange: every change of the entry's state, IsStale turning true
	// included. The default of Use.
	AnyChange
)

// NotifyOn chooses which changes Changes delivers (TanStack's
// notifyOnChangeProps): the union of what. Use's default is AnyChange,
// UseSelect's DataChanged; NotifyOn() with nothing goes back to the
// default. States not delivered are not lost: State returns the current
// one, and the next delivery carries every field as it then is. The state
// at the observer's start is always delivered, and the polling and the
// interval function see every change whatever NotifyOn says.
func NotifyOn(what ...Notify) UseOption {
	var n Notify
	for _, w := range what {
		n |= w
	}
	return func(c *useConfig) { c.notify = n }
}

// Equal sets the equality that DataChanged compares an observer's data
// with, T being the observer's data type (the query's for Use, the
// selected one for UseSelect); Use and UseSelect panic when it is not.
// Without it, a comparable T is compared with ==; other types count every
// new value as a change unless DeepEqual is given. This holds for HTTP
// queries too: a body that decodes to an equal value is no change for a
// comparable T, and a change otherwise. When f reports the new value equal
// to the one held, the observer keeps the one it holds. f runs while the
// entry is locked: it must not call qcache. A panic in f counts as "not
// equal". Equal(nil) goes back to the default.
func Equal[T any](f func(a, b T) bool) UseOption {
	return func(c *useConfig) {
		c.equal = f
		if f == nil {
			c.equal = nil
		}
	}
}

// DeepEqual makes DataChanged compare data with reflect.DeepEqual when no
// Equal is given, for every T. It is opt-in because it walks the whole
// value on every new data.
func DeepEqual() UseOption { return func(c *useConfig) { c.deepEqual = true } }

// SetParams moves the observer to the entry of p, which must be of the
// query's parameter type P exactly (it panics otherwise): the Go form of
// changing a query's key while keeping previous data (TanStack's
// placeholderData: keepPreviousData), for paginated views. The old entry
// loses the observer (its gc clock starts when that was the last, and a
// fetch that nobody else wants is cancelled); the new one gains it and is
// fetched when stale, if the observer is enabled. Until the new entry has
// data, the state shows the data the observer showed before, with
// IsPlaceholder and HasData true and Status StatusSuccess, and the other
// fields of the new entry (FetchStatus, IsStale); a new entry that fails
// before it has data shows its error without placeholder. Options,
// polling and NotifyOn carry over.
//
// The interval function, when there is one, is asked with the new entry's
// state.
//
// SetParams returns an error, leaving the observer where it was, when p
// cannot be bound to a key, and an error wrapping ErrClosed when the
// observer has ended or the client is closed. Setting the current p does
// nothing.
func (o *Observer[T]) SetParams(p any) error {
	if o.fixed != nil {
		return fmt.Errorf("qcache: SetParams: the observer did not start: %w", o.fixed.Err)
	}
	return o.src.move(p)
}

// watcher is what an entry knows of an observer: the entry calls deliver
// under its lock after every change of its state (changed) and when its
// data turns stale (!changed).
type watcher[T any] interface {
	deliver(s State[T], changed bool)
	enabled() bool
}

// link connects an Observer[D] to the entry of one P of a Query[P, T]: it
// is the entry's watcher and the observer's obsSource. It turns the entry's
// State[T] into the observer's State[D] (selecting, keeping SetParams's
// placeholder) and moves between entries.
//
// Locks are taken in the order entry, Observer.mu; moveMu before both.
// Never two entries' at once.
type link[P comparable, T, D any] struct {
	q   *Query[P, T]
	o   *Observer[D]
	sel func(T) D
	w   watcher[T]                  // what the entry calls: o itself when plain (D is T), else the link
	e   atomic.Pointer[entry[P, T]] // the entry observed; stored under moveMu and its lock

	moveMu sync.Mutex // serializes move and detach
	p      P          // guarded by moveMu
	closed bool       // guarded by moveMu: detached for good
	plain  bool       // sel is Use's identity

	// The view, guarded by o.mu.
	hasCur  bool
	verOK   bool       // ver is a version of the entry observed now
	cur     D          // the selected value
	gen     uint64     // advanced whenever cur changes, by the observer's equality
	ver     uint32     // the entry's dataVer that cur was selected from
	selFail *failure   // sel panicked on the data of ver
	ph      *D         // SetParams's placeholder: the data shown before the move
	last    notifyMark // the observer's state at the last delivery, for NotifyOn
}

// lockEntry locks and returns the entry observed now.
func (l *link[P, T, D]) lockEntry() *entry[P, T] {
	for {
		e := l.e.Load()
		e.mu.Lock()
		if l.e.Load() == e {
			return e
		}
		e.mu.Unlock()
	}
}

func (l *link[P, T, D]) enabled() bool { return l.o.enabled() }

func (l *link[P, T, D]) deliver(s State[T], changed bool) { l.deliverView(&s, changed) }

// deliverView delivers the observer's view of s, the state of its entry,
// which is locked.
func (l *link[P, T, D]) deliverView(s *State[T], changed bool) {
	o := l.o
	o.mu.Lock()
	var v State[D]
	l.viewLocked(l.e.Load(), s, &v)
	reask := o.deliverLocked(&v, l.gen, &l.last, changed, false)
	o.mu.Unlock()
	if reask {
		o.signal(evChange) // the interval function is asked again
	}
}

// attachLocked adds the link to e, which is locked and now l.e, and
// delivers the observer's state there (always when first).
func (l *link[P, T, D]) attachLocked(e *entry[P, T], first bool) {
	lv := e.lv()
	lv.observers = append(lv.observers, l.w)
	e.stopGCLocked()
	o := l.o
	o.mu.Lock()
	s := e.stateLocked()
	var v State[D]
	l.viewLocked(e, &s, &v)
	reask := o.deliverLocked(&v, l.gen, &l.last, false, first)
	o.mu.Unlock()
	if reask {
		o.signal(evChange)
	}
}

// leaveLocked removes the link from e, which is locked; the last observer
// leaving cancels the fetch nobody waits for and starts the gc clock.
func (l *link[P, T, D]) leaveLocked(e *entry[P, T]) {
	lv := e.lv()
	if i := slices.Index(lv.observers, l.w); i >= 0 {
		lv.observers = slices.Delete(lv.observers, i, i+1)
	}
	if len(lv.observers) == 0 {
		e.unwatchedLocked()
		e.scheduleGCLocked()
	}
}

func (l *link[P, T, D]) detach() {
	l.moveMu.Lock()
	if l.closed {
		l.moveMu.Unlock()
		return
	}
	l.closed = true
	e := l.lockEntry()
	l.leaveLocked(e)
	e.mu.Unlock()
	l.moveMu.Unlock()
	e.observerEvent(false) // outside every lock: the hook may call Close
}

func (l *link[P, T, D]) move(pa any) error {
	p, ok := pa.(P)
	if !ok {
		panic(fmt.Sprintf("qcache: SetParams(%T): the observer's query takes %v", pa, reflect.TypeFor[P]()))
	}
	// Hooks run after moveMu is released: one may call Close, whose
	// cleanup takes moveMu.
	var left, joined *entry[P, T]
	defer func() {
		if left != nil {
			left.observerEvent(false)
		}
		if joined != nil {
			joined.observerEvent(true)
		}
	}()
	l.moveMu.Lock()
	defer l.moveMu.Unlock()
	if l.closed {
		return fmt.Errorf("qcache: SetParams of an ended observer: %w", ErrClosed)
	}
	if p == l.p {
		return nil
	}
	// The new entry first, so that a p that cannot be bound leaves the
	// observer where it is; it is locked again after the old one is left.
	ne, err := l.q.lockedEntry(p)
	if err != nil {
		return err
	}
	ne.mu.Unlock()

	old := l.lockEntry()
	o := l.o
	o.mu.Lock()
	s := old.stateLocked()
	var v State[D]
	if l.viewLocked(old, &s, &v); v.HasData {
		l.ph, o.placeholder = &v.Data, true
	} else {
		l.ph, o.placeholder = nil, false
	}
	l.verOK = false
	o.mu.Unlock()
	l.leaveLocked(old)
	old.mu.Unlock()
	left = old

	ne, err = l.q.lockedEntry(p)
	if err != nil {
		l.closed = true // the client closed: it ends the observer, which left its entry already
		return err
	}
	l.e.Store(ne)
	l.p = p
	o.mu.Lock()
	l.verOK = false // a view read meanwhile was of the old entry, whose versions are not ne's
	o.mu.Unlock()
	if o.enabled() && !ne.freshLocked() {
		// A new key fetches when stale, as in TanStack. The fetch starts
		// before the observer joins, so that its first state there is
		// already fetching: one delivery, not two.
		ne.joinLocked(o.ctx, wantObserver)
	}
	l.attachLocked(ne, false)
	ne.mu.Unlock()
	joined = ne
	o.signal(evChange) // re-arm the polling on the new entry
	return nil
}

func (l *link[P, T, D]) view() State[D] {
	var v State[D]
	l.withView(func(s *State[D]) { v = *s })
	return v
}

func (l *link[P, T, D]) withView(f func(v *State[D])) {
	l.moveMu.Lock() // not in the middle of a move: its view would mix two entries
	defer l.moveMu.Unlock()
	e := l.lockEntry()
	defer e.mu.Unlock()
	o := l.o
	o.mu.Lock()
	defer o.mu.Unlock()
	s := e.stateLocked()
	var v State[D]
	l.viewLocked(e, &s, &v)
	o.outLocked(&v)
	f(&v)
}

func (l *link[P, T, D]) lastChange() time.Time {
	e := l.lockEntry()
	defer e.mu.Unlock()
	return e.lv().lastChange
}

func (l *link[P, T, D]) stale() bool {
	e := l.lockEntry()
	defer e.mu.Unlock()
	return !e.freshLocked()
}

func (l *link[P, T, D]) deliverSlow(s State[D], changed bool) {
	l.deliverView(any(&s).(*State[T]), changed) // D is T: Use's link
}

func (l *link[P, T, D]) intervalFunc(f any) func() time.Duration {
	fn, ok := f.(func(State[T]) time.Duration)
	if !ok {
		panic(fmt.Sprintf("qcache: RefetchIntervalFunc takes %T; this observer's query needs func(qcache.State[%v]) time.Duration",
			f, reflect.TypeFor[T]()))
	}
	return func() time.Duration {
		e := l.lockEntry()
		s := e.stateLocked()
		e.mu.Unlock()
		return fn(s)
	}
}

func (l *link[P, T, D]) autoFetch() {
	l.moveMu.Lock() // not for the entry a move is leaving
	defer l.moveMu.Unlock()
	if l.closed {
		return
	}
	e := l.lockEntry()
	defer e.mu.Unlock()
	if !e.isGone() {
		e.joinLocked(l.o.ctx, wantObserver)
	}
}

func (l *link[P, T, D]) explicitFetch(ctx context.Context) error {
	e := l.lockEntry()
	if e.isGone() {
		e.mu.Unlock()
		return ErrClosed
	}
	if ctx.Err() != nil {
		e.mu.Unlock()
		return fmt.Errorf("qcache: %s: %w", e.keyText(), context.Cause(ctx))
	}
	op := e.refetchLocked(ctx, wantWait)
	op.direct = true
	e.mu.Unlock()
	_, err := e.wait(ctx, op)
	return err
}

// viewLocked sets v to the observer's state for s, the state of e: s with
// the selected data, or the placeholder while e has none. sel runs when e
// has data that it has not seen. e and o.mu are locked.
func (l *link[P, T, D]) viewLocked(e *entry[P, T], s *State[T], v *State[D]) {
	if s.HasData && (!l.verOK || l.ver != e.dataVer) {
		l.ver, l.verOK = e.dataVer, true
		l.selectLocked(e, s.Data)
	}
	*v = State[D]{
		Err:            s.Err,
		Status:         s.Status,
		FetchStatus:    s.FetchStatus,
		DataUpdatedAt:  s.DataUpdatedAt,
		ErrorUpdatedAt: s.ErrorUpdatedAt,
		FailureCount:   s.FailureCount,
		IsInvalidated:  s.IsInvalidated,
		IsStale:        s.IsStale,
	}
	switch {
	case s.HasData:
		l.ph, l.o.placeholder = nil, false
		v.Data, v.HasData = l.cur, l.hasCur
		if f := l.selFail; f != nil {
			v.Status, v.Err, v.ErrorUpdatedAt = StatusError, f.err, f.at
		}
	case l.ph != nil && s.Status == StatusPending:
		v.Data, v.HasData, v.Status, v.IsPlaceholder = *l.ph, true, StatusSuccess, true
	}
}

// selectLocked runs sel on new data: a result equal to the held one keeps
// it (and its generation); a panic is kept as the view's error.
func (l *link[P, T, D]) selectLocked(e *entry[P, T], data T) {
	var v D
	var err error
	if l.plain {
		v = l.sel(data) // Use's identity: no panic to recover
	} else {
		v, err = callSelect(l.sel, data)
	}
	if err != nil {
		l.selFail = &failure{err: fmt.Errorf("qcache: %s: %w", e.keyText(), err), at: time.Now()}
		l.gen++ // a failed selection is a change of the data, and so is the recovery
		return
	}
	failed := l.selFail != nil
	l.selFail = nil
	o := l.o
	if !failed && l.hasCur && o.eq != nil && safeEqual(o.eq, l.cur, v) {
		return
	}
	l.cur, l.hasCur = v, true
	l.gen++
}

// selectPanic is a panic of a select function, as an error.
type selectPanic struct{ value any }

func (e *selectPanic) Error() string { return fmt.Sprintf("select function panicked: %v", e.value) }

func callSelect[T, D any](sel func(T) D, data T) (v D, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero D
			v, err = zero, &selectPanic{value: r}
		}
	}()
	return sel(data), nil
}

// safeEqual is eq(a, b), false when eq panics (== on an interface that
// holds an uncomparable value, or a user's function).
func safeEqual[T any](eq func(a, b T) bool, a, b T) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return eq(a, b)
}

// equalFor returns the data equality of an observer of T under cfg: Equal's
// function, reflect.DeepEqual when asked, == for a comparable T, else nil.
// It panics when Equal was given a function of another type.
func equalFor[T any](cfg useConfig) func(a, b T) bool {
	if cfg.equal != nil {
		f, ok := cfg.equal.(func(a, b T) bool)
		if !ok {
			panic(fmt.Sprintf("qcache: Equal takes %T; this observer needs func(a, b %v) bool", cfg.equal, reflect.TypeFor[T]()))
		}
		return f
	}
	if cfg.deepEqual {
		return func(a, b T) bool { return reflect.DeepEqual(a, b) }
	}
	if reflect.TypeFor[T]().Comparable() {
		return func(a, b T) bool { return any(a) == any(b) }
	}
	return nil
}

// notifyMark is what NotifyOn compares between two states of an observer:
// gen stands for the data (it changes when the data changes by the
// observer's equality).
type notifyMark struct {
	gen         uint64
	err         error
	status      uint8 // a Status
	fetch       uint8 // a FetchStatus
	hasData     bool
	placeholder bool
}

func markOf[T any](s *State[T], gen uint64) notifyMark {
	return notifyMark{gen: gen, err: s.Err, status: uint8(s.Status), fetch: uint8(s.FetchStatus), hasData: s.HasData, placeholder: s.IsPlaceholder}
}

// differs reports whether b differs from a in what n watches.
func (a notifyMark) differs(b notifyMark, n Notify) bool {
	return n&AnyChange != 0 ||
		n&DataChanged != 0 && (a.gen != b.gen || a.hasData != b.hasData || a.placeholder != b.placeholder) ||
		n&StatusChanged != 0 && a.status != b.status ||
		n&FetchStatusChanged != 0 && a.fetch != b.fetch ||
		n&ErrorChanged != 0 && !safeEqual(func(x, y error) bool { return x == y }, a.err, b.err)
}

// observerEvent counts an observer that came to or left e and tells the
// hook; e.mu is not held.
func (e *entry[P, T]) observerEvent(added bool) {
	q := e.q
	h := q.c.cfg.hooks.ObserverRemoved
	if added {
		q.nObservers.Add(1)
		h = q.c.cfg.hooks.ObserverAdded
	} else {
		q.nObservers.Add(-1)
	}
	if h != nil {
		q.c.callHook("Observer", func() { h(q.name, e.entryKey()) })
	}
}
