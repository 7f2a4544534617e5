package qcache

import "time"

// The times an entry keeps (when its data landed, its gc deadline) are
// offsets from the client's epoch, the time.Now() of NewClient, which
// carries a monotonic reading: 8 bytes each instead of a time.Time's 24,
// compared by the monotonic clock as time.Time's own comparisons are.
// A time handed out (State.DataUpdatedAt) is the epoch plus the offset,
// so it carries a monotonic reading too; its wall time is the epoch's
// plus the monotonic time since, which is the wall clock's reading at the
// update unless the wall clock was stepped since the client started.

// clock returns the time since the client's epoch.
func (c *Client) clock() time.Duration { return time.Since(c.gc.epoch) }

// timeAt returns the time at offset d from the client's epoch.
func (c *Client) timeAt(d time.Duration) time.Time { return c.gc.epoch.Add(d) }

// updatedAt returns DataUpdatedAt: the zero Time while there is no data.
func (n *snapshot[T]) updatedAt(c *Client) time.Time {
	if !n.hasData {
		return time.Time{}
	}
	return c.timeAt(n.dataUpdatedAt)
}
