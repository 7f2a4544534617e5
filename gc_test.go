package qcache

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type fakeGC struct {
	pos int32
	due []time.Duration
}

func (f *fakeGC) gcPos() *int32          { return &f.pos }
func (f *fakeGC) gcDue(at time.Duration) { f.due = append(f.due, at) }

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
