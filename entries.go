package qcache

import (
	"fmt"
	"iter"
	"reflect"
)

// All returns the entries of the query that exist now, with their states,
// in no particular order: TanStack's getQueriesData for one query. It
// neither creates nor fetches an entry; entries added or removed while it
// runs may or may not be seen. The loop's body runs without locks held, so
// it may call any method of the client. All allocates nothing per entry
// beyond the State it yields (and, with Clone, the copy).
//
// The Data of the states, like every T that the query returns (Get, Fetch,
// Peek, State, observers' states), is shared with the cache: modify a
// copy, never the value itself, or give the query a Clone.
func (q *Query[P, T]) All() iter.Seq2[P, State[T]] {
	return func(yield func(P, State[T]) bool) {
		q.entries.each(func(e *entry[P, T]) bool {
			s, ok := e.current()
			if !ok {
				return true
			}
			if s.HasData {
				s.Data = q.out(s.Data)
			}
			return yield(e.p, s)
		})
	}
}

// UpdateWhere replaces the data of every entry of the query that has data
// and that match selects with f(old), as Update does for one entry, and
// returns how many it replaced: TanStack's setQueriesData, for a push
// that patches every cached list holding an item. match sees each entry's
// parameters and state once; f may run more than once for an entry whose
// data changes meanwhile. Both run without locks held. Entries without
// data are skipped (f has nothing to patch), and no entry is created.
//
// f must return a new value, not modify old, which is shared with the
// cache (with a Clone, old is a copy).
func (q *Query[P, T]) UpdateWhere(match func(P, State[T]) bool, f func(old T) T) int {
	n := 0
	q.entries.each(func(e *entry[P, T]) bool {
		s, ok := e.current()
		if !ok || !s.HasData {
			return true
		}
		if s.Data = q.out(s.Data); !match(e.p, s) {
			return true
		}
		if q.patch(e, f) {
			n++
		}
		return true
	})
	return n
}

// current returns the entry's state, and false when it is gone.
func (e *entry[P, T]) current() (State[T], bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isGone() {
		return State[T]{}, false
	}
	return e.stateLocked(), true
}

// patch replaces e's data with f(old) when e has data, retrying f when the
// data changes meanwhile; it reports whether it replaced it.
func (q *Query[P, T]) patch(e *entry[P, T], f func(old T) T) bool {
	for {
		e.mu.Lock()
		cur := e.snap.Load()
		if e.isGone() || !cur.hasData {
			e.mu.Unlock()
			return false
		}
		old, ver := cur.data, e.dataVer
		e.mu.Unlock()
		v := f(q.out(old))
		e.mu.Lock()
		if !e.isGone() && e.dataVer == ver {
			e.setDataLocked(v)
			e.mu.Unlock()
			q.publishSetData(e.p, v)
			return true
		}
		e.mu.Unlock()
	}
}

// Clone makes the query hand out copies: every T it returns (Get, Fetch,
// Peek, State, All, the states of Use's observers) and the old values it
// passes to Update, UpdateWhere and OptimisticUpdate go through f, so that
// callers may modify them. Without it those values are shared with the
// cache. f must return a copy that shares nothing mutable with its
// argument; it may run while an entry is locked, so it must not call
// qcache. Values given to SetData are stored as they are, and UseSelect's
// select function sees the cache's value (it must not modify it). T must
// be the query's data type: NewQuery and NewQueryFunc panic otherwise (as
// they do for a Clone among WithQueryDefaults that does not fit a query).
func Clone[T any](f func(T) T) QueryOption {
	return func(c *queryConfig) {
		c.clone = f
		if f == nil {
			c.clone = nil
		}
	}
}

// cloneFor returns the query's Clone function; it panics on one of
// another type.
func cloneFor[T any](name string, f any) func(T) T {
	if f == nil {
		return nil
	}
	fn, ok := f.(func(T) T)
	if !ok {
		panic(fmt.Sprintf("qcache: %s: Clone takes %T; the query needs func(%v) %v", name, f, reflect.TypeFor[T](), reflect.TypeFor[T]()))
	}
	return fn
}

// out returns v, or a copy of it with Clone.
func (q *Query[P, T]) out(v T) T {
	if q.clone == nil {
		return v
	}
	return q.clone(v)
}

// outErr is out for the result of a fetch.
func (q *Query[P, T]) outErr(v T, err error) (T, error) {
	if err == nil && q.clone != nil {
		v = q.clone(v)
	}
	return v, err
}

// infoOf returns the summary of an entry for a Filter.
func infoOf(e anyEntry) EntryInfo {
	return e.(interface{ info() EntryInfo }).info()
}

func (e *entry[P, T]) info() EntryInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	return EntryInfo{
		Key:           e.entryKey(),
		Status:        Status(s.status),
		FetchStatus:   FetchStatus(s.fetchStatus),
		HasData:       s.hasData,
		IsStale:       !e.freshLocked(),
		IsInvalidated: e.invalidatedLocked(),
		DataUpdatedAt: s.updatedAt(e.q.c),
		Observers:     len(e.observersLocked()),
	}
}
