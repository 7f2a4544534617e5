package qcache

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEntryMap(t *testing.T) {
	var m entryMap[int, int]
	mk := func(p int) *entry[int, int] { return &entry[int, int]{p: p} }
	assert.Nil(t, m.load(1))
	e1 := mk(1)
	got, loaded := m.loadOrStore(1, e1)
	assert.False(t, loaded)
	assert.Same(t, e1, got)
	assert.Nil(t, m.readOnly().m[1], "a new entry waits in the side map")
	assert.Same(t, e1, m.added[1])
	got, loaded = m.loadOrStore(1, mk(1)) // a miss of the read map: with one entry, it merges
	assert.True(t, loaded)
	assert.Same(t, e1, got)
	assert.Same(t, e1, m.readOnly().m[1], "merged")
	assert.Nil(t, m.added, "merged entries are in one map only")
	assert.Same(t, e1, m.load(1))
	m.loadOrStore(2, mk(2))
	m.loadOrStore(3, mk(3)) // its lookup is the first miss
	m.load(2)               // the second
	assert.Len(t, m.added, 2, "no merge before as many misses as entries")
	m.load(3) // the third: merged
	assert.Nil(t, m.added, "merged")
	assert.Len(t, m.readOnly().m, 3)

	e1.markGone()
	m.delete(1, e1)
	assert.Nil(t, m.load(1))
	e1b := mk(1)
	got, loaded = m.loadOrStore(1, e1b)
	assert.False(t, loaded, "a gone entry is replaced")
	assert.Same(t, e1b, got)
	n := 0
	m.each(func(e *entry[int, int]) bool { n++; return true })
	assert.Equal(t, 3, n)
	assert.Same(t, e1b, m.readOnly().m[1], "each merges")
}

func TestEntryMapMergesAwayDeletedEntries(t *testing.T) {
	var m entryMap[int, int]
	es := make([]*entry[int, int], 10)
	for p := range es {
		es[p] = &entry[int, int]{p: p}
		m.loadOrStore(p, es[p])
	}
	m.each(func(*entry[int, int]) bool { return true })
	require.Len(t, m.readOnly().m, 10)
	for p := range 4 {
		es[p].markGone()
		m.delete(p, es[p])
	}
	assert.Len(t, m.readOnly().m, 10, "deleted entries stay until half the read map is deleted")
	es[4].markGone()
	m.delete(4, es[4])
	assert.Len(t, m.readOnly().m, 5, "then a merge drops them")
	for p := range 10 {
		if p < 5 {
			assert.Nil(t, m.load(p))
		} else {
			assert.Same(t, es[p], m.load(p))
		}
	}
}

// TestEntryCountSurvivesReplacement: an entry marked gone can be replaced
// in the map before its remover deletes it; the remover still counts the
// removal, once. (The map used before counted nothing then, and
// Stats.Entries drifted up.)
func TestEntryCountSurvivesReplacement(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p int) (int, error) { return p, nil })
	e, err := q.lockedEntry(1)
	require.NoError(t, err)
	e.mu.Unlock()
	assert.Equal(t, 1, c.Stats().Entries)
	e.markGone() // removeLocked's first step, and then another caller inserts
	e2, err := q.lockedEntry(1)
	require.NoError(t, err)
	e2.mu.Unlock()
	assert.NotSame(t, e, e2)
	assert.Equal(t, 2, c.Stats().Entries, "counted until its remover is done")
	e.mu.Lock()
	e.flags.And(^flagGone) // replay the remover from the start
	e.removeLocked()
	e.mu.Unlock()
	assert.Equal(t, 1, c.Stats().Entries)
	assert.Same(t, e2, q.lookup(1))
	e.mu.Lock()
	e.removeLocked() // a second removal counts nothing
	e.mu.Unlock()
	assert.Equal(t, 1, c.Stats().Entries)
}

func TestEntryMapConcurrent(t *testing.T) {
	var m entryMap[int, int]
	var wg sync.WaitGroup
	const keys, workers = 200, 8
	for w := range workers {
		wg.Go(func() {
			for i := range 2000 {
				p := (i*7 + w) % keys
				e, _ := m.loadOrStore(p, &entry[int, int]{p: p})
				require.Equal(t, p, e.p)
				if i%5 == 0 && e.markGone() {
					m.delete(p, e)
				}
				if got := m.load(p); got != nil {
					require.Equal(t, p, got.p)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			m.each(func(e *entry[int, int]) bool { return true })
		}
	})
	wg.Wait()
	seen := map[int]bool{}
	m.each(func(e *entry[int, int]) bool {
		assert.False(t, seen[e.p], "each key once")
		assert.False(t, e.isGone(), "deleted entries are not seen")
		seen[e.p] = true
		return true
	})
	for p := range keys {
		if e := m.load(p); e != nil {
			assert.False(t, e.isGone(), "deleted entries are not loaded")
			assert.True(t, seen[p])
		} else {
			assert.False(t, seen[p])
		}
	}
}
