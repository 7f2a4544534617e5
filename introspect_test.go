package qcache

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache/internal/introspect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// entryOf returns the view's entry of key.
func entryOf(t *testing.T, v introspect.Client, key Key) introspect.Entry {
	t.Helper()
	var found introspect.Entry
	v.Each(func(e introspect.Entry) bool {
		if Key(e.InspectKey()).String() == key.String() {
			found = e
			return false
		}
		return true
	})
	require.NotNil(t, found, "no entry %s", key)
	return found
}

func events(h []introspect.Change) []string {
	out := make([]string, len(h))
	for i, c := range h {
		out[i] = c.Event
	}
	return out
}

func TestWithHistoryRecordsChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithHistory(5))
		defer c.Close()
		fail := true
		q := NewQueryFunc(c, Key{"users"}, func(ctx context.Context, p string) (string, error) {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			if fail {
				return "", errors.New("upstream down")
			}
			return "user " + p, nil
		}, Retry(0))
		_, err := q.Get(context.Background(), "1")
		require.Error(t, err)
		fail = false
		_, err = q.Fetch(context.Background(), "1")
		require.NoError(t, err)
		require.NoError(t, q.Invalidate(context.Background(), "1"))
		q.SetData("1", "set")

		v := introspect.Of(c)
		e := entryOf(t, v, Key{"users", "1"})
		h := e.InspectHistory()
		// Seven changes, the last five kept.
		assert.Equal(t, []string{"fetch failed", "fetch started", "fetched", "invalidated", "data set"}, events(h))
		assert.EqualError(t, h[0].Err, "qcache: fetch users/1: upstream down")
		assert.Equal(t, "error", h[0].Status)
		assert.Equal(t, "success", h[4].Status)
		assert.True(t, h[1].At.Before(h[2].At), "times in order")

		row := e.InspectRow()
		assert.Equal(t, "success", row.Status)
		assert.Equal(t, "idle", row.FetchStatus)
		assert.True(t, row.Stale) // StaleTime 0: stale as soon as set
		data, ver, ok := e.InspectData()
		assert.True(t, ok)
		assert.Equal(t, "set", data)
		q.SetData("1", "again")
		_, ver2, _ := e.InspectData()
		assert.NotEqual(t, ver, ver2)
	})
}

func TestHistoryOnlyWhileOpen(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) { return p, nil })
	q.SetData("a", "1")
	v := introspect.Of(c)
	e := entryOf(t, v, Key{"k", "a"})
	assert.Nil(t, e.InspectHistory(), "no history while no inspector is open")
	assert.Nil(t, c.insp.watch.Load())

	w, closeA := v.Open()
	_, closeB := v.Open()
	q.SetData("a", "2")
	q.Remove("a")
	assert.Equal(t, uint64(1), w.Changes())
	assert.Equal(t, uint64(1), w.Removals())
	q.SetData("a", "3")
	e = entryOf(t, v, Key{"k", "a"})
	assert.Equal(t, []string{"data set"}, events(e.InspectHistory()), "a new entry: the removed one's history went with it")
	closeA()
	closeA() // idempotent
	assert.NotNil(t, c.insp.watch.Load(), "one page still open")
	closeB()
	assert.Nil(t, c.insp.watch.Load(), "the last page closed: nothing is recorded any more")
	assert.Nil(t, e.InspectHistory())
}

func TestHistoryKindsOfFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient(WithHistory(20))
		defer c.Close()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			return "v", nil
		})
		q.Prefetch("a")
		synctest.Wait()
		q.SetData("a", "pushed") // wins over the fetch in flight
		time.Sleep(2 * time.Second)
		q.Prefetch("a")
		synctest.Wait()
		c.Cancel(Filter{})
		e := entryOf(t, introspect.Of(c), Key{"k", "a"})
		assert.Equal(t, []string{"fetch started", "data set", "fetch ended without data", "fetch started", "fetch ended without data"},
			events(e.InspectHistory()))
	})
}

func TestHistoryRejectsNegative(t *testing.T) {
	assert.Panics(t, func() { WithHistory(-1) })
}
