package qcache

import (
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
	got, loaded = m.loadOrStore(1, mk(1))
	assert.True(t, loaded)
	assert.Same(t, e1, got)
	assert.Same(t, e1, m.load(1))
	for range 5 { // misses promote the dirty map to the read map
		m.load(2)
	}
	assert.Same(t, e1, m.readOnly().m[1], "promoted")

	assert.False(t, m.compareAndDelete(1, mk(1)), "another entry")
	e1.markGone()
	assert.True(t, m.compareAndDelete(1, e1))
	assert.Nil(t, m.load(1))
	e1b := mk(1)
	got, loaded = m.loadOrStore(1, e1b)
	assert.False(t, loaded)
	assert.Same(t, e1b, got)
	n := 0
	m.each(func(e *entry[int, int]) bool { n++; return true })
	assert.Equal(t, 1, n)
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
				if i%5 == 0 {
					e.markGone()
					m.compareAndDelete(p, e)
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
