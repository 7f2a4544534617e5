package bench

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Keys returns n distinct keys of one length ("k0000042"), so that every
// key's bytes fall in the same size class.
func Keys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%07d", i)
	}
	return keys
}

// Values returns the value of each key ("v0000042"), of the same length.
func Values(keys []string) map[string]string {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = "v" + k[1:]
	}
	return m
}

// Sequence is a precomputed, cyclic sequence of keys that readers walk from
// different offsets, so that choosing a key costs an index and a mask.
type Sequence struct {
	Keys  []string // length a power of two
	Mask  uint64
	start atomic.Uint64
}

// HotSequence is one key, read again and again.
func HotSequence(key string) *Sequence {
	return &Sequence{Keys: []string{key}}
}

// ZipfSequence draws 1<<16 reads over keys with Zipf exponent s (> 1): key
// i is read about as often as 1/(i+1)^s. The seed is fixed so every library
// reads the same sequence.
func ZipfSequence(keys []string, s float64) *Sequence {
	const n = 1 << 16
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), s, 1, uint64(len(keys)-1))
	seq := &Sequence{Keys: make([]string, n), Mask: n - 1}
	for i := range seq.Keys {
		seq.Keys[i] = keys[z.Uint64()]
	}
	return seq
}

// Start returns the offset a new reader starts from: readers start far
// apart, so that they do not read the same key in lockstep.
func (s *Sequence) Start() uint64 {
	return s.start.Add(7919) * 7919
}
