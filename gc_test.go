package qcache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGCQueueOrderAndStop(t *testing.T) {
	g := &gcQueue{epoch: time.Now()}
	a, b, c := &fakeGC{}, &fakeGC{}, &fakeGC{}
	g.schedule(a, time.Hour)
	g.schedule(b, time.Minute)
	g.schedule(c, 2*time.Hour)
	assert.Same(t, b, g.items[0].e, "the earliest deadline is on top")
	g.schedule(b, 3*time.Hour) // moved
	assert.Same(t, a, g.items[0].e)
	g.unschedule(a)
	assert.Equal(t, int32(0), a.pos)
	assert.Same(t, c, g.items[0].e)
	assert.Len(t, g.items, 2)

	g.stop()
	assert.Equal(t, int32(0), b.pos, "stop forgets every place")
	assert.Equal(t, int32(0), c.pos)
	g.unschedule(b) // no panic on an emptied queue
	g.schedule(a, time.Second)
	assert.Empty(t, g.items, "nothing is queued after stop")
	assert.Equal(t, int32(0), a.pos)
}

func TestGCQueuePopClearsThePlace(t *testing.T) {
	g := &gcQueue{epoch: time.Now()}
	a, b, c := &fakeGC{}, &fakeGC{}, &fakeGC{}
	g.schedule(a, time.Hour) // deadlines an hour away: the queue's own timer stays out of the way
	g.schedule(b, 2*time.Hour)
	g.schedule(c, 3*time.Hour)
	g.mu.Lock()
	due := g.popDueLocked(time.Hour)
	g.mu.Unlock()
	require.Len(t, due, 1)
	assert.Equal(t, int32(0), a.pos, "a popped item has no place left")
	g.unschedule(a) // must not take another item out
	assert.Len(t, g.items, 2)
	g.schedule(a, time.Hour)
	assert.NoError(t, checkGCQueue(g, []*fakeGC{a, b, c}))
}

// TestGCQueueRandomized runs random schedules, unschedules and pops and
// checks the queue's invariants after each.
func TestGCQueueRandomized(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0))
		g := &gcQueue{epoch: time.Now()}
		all := make([]*fakeGC, 1+rng.IntN(20))
		for i := range all {
			all[i] = &fakeGC{}
		}
		var ops []string
		for range 300 {
			n := rng.IntN(len(all))
			f := all[n]
			switch rng.IntN(4) {
			case 0, 1:
				at := time.Hour * time.Duration(1+rng.IntN(50)) // the queue's own timer never fires
				ops = append(ops, fmt.Sprintf("schedule(%d, %d)", n, at))
				g.schedule(f, at)
			case 2:
				ops = append(ops, fmt.Sprintf("unschedule(%d)", n))
				g.unschedule(f)
			case 3:
				now := time.Hour * time.Duration(1+rng.IntN(50))
				ops = append(ops, fmt.Sprintf("pop(%d)", now))
				g.mu.Lock()
				due := g.popDueLocked(now)
				g.mu.Unlock()
				for i, it := range due {
					require.LessOrEqual(t, it.at, now)
					if i > 0 {
						require.GreaterOrEqual(t, it.at, due[i-1].at, "due items come earliest first")
					}
				}
			}
			err := checkGCQueue(g, all)
			require.NoErrorf(t, err, "seed %d; operations:\n%s", seed, strings.Join(ops, "\n"))
		}
		g.stop()
	}
}
