package qcache

import (
	"math"
	"sync"
	"time"
)

// gcQueue holds the deadlines of a client's queries and observers in a
// min-heap served by one timer: a timer per entry would cost more than the
// rest of an entry's bookkeeping, and one per polling observer 156 bytes.
// Each query orders its own idle entries in an entryHeap, and its fresh
// entries in a staleHeap (stale.go), each queued here for its earliest
// deadline; each polling observer queues its next interval tick here
// (refetch.go).
type gcQueue struct {
	epoch   time.Time // deadlines are offsets from it: 8 bytes instead of a time.Time's 24
	mu      sync.Mutex
	items   []gcItem
	timer   *time.Timer
	due     time.Duration // when the timer fires; 0 while it is stopped
	stopped bool          // Client.Close: nothing is queued any more
}

type gcItem struct {
	at time.Duration
	e  gcTarget
}

// addSat returns a+b for b ≥ 0, or the largest Duration where that
// overflows: a deadline Forever away must not wrap into the past.
func addSat(a, b time.Duration) time.Duration {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// now is the time since the epoch, never 0 (0 means "no deadline").
func (g *gcQueue) now() time.Duration { return time.Since(g.epoch) + 1 }

// clockAt is what now read, reads or will read at t.
func (g *gcQueue) clockAt(t time.Time) time.Duration { return t.Sub(g.epoch) + 1 }

// gcTarget is a deadline's owner as the gc queue sees it: a query's heap
// of entries, or an observer's interval tick. gcPos is its place in the
// heap plus one (0: not queued), guarded by the queue's lock. gcDue is
// called once it is due and out of the queue, on the queue's goroutine
// and in turn with the other items due: it must not block.
type gcTarget interface {
	gcPos() *int32
	gcDue(at time.Duration)
}

// schedule queues e for at, or moves it there when it is queued already.
func (g *gcQueue) schedule(e gcTarget, at time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	if pos := *e.gcPos(); pos > 0 {
		g.moveLocked(int(pos-1), at)
		return
	}
	g.items = append(g.items, gcItem{at: at, e: e})
	*e.gcPos() = int32(len(g.items))
	heapUp(g, len(g.items)-1)
	g.armLocked()
}

// reschedule moves e to d from now when it is queued, and does nothing
// when it is not.
func (g *gcQueue) reschedule(e gcTarget, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if pos := *e.gcPos(); pos > 0 {
		g.moveLocked(int(pos-1), addSat(g.now(), d))
	}
}

// moveLocked moves the item at heap index i to at.
func (g *gcQueue) moveLocked(i int, at time.Duration) {
	g.items[i].at = at
	heapFix(g, i)
	g.armLocked()
}

// unschedule takes e out of the queue, if it is there.
func (g *gcQueue) unschedule(e gcTarget) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if pos := *e.gcPos(); pos > 0 {
		g.removeAtLocked(int(pos - 1))
	}
}

// removeAtLocked takes the item at heap index i out and clears its place:
// the last item moves into the hole, then sifts to where it belongs.
func (g *gcQueue) removeAtLocked(i int) gcItem {
	last := len(g.items) - 1
	it := g.items[i]
	if i != last {
		g.swap(i, last)
	}
	*it.e.gcPos() = 0 // after the swap, which wrote the old place back
	g.items[last] = gcItem{}
	g.items = g.items[:last]
	if i < last {
		heapFix(g, i)
	}
	return it
}

// stop empties the queue and stops its timer for good (Client.Close);
// later schedules are ignored.
func (g *gcQueue) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		g.timer.Stop()
	}
	for _, it := range g.items {
		*it.e.gcPos() = 0
	}
	g.items, g.due, g.stopped = nil, 0, true
}

// armLocked sets the timer for the earliest deadline.
func (g *gcQueue) armLocked() {
	if len(g.items) == 0 {
		return
	}
	at := g.items[0].at
	if g.due != 0 && at >= g.due {
		return // fires early enough already
	}
	g.due = at
	d := max(at-g.now(), 0)
	if g.timer == nil {
		g.timer = time.AfterFunc(d, g.fire)
	} else {
		g.timer.Reset(d)
	}
}

// fire takes the items that are due out of the queue and tells them.
func (g *gcQueue) fire() {
	g.mu.Lock()
	due := g.popDueLocked(g.now())
	g.due = 0
	g.armLocked()
	g.mu.Unlock()
	for _, it := range due {
		it.e.gcDue(it.at)
	}
}

// popDueLocked takes out every item due at now, earliest first.
func (g *gcQueue) popDueLocked(now time.Duration) []gcItem {
	var due []gcItem
	for len(g.items) > 0 && g.items[0].at <= now {
		due = append(due, g.removeAtLocked(0))
	}
	return due
}

func (g *gcQueue) len() int           { return len(g.items) }
func (g *gcQueue) less(i, j int) bool { return g.items[i].at < g.items[j].at }

func (g *gcQueue) swap(i, j int) {
	g.items[i], g.items[j] = g.items[j], g.items[i]
	*g.items[i].e.gcPos() = int32(i + 1)
	*g.items[j].e.gcPos() = int32(j + 1)
}

// entryHeap is a query's idle entries in a min-heap by gc deadline: a
// pointer an entry (the deadline and the place are the entry's gcAt and
// gcQueued), where a slot of the client's queue took 24 bytes. The heap
// itself is queued in the client's gcQueue for its earliest deadline, or
// for an earlier one: a deadline that went away leaves the heap queued
// for it, and the heap then finds nothing due and queues itself again.
// Its lock comes after the entries' and before the client queue's.
type entryHeap[P comparable, T any] struct {
	mu    sync.Mutex
	items []*entry[P, T]
	g     *gcQueue
	pos   int32 // the heap's place in g, guarded by g
}

func (h *entryHeap[P, T]) gcPos() *int32 { return &h.pos }

// schedule queues e for at, or moves it there; e.mu is held.
func (h *entryHeap[P, T]) schedule(e *entry[P, T], at time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.gcAt = at
	if pos := e.gcQueued; pos > 0 {
		heapFix(h, int(pos-1))
	} else {
		h.items = append(h.items, e)
		e.gcQueued = int32(len(h.items))
		heapUp(h, len(h.items)-1)
	}
	if h.items[0] == e {
		h.g.schedule(h, at)
	}
}

// unschedule takes e out of the heap, if it is there, and clears its
// deadline; e.mu is held.
func (h *entryHeap[P, T]) unschedule(e *entry[P, T]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if pos := e.gcQueued; pos > 0 {
		h.removeAtLocked(int(pos - 1))
	}
	e.gcAt = 0
}

// gcDue runs when the client's queue finds the heap due: it takes out the
// entries that are due, queues the heap again for the next one, and tells
// them, earliest first.
func (h *entryHeap[P, T]) gcDue(time.Duration) {
	type dueEntry struct {
		e  *entry[P, T]
		at time.Duration
	}
	var due []dueEntry
	h.mu.Lock()
	now := h.g.now()
	for len(h.items) > 0 && h.items[0].gcAt <= now {
		e := h.removeAtLocked(0)
		due = append(due, dueEntry{e, e.gcAt})
	}
	if len(h.items) > 0 {
		h.g.schedule(h, h.items[0].gcAt)
	}
	h.mu.Unlock()
	for _, d := range due {
		d.e.gcDue(d.at)
	}
}

// removeAtLocked takes the entry at heap index i out and clears its place.
func (h *entryHeap[P, T]) removeAtLocked(i int) *entry[P, T] {
	last := len(h.items) - 1
	e := h.items[i]
	if i != last {
		h.swap(i, last)
	}
	e.gcQueued = 0
	h.items[last] = nil
	h.items = h.items[:last]
	if i < last {
		heapFix(h, i)
	}
	return e
}

func (h *entryHeap[P, T]) len() int           { return len(h.items) }
func (h *entryHeap[P, T]) less(i, j int) bool { return h.items[i].gcAt < h.items[j].gcAt }

func (h *entryHeap[P, T]) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].gcQueued = int32(i + 1)
	h.items[j].gcQueued = int32(j + 1)
}

// minHeap is what heapFix, heapUp and heapDown need of a binary min-heap
// kept in a slice: the client's gc queue and a query's heap of idle
// entries, whose swap also records each item's place.
type minHeap interface {
	len() int
	less(i, j int) bool
	swap(i, j int)
}

// heapFix moves i to its place after its key changed.
func heapFix(h minHeap, i int) {
	if !heapDown(h, i) {
		heapUp(h, i)
	}
}

func heapUp(h minHeap, i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// heapDown sifts i down and reports whether it moved.
func heapDown(h minHeap, i int) bool {
	start, n := i, h.len()
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > start
}
