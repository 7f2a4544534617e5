package qcache

import (
	"sync"
	"sync/atomic"
)

// entryMap maps a query's parameter values to their entries. Lookups take
// no lock and write no shared memory: they read an immutable Go map
// published through an atomic pointer, hashed with P's own hash function.
// Inserts and deletes go to a dirty copy under a mutex, which replaces the
// read map once as many lookups have missed it as it holds entries, so the
// copying is paid for by the misses. (This is the scheme sync.Map used
// before Go 1.24, with typed keys: hashing P through an interface, as
// sync.Map does, costs more than the rest of a hit.)
type entryMap[P comparable, T any] struct {
	read   atomic.Pointer[readMap[P, T]]
	mu     sync.Mutex
	dirty  map[P]*entry[P, T] // nil while read holds every entry
	misses int
}

type readMap[P comparable, T any] struct {
	m       map[P]*entry[P, T]
	amended bool // dirty holds entries that m lacks, or lacks entries that m holds
}

// readOnly returns the read map; a nil map before the first promotion.
func (m *entryMap[P, T]) readOnly() readMap[P, T] {
	if r := m.read.Load(); r != nil {
		return *r
	}
	return readMap[P, T]{}
}

// load returns p's entry, or nil.
func (m *entryMap[P, T]) load(p P) *entry[P, T] {
	r := m.readOnly()
	if e := r.m[p]; e != nil && !e.isGone() {
		return e
	}
	if !r.amended {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r = m.readOnly()
	if e := r.m[p]; e != nil && !e.isGone() {
		return e
	}
	if !r.amended {
		return nil
	}
	e := m.dirty[p]
	m.missLocked()
	if e != nil && e.isGone() {
		return nil
	}
	return e
}

// loadOrStore returns p's entry if there is one, else stores e and returns
// it; loaded reports which.
func (m *entryMap[P, T]) loadOrStore(p P, e *entry[P, T]) (actual *entry[P, T], loaded bool) {
	if old := m.load(p); old != nil {
		return old, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.readOnly()
	if old := r.m[p]; old != nil && !old.isGone() {
		return old, true
	}
	if r.amended {
		if old := m.dirty[p]; old != nil && !old.isGone() {
			return old, true
		}
	} else {
		m.dirtyLocked(r)
	}
	m.dirty[p] = e
	return e, false
}

// compareAndDelete deletes p's entry if it is e. The caller has marked e
// gone, so that lookups of the read map skip it meanwhile.
func (m *entryMap[P, T]) compareAndDelete(p P, e *entry[P, T]) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.readOnly()
	if !r.amended {
		if r.m[p] != e {
			return false
		}
		m.dirtyLocked(r) // leaves e out: it is gone
		return true
	}
	if m.dirty[p] != e {
		return false
	}
	delete(m.dirty, p)
	return true
}

// dirtyLocked starts a dirty copy of the read map and marks it amended.
func (m *entryMap[P, T]) dirtyLocked(r readMap[P, T]) {
	m.dirty = make(map[P]*entry[P, T], len(r.m)+1)
	for p, e := range r.m {
		if !e.isGone() {
			m.dirty[p] = e
		}
	}
	m.read.Store(&readMap[P, T]{m: r.m, amended: true})
}

func (m *entryMap[P, T]) missLocked() {
	m.misses++
	if m.misses < len(m.dirty) {
		return
	}
	m.promoteLocked()
}

func (m *entryMap[P, T]) promoteLocked() {
	m.read.Store(&readMap[P, T]{m: m.dirty})
	m.dirty = nil
	m.misses = 0
}

// each calls yield for every entry until it returns false. Entries added
// or removed meanwhile may or may not be seen.
func (m *entryMap[P, T]) each(yield func(*entry[P, T]) bool) {
	r := m.readOnly()
	if r.amended {
		m.mu.Lock()
		if r = m.readOnly(); r.amended {
			m.promoteLocked()
			r = m.readOnly()
		}
		m.mu.Unlock()
	}
	for _, e := range r.m {
		if !e.isGone() && !yield(e) {
			return
		}
	}
}
