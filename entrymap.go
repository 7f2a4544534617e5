package qcache

import (
	"sync"
	"sync/atomic"
)

// entryMap maps a query's parameter values to their entries. Lookups take
// no lock and write no shared memory: they read an immutable Go map
// published through an atomic pointer, hashed with P's own hash function
// (hashing P through an interface, as sync.Map does, costs more than the
// rest of a hit).
//
// Writes go under a mutex. A new entry goes to a side map of the entries
// the read map lacks; a deleted entry (always marked gone first, so that
// lookups skip it) leaves the side map, or stays in the read map until the
// next merge. A merge builds a new read map from the live entries of both.
// It runs once as many lookups have missed the read map as the two maps
// hold, or once half the read map is deleted entries, so its copying is
// paid for by the misses and deletes before it. Every entry is in one map
// only: unlike the dirty copy of sync.Map's scheme before Go 1.24, the side
// map does not repeat the read map, which halves the maps' memory.
type entryMap[P comparable, T any] struct {
	read    atomic.Pointer[readMap[P, T]]
	mu      sync.Mutex
	added   map[P]*entry[P, T] // entries the read map lacks; nil when none
	deleted int                // entries of the read map deleted since it was built
	misses  int                // lookups that went past the read map to added

	index *keyIndex[P, T] // by key segments (keyindex.go); nil until the first match by key
	bufs  sync.Pool       // of *[]*entry[P, T]: eachByKey's buffers
}

type readMap[P comparable, T any] struct {
	m       map[P]*entry[P, T]
	amended bool // added holds entries
}

// readOnly returns the read map; a nil map before the first merge.
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
	e := m.added[p]
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
	return m.storeMissed(p, e)
}

// storeMissed is loadOrStore for a caller that has just missed p with
// load: it looks again under the lock only, so that one insert counts one
// miss, not two (the misses pace the merges).
func (m *entryMap[P, T]) storeMissed(p P, e *entry[P, T]) (actual *entry[P, T], loaded bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.readOnly()
	if old := r.m[p]; old != nil && !old.isGone() {
		return old, true
	}
	if old := m.added[p]; old != nil && !old.isGone() {
		return old, true
	}
	if m.added == nil {
		m.added = make(map[P]*entry[P, T])
	}
	m.added[p] = e // over a gone entry, if any: its delete finds it replaced
	if m.index != nil {
		m.index.add(e)
	}
	if !r.amended {
		m.read.Store(&readMap[P, T]{m: r.m, amended: true})
	}
	return e, false
}

// delete removes e, p's entry, which the caller has marked gone. It is
// called once per entry.
func (m *entryMap[P, T]) delete(p P, e *entry[P, T]) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.index != nil {
		m.index.remove(e)
	}
	r := m.readOnly()
	if m.added[p] == e {
		delete(m.added, p)
		if len(m.added) == 0 {
			m.added = nil
			m.read.Store(&readMap[P, T]{m: r.m})
		}
		return
	}
	if r.m[p] == e {
		m.deleted++
		if 2*m.deleted >= len(r.m) {
			m.mergeLocked()
		}
	}
}

func (m *entryMap[P, T]) missLocked() {
	m.misses++
	if m.misses < len(m.readOnly().m)+len(m.added) {
		return
	}
	m.mergeLocked()
}

// mergeLocked publishes a read map of every live entry.
func (m *entryMap[P, T]) mergeLocked() {
	r := m.readOnly()
	merged := make(map[P]*entry[P, T], len(r.m)-m.deleted+len(m.added))
	for p, e := range r.m {
		if !e.isGone() {
			merged[p] = e
		}
	}
	for p, e := range m.added {
		if !e.isGone() {
			merged[p] = e
		}
	}
	m.read.Store(&readMap[P, T]{m: merged})
	m.added = nil
	m.deleted = 0
	m.misses = 0
}

// eachUnmerged calls yield for every entry, as each does, without merging
// the maps first: for a walk after which lookups do not matter
// (Client.Close), where a merge would build a map of every entry for
// nothing. The side map's entries are copied out under the lock.
func (m *entryMap[P, T]) eachUnmerged(yield func(*entry[P, T]) bool) {
	r := m.readOnly()
	var added []*entry[P, T]
	if r.amended {
		m.mu.Lock()
		r = m.readOnly()
		added = make([]*entry[P, T], 0, len(m.added))
		for _, e := range m.added {
			added = append(added, e)
		}
		m.mu.Unlock()
	}
	for _, e := range r.m {
		if !e.isGone() && !yield(e) {
			return
		}
	}
	for _, e := range added {
		if !e.isGone() && !yield(e) {
			return
		}
	}
}

// each calls yield for every entry until it returns false. Entries added
// or removed meanwhile may or may not be seen.
func (m *entryMap[P, T]) each(yield func(*entry[P, T]) bool) {
	r := m.readOnly()
	if r.amended {
		m.mu.Lock()
		if r = m.readOnly(); r.amended {
			m.mergeLocked()
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
