package qcache

import (
	"hash/maphash"
	"slices"
)

// keyIndex finds a query's entries by key prefix in time proportional to
// the entries found, for filters such as Filter{Key: {"users", "42"}}:
// without it, every entry of the query would be looked at.
//
// It is a trie of the key segments that follow the query's static prefix
// (which every key of the query shares). A node stands for a proper
// prefix of some key; it holds the entries whose key is one segment
// longer in a hash set by that last segment, and the longer keys in child
// nodes by their next segment. So {"users", "42"} of a query keyed
// {"users"} is found, or its absence is, with one hash lookup, and the
// entries under {"items", "g042"} are one child node's subtree.
//
// The index is built by the first match by key of its query, with one pass
// over the entries, and kept up to date from then on: a query never
// matched by key pays nothing for it (one nil pointer). Built, it costs
// one 16-byte slot per entry (the hash of its last segment and the entry)
// at a load between 3/8 and 3/4 (21 to 43 bytes an entry), plus a node (about 100 bytes) per distinct proper
// prefix: none for keys of one segment after the static prefix, one per
// group for W5's {"items", group, id}, one per path value for keys that
// end in a "?query" segment. Entries hold nothing for it: where an entry
// sits follows from its key, which never changes, and which the index
// builds from P (entryKey) when it adds or removes the entry.
//
// The index is guarded by the entry map's mutex.
type keyIndex[P comparable, T any] struct {
	static Key // the query's static prefix: not indexed
	root   indexNode[P, T]
	bare   []*entry[P, T] // entries whose key is static exactly
	odd    []*entry[P, T] // entries whose key does not start with static: none, as keys are built; kept for safety
}

type indexNode[P comparable, T any] struct {
	leaves   entrySet[P, T]              // entries whose key ends one segment below the node, by that segment
	children map[string]*indexNode[P, T] // the nodes one segment below, for longer keys
}

func newKeyIndex[P comparable, T any](static Key) *keyIndex[P, T] {
	return &keyIndex[P, T]{static: static}
}

// add indexes e.
func (x *keyIndex[P, T]) add(e *entry[P, T]) {
	k, d := e.entryKey(), len(x.static)
	switch {
	case !k.HasPrefix(x.static):
		x.odd = append(x.odd, e)
		return
	case len(k) == d:
		x.bare = append(x.bare, e)
		return
	}
	n := &x.root
	for ; d < len(k)-1; d++ {
		c := n.children[k[d]]
		if c == nil {
			if n.children == nil {
				n.children = make(map[string]*indexNode[P, T])
			}
			c = &indexNode[P, T]{}
			n.children[k[d]] = c
		}
		n = c
	}
	n.leaves.add(e, k[d])
}

// remove drops e from the index, if it is there.
func (x *keyIndex[P, T]) remove(e *entry[P, T]) {
	k := e.entryKey()
	switch {
	case !k.HasPrefix(x.static):
		x.odd = removePtr(x.odd, e)
	case len(k) == len(x.static):
		x.bare = removePtr(x.bare, e)
	default:
		x.root.remove(e, k, len(x.static))
	}
}

// remove drops e, whose key's segment d leads below n, from n's subtree,
// and the nodes it leaves empty.
func (n *indexNode[P, T]) remove(e *entry[P, T], k Key, d int) {
	if d == len(k)-1 {
		n.leaves.remove(e, k[d])
		return
	}
	c := n.children[k[d]]
	if c == nil {
		return
	}
	c.remove(e, k, d+1)
	if c.leaves.n == 0 && len(c.children) == 0 {
		delete(n.children, k[d])
	}
}

func removePtr[E comparable](s []E, e E) []E {
	for i, x := range s {
		if x == e {
			last := len(s) - 1
			s[i] = s[last]
			var zero E
			s[last] = zero
			return s[:last]
		}
	}
	return s
}

// appendMatches appends the entries whose key starts with key (equals it,
// when exact) to buf. key starts with the static prefix or, when shorter,
// is a prefix of it (Filter.mayMatch).
func (x *keyIndex[P, T]) appendMatches(buf []*entry[P, T], key Key, exact bool) []*entry[P, T] {
	for _, e := range x.odd {
		if k := e.entryKey(); exact && slices.Equal(k, key) || !exact && k.HasPrefix(key) {
			buf = append(buf, e)
		}
	}
	d := len(x.static)
	if len(key) < d {
		return buf // exact: no key is shorter than the static prefix
	}
	if len(key) == d {
		buf = append(buf, x.bare...)
		if !exact {
			buf = x.root.appendAll(buf)
		}
		return buf
	}
	n := &x.root
	for ; d < len(key)-1 && n != nil; d++ {
		n = n.children[key[d]]
	}
	if n == nil {
		return buf
	}
	last := key[d]
	buf = n.leaves.appendSeg(buf, last, d)
	if !exact {
		if c := n.children[last]; c != nil {
			buf = c.appendAll(buf)
		}
	}
	return buf
}

// appendAll appends every entry of n's subtree.
func (n *indexNode[P, T]) appendAll(buf []*entry[P, T]) []*entry[P, T] {
	buf = n.leaves.appendAll(buf)
	for _, c := range n.children {
		buf = c.appendAll(buf)
	}
	return buf
}

// entrySet is a set of entries by segment d of their keys: an open
// addressing hash table with linear probing whose slots hold the hash of
// the segment and the entry, 16 bytes a slot where a Go map keyed by the
// segment would cost about 30 bytes an entry plus the segment's string.
// Entries of equal segments (two entries of one key, while one of them is
// being removed) may both be in it.
type entrySet[P comparable, T any] struct {
	slots []setSlot[P, T] // a power of two long; nil when empty
	n     int
}

type setSlot[P comparable, T any] struct {
	h uint64 // the hash of the entry's segment; e nil for an empty slot
	e *entry[P, T]
}

var indexSeed = maphash.MakeSeed()

func segHash(seg string) uint64 { return maphash.String(indexSeed, seg) }

func (s *entrySet[P, T]) home(h uint64) int { return int(h & uint64(len(s.slots)-1)) }

func (s *entrySet[P, T]) add(e *entry[P, T], seg string) {
	if 4*(s.n+1) > 3*len(s.slots) {
		s.resize(max(4, 2*len(s.slots)))
	}
	s.put(setSlot[P, T]{h: segHash(seg), e: e})
	s.n++
}

func (s *entrySet[P, T]) put(x setSlot[P, T]) {
	mask := len(s.slots) - 1
	i := s.home(x.h)
	for s.slots[i].e != nil {
		i = (i + 1) & mask
	}
	s.slots[i] = x
}

func (s *entrySet[P, T]) resize(size int) {
	old := s.slots
	s.slots = make([]setSlot[P, T], size)
	for _, x := range old {
		if x.e != nil {
			s.put(x)
		}
	}
}

// remove drops e, whose segment is seg, if it is in the set, moving the
// entries after it back so that no probe sequence has a hole (no
// tombstones).
func (s *entrySet[P, T]) remove(e *entry[P, T], seg string) {
	if s.n == 0 {
		return
	}
	mask := len(s.slots) - 1
	i := s.home(segHash(seg))
	for s.slots[i].e != e {
		if s.slots[i].e == nil {
			return
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; s.slots[j].e != nil; j = (j + 1) & mask {
		// The entry at j moves to the hole at i unless its home lies
		// cyclically in (i, j]: then it would be found before the hole.
		h := s.home(s.slots[j].h)
		if (h-i-1)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = setSlot[P, T]{}
	s.n--
	switch {
	case s.n == 0:
		s.slots = nil
	case 8*s.n < len(s.slots) && len(s.slots) > 8:
		s.resize(len(s.slots) / 2)
	}
}

// appendSeg appends the entries whose segment d is seg. Slots of an equal
// hash are confirmed on the entry's key.
func (s *entrySet[P, T]) appendSeg(buf []*entry[P, T], seg string, d int) []*entry[P, T] {
	if s.n == 0 {
		return buf
	}
	mask := len(s.slots) - 1
	h := segHash(seg)
	for i := s.home(h); s.slots[i].e != nil; i = (i + 1) & mask {
		if x := s.slots[i]; x.h == h {
			if k := x.e.entryKey(); len(k) > d && k[d] == seg {
				buf = append(buf, x.e)
			}
		}
	}
	return buf
}

func (s *entrySet[P, T]) appendAll(buf []*entry[P, T]) []*entry[P, T] {
	for _, x := range s.slots {
		if x.e != nil {
			buf = append(buf, x.e)
		}
	}
	return buf
}

// eachByKey calls yield for every entry whose key starts with key (equals
// it, when exact) until yield returns false; static is the prefix every
// key of the map starts with, and key starts with it or is a prefix of it.
// The first call builds the index. yield runs without the lock held:
// entries removed meanwhile are skipped, entries added meanwhile are not
// seen.
func (m *entryMap[P, T]) eachByKey(static, key Key, exact bool, yield func(*entry[P, T]) bool) {
	bp, _ := m.bufs.Get().(*[]*entry[P, T])
	if bp == nil {
		bp = new([]*entry[P, T])
	}
	m.mu.Lock()
	if m.index == nil {
		m.buildIndexLocked(static)
	}
	buf := m.index.appendMatches((*bp)[:0], key, exact)
	m.mu.Unlock()
	eachLive(buf, yield)
	clear(buf)
	if cap(buf) <= maxPooledMatches {
		*bp = buf
		m.bufs.Put(bp)
	}
}

// eachLive calls yield for the entries of buf that are not gone, until it
// returns false. The matches of a filter are seldom in the CPU's caches,
// and each yield takes the entry's lock, which waits for the memory loads
// before it: so the first fields of a chunk of entries (flags and snap,
// in one cache line) are loaded first, together, their cache misses
// overlapping, and then the chunk is yielded to.
func eachLive[P comparable, T any](buf []*entry[P, T], yield func(*entry[P, T]) bool) {
	const chunk = 16
	for len(buf) > 0 {
		c := buf[:min(chunk, len(buf))]
		buf = buf[len(c):]
		var gone uint32 // bit i: c[i] is gone
		for i, e := range c {
			if e.isGone() || e.snap.Load() == nil { // snap is never nil: the load is the point
				gone |= 1 << i
			}
		}
		for i, e := range c {
			if gone&(1<<i) == 0 && !yield(e) {
				return
			}
		}
	}
}

// maxPooledMatches bounds the buffers of matches kept for reuse, so that
// one match of a million entries does not hold 8 MB for good.
const maxPooledMatches = 1 << 16

// buildIndexLocked indexes the live entries; m.mu is held.
func (m *entryMap[P, T]) buildIndexLocked(static Key) {
	x := newKeyIndex[P, T](static)
	for _, e := range m.readOnly().m {
		if !e.isGone() {
			x.add(e)
		}
	}
	for _, e := range m.added {
		if !e.isGone() {
			x.add(e)
		}
	}
	m.index = x
}

// eachMatch calls yield for each entry of q that f selects, until yield
// returns false, and reports whether it did not. A filter whose Key goes
// beyond the query's static prefix, or that is Exact, is looked up in the
// key index; the others look at every entry of the query (each matches
// by Key then, and Predicate and the conditions on state decide).
func (q *Query[P, T]) eachMatch(f Filter, yield func(anyEntry) bool) bool {
	if !f.mayMatch(q.static) {
		return true
	}
	more := true
	if f.Exact || len(f.Key) > len(q.static) {
		// The index finds the keys that match Key and Exact.
		q.entries.eachByKey(q.static, f.Key, f.Exact, func(e *entry[P, T]) bool {
			if (f.Predicate == nil || f.Predicate(e.entryKey())) && (!f.onState() || f.matchState(infoOf(e))) {
				more = yield(e)
			}
			return more
		})
	} else {
		q.entries.each(func(e *entry[P, T]) bool {
			if f.Match(e.entryKey()) && (!f.onState() || f.matchState(infoOf(e))) {
				more = yield(e)
			}
			return more
		})
	}
	return more
}

// eachMatch calls yield for every entry f selects, until it returns false.
func (c *Client) eachMatch(f Filter, yield func(anyEntry) bool) {
	for _, q := range c.queryList() {
		if !q.eachMatch(f, yield) {
			return
		}
	}
}
