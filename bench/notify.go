package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/qcache-go/qcache"
)

// Notify is W4's setting: n observers of one qcache entry, each with a
// goroutine reading its Changes channel, as an application would.
type Notify struct {
	c       *qcache.Client
	q       *qcache.Query[string, int]
	obs     []*qcache.Observer[int]
	readers sync.WaitGroup
	round   atomic.Pointer[notifyRound]
	version int
}

type notifyRound struct {
	version int
	left    atomic.Int64
	done    chan struct{}
}

// notifyKey is the one entry every observer watches.
const notifyKey = "hot"

// NewNotify starts n observers of one entry that already holds data (so
// that mounting fetches nothing) and their readers.
func NewNotify(n int) *Notify {
	c := qcache.NewClient()
	q := qcache.NewQueryFunc(c, qcache.Key{"notify"}, func(context.Context, string) (int, error) {
		return 0, fmt.Errorf("bench: W4 must not fetch")
	}, qcache.StaleTime(qcache.Forever))
	q.SetData(notifyKey, 0)
	nb := &Notify{c: c, q: q}
	ctx := context.Background()
	for range n {
		o := q.Use(ctx, notifyKey)
		nb.obs = append(nb.obs, o)
		nb.readers.Add(1)
		go nb.read(o)
	}
	return nb
}

// read counts, for the round in progress, the observer's first delivery of
// the round's value.
func (nb *Notify) read(o *qcache.Observer[int]) {
	defer nb.readers.Done()
	last := 0
	for s := range o.Changes() {
		if !s.HasData || s.Data == last {
			continue
		}
		last = s.Data
		if r := nb.round.Load(); r != nil && r.version == s.Data {
			if r.left.Add(-1) == 0 {
				close(r.done)
			}
		}
	}
}

// SetAndWait sets a new value and returns once every observer's Changes
// channel has delivered it to its reader.
func (nb *Notify) SetAndWait() {
	nb.version++
	r := &notifyRound{version: nb.version, done: make(chan struct{})}
	r.left.Store(int64(len(nb.obs)))
	nb.round.Store(r)
	nb.q.SetData(notifyKey, nb.version)
	<-r.done
}

// Observed returns the data each observer's State holds.
func (nb *Notify) Observed() []int {
	out := make([]int, len(nb.obs))
	for i, o := range nb.obs {
		out[i] = o.State().Data
	}
	return out
}

// Close ends the observers, their readers and the client.
func (nb *Notify) Close() {
	nb.c.Close()
	nb.readers.Wait()
}
