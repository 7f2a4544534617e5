package qcache

import (
	"sync"
	"time"
)

// staleHeap is a query's fresh entries that turn stale after a finite
// StaleTime, in a min-heap by the time they do (DataUpdatedAt + StaleTime).
// Like the query's entryHeap it is served by the client's deadline queue
// (gc.go), queued there for its earliest deadline or an earlier one: one
// runtime timer for the client, where a timer per entry cost about 250
// bytes an entry and lingered in the runtime's timer heaps once stopped.
//
// An item is an (entry, fresh generation) pair. Deletion is lazy: an entry
// that turns stale or fresh again leaves its item dead in the heap (a new
// item is queued for its new data), and dead items are skipped when due.
// The entry's flagStaleQueued says that one of its items is live; it is set
// under both the entry's lock and the heap's, and cleared under the heap's,
// so under the heap's lock an item is live exactly when that flag is set
// and the entry's fresh generation is the item's. The live and dead items
// are counted; when the dead outnumber the live the heap is compacted, so
// that neither a SetData storm nor removed entries grow it without bound.
// Its lock comes after the entries' and before the client queue's.
type staleHeap[P comparable, T any] struct {
	mu      sync.Mutex
	items   []staleItem[P, T]
	dead    int // items that are no longer live
	g       *gcQueue
	pos     int32 // the heap's place in g, guarded by g
	stopped bool  // Client.Close: nothing is queued any more
}

type staleItem[P comparable, T any] struct {
	at  time.Duration // when the data turns stale, on the client's clock
	e   *entry[P, T]
	gen uint32 // the entry's fresh generation when it was queued
}

// freshGenOf returns the fresh generation in flags f.
func freshGenOf(f uint32) uint32 { return f / freshGenOne }

func (h *staleHeap[P, T]) gcPos() *int32 { return &h.pos }

// push queues e, fresh in generation gen, to turn stale at at (on the
// client's clock); e.mu is held.
func (h *staleHeap[P, T]) push(e *entry[P, T], at time.Duration, gen uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	e.flags.Or(flagStaleQueued)
	h.items = append(h.items, staleItem[P, T]{at: at, e: e, gen: gen})
	heapUp(h, len(h.items)-1)
	if top := h.items[0]; top.e == e && top.gen == gen {
		h.g.schedule(h, addSat(at, 1)) // the queue's clock runs one ahead (gcQueue.now)
	}
}

// drop makes e's live item dead, if it has one; e.mu is held.
func (h *staleHeap[P, T]) drop(e *entry[P, T]) {
	if e.flags.Load()&flagStaleQueued == 0 {
		return // only push, under e.mu, sets it
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.flags.Load()&flagStaleQueued == 0 {
		return // taken out as due meanwhile
	}
	e.flags.And(^flagStaleQueued)
	h.dead++
	if h.dead > len(h.items)-h.dead {
		h.compactLocked()
	}
}

// liveLocked reports whether it is live; h.mu is held.
func (it *staleItem[P, T]) liveLocked() bool {
	f := it.e.flags.Load()
	return f&flagStaleQueued != 0 && freshGenOf(f) == it.gen
}

// compactLocked drops the dead items and shrinks the slice when most of it
// is unused. The heap's place in the client's queue stays: at worst it is
// earlier than needed, and the heap then finds nothing due.
func (h *staleHeap[P, T]) compactLocked() {
	live := h.items[:0]
	for _, it := range h.items {
		if it.liveLocked() {
			live = append(live, it)
		}
	}
	clear(h.items[len(live):]) // drop the dead items' entries
	if cap(live) > 64 && len(live) < cap(live)/4 {
		live = append([]staleItem[P, T](nil), live...)
	}
	h.items, h.dead = live, 0
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		heapDown(h, i)
	}
}

// gcDue runs when the client's queue finds the heap due: it takes out the
// items that are due, queues the heap again for the next one, and turns
// the live items' entries stale, earliest first.
func (h *staleHeap[P, T]) gcDue(time.Duration) {
	var due []staleItem[P, T]
	h.mu.Lock()
	now := h.g.now() - 1 // the client's clock
	for len(h.items) > 0 && h.items[0].at <= now {
		it := h.popLocked()
		if it.liveLocked() {
			it.e.flags.And(^flagStaleQueued)
			due = append(due, it)
		} else {
			h.dead--
		}
	}
	if h.dead > len(h.items)-h.dead {
		h.compactLocked() // the live items taken out left the dead in the majority
	}
	if len(h.items) > 0 {
		h.g.schedule(h, addSat(h.items[0].at, 1))
	} else if cap(h.items) > 64 {
		h.items = nil
	}
	h.mu.Unlock()
	for _, it := range due {
		it.e.turnStale(it.gen)
	}
}

// popLocked takes out the earliest item.
func (h *staleHeap[P, T]) popLocked() staleItem[P, T] {
	last := len(h.items) - 1
	it := h.items[0]
	h.items[0] = h.items[last]
	h.items[last] = staleItem[P, T]{}
	h.items = h.items[:last]
	if last > 0 {
		heapDown(h, 0)
	}
	return it
}

// stop empties the heap for good (Client.Close): its entries stay as they
// are, and later pushes are ignored.
func (h *staleHeap[P, T]) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, it := range h.items {
		it.e.flags.And(^flagStaleQueued)
	}
	h.items, h.dead, h.stopped = nil, 0, true
}

func (h *staleHeap[P, T]) len() int           { return len(h.items) }
func (h *staleHeap[P, T]) less(i, j int) bool { return h.items[i].at < h.items[j].at }
func (h *staleHeap[P, T]) swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
