package qcache

import (
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// stripedCounter is a counter for the hit path: each P (the runtime's
// processor, one per core in use) adds to a cache line of its own, so that
// counting hits does not bounce one line between cores. A single atomic
// counter made a hit under contention several times slower; stripes picked
// by goroutine collided often enough to do the same.
type stripedCounter struct {
	_       [128]byte // keeps stripe 0 off the lines of the fields before it
	stripes [stripes]struct {
		n atomic.Uint64
		_ [120]byte // 128 bytes apart: adjacent-line prefetch pairs 64-byte lines
	}
}

const stripes = 64

// procPin and procUnpin give the current P's id; the runtime keeps them
// available under these names for packages that count per P (sync.Pool does
// the same internally).
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

func (s *stripedCounter) add() {
	p := procPin()
	procUnpin()
	s.stripes[(p*7)%stripes].n.Add(1) // consecutive P ids 7 lines apart: prefetchers fetch neighbouring lines
}

func (s *stripedCounter) load() uint64 {
	var sum uint64
	for i := range s.stripes {
		sum += s.stripes[i].n.Load()
	}
	return sum
}
