package qcache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkStaleHeap checks the stale heap of q: heap order, the count of dead
// items, the dead never outnumbering the live, and one live item for each
// entry flagged as queued.
func checkStaleHeap[P comparable, T any](q *Query[P, T]) error {
	h := &q.stale
	h.mu.Lock()
	defer h.mu.Unlock()
	dead := 0
	liveOf := map[*entry[P, T]]int{}
	for i, it := range h.items {
		if i > 0 && h.less(i, (i-1)/2) {
			return fmt.Errorf("item %d is earlier than its parent", i)
		}
		if it.liveLocked() {
			liveOf[it.e]++
		} else {
			dead++
		}
	}
	if dead != h.dead {
		return fmt.Errorf("%d dead items, counted %d", dead, h.dead)
	}
	if dead > len(h.items)-dead {
		return fmt.Errorf("%d dead items outnumber %d live ones", dead, len(h.items)-dead)
	}
	for e, n := range liveOf {
		if n != 1 {
			return fmt.Errorf("entry %v has %d live items", e.p, n)
		}
	}
	var err error
	q.entries.each(func(e *entry[P, T]) bool {
		if e.flags.Load()&flagStaleQueued != 0 && liveOf[e] != 1 {
			err = fmt.Errorf("entry %v is flagged queued with %d live items", e.p, liveOf[e])
		}
		return err == nil
	})
	return err
}

// hitFresh reports whether the hit path answers p from memory.
func hitFresh[P comparable, T any](q *Query[P, T], p P) bool {
	e := q.lookup(p)
	if e == nil {
		return false
	}
	_, ok := e.hit()
	return ok
}

// restoreAt restores v as p's data as of t, as Hydrate does.
func restoreAt(t *testing.T, q *Query[string, string], p, v string, at time.Time) bool {
	t.Helper()
	e, err := q.lockedEntry(p)
	require.NoError(t, err)
	defer e.mu.Unlock()
	return e.restoreLocked(v, at, false)
}

func TestStaleTurnsEachEntryAtItsBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const st = 10 * time.Second
		c, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(st))
		ctx := context.Background()
		start := time.Now()
		deadline := map[string]time.Time{}
		for i := range 60 {
			p := "k" + itoa(i)
			switch i % 3 {
			case 0, 1:
				_, err := q.Get(ctx, p)
				require.NoError(t, err)
			case 2: // restored data, older than the rest: earlier deadlines
				require.True(t, restoreAt(t, q, p, "old", time.Now().Add(-time.Duration(i)*100*time.Millisecond)))
			}
			deadline[p] = q.State(p).DataUpdatedAt.Add(st)
			time.Sleep(time.Duration(i%4) * 150 * time.Millisecond)
		}
		require.NoError(t, checkStaleHeap(q))
		var ats []time.Time
		for _, d := range deadline {
			ats = append(ats, d)
		}
		for _, d := range ats {
			require.True(t, d.After(start))
		}
		check := func(when string) {
			now := time.Now()
			for p, d := range deadline {
				stale := !now.Before(d)
				assert.Equalf(t, stale, q.State(p).IsStale, "%s: State of %s at %v, stale at %v", when, p, now.Sub(start), d.Sub(start))
			}
		}
		for {
			var next time.Time
			for _, d := range ats {
				if d.After(time.Now()) && (next.IsZero() || d.Before(next)) {
					next = d
				}
			}
			if next.IsZero() {
				break
			}
			time.Sleep(time.Until(next) - 1)
			check("just before")
			synctest.Wait()
			for p, d := range deadline {
				assert.Equalf(t, d.After(time.Now()), hitFresh(q, p), "hit path of %s just before %v", p, next.Sub(start))
			}
			time.Sleep(1)
			check("at a boundary") // whether the heap ran first or not
			synctest.Wait()
			for p, d := range deadline {
				assert.Equalf(t, d.After(time.Now()), hitFresh(q, p), "hit path of %s at %v", p, next.Sub(start))
			}
			require.NoError(t, checkStaleHeap(q))
		}
		for p := range deadline {
			assert.True(t, q.State(p).IsStale)
			assert.False(t, hitFresh(q, p))
		}
		q.stale.mu.Lock()
		assert.Empty(t, q.stale.items, "every item was taken out when due")
		q.stale.mu.Unlock()
		_ = c
	})
}

func TestStaleSetDataStormKeepsTheHeapSmall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const st = time.Minute
		_, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(st))
		for i := range 10 {
			q.SetData("k"+itoa(i), "v")
		}
		var last time.Time
		for i := range 10_000 {
			q.SetData("k0", "v"+itoa(i))
			last = time.Now()
			q.stale.mu.Lock()
			n := len(q.stale.items)
			q.stale.mu.Unlock()
			require.LessOrEqual(t, n, 2*10+1, "SetData %d", i)
			if i%1000 == 0 {
				require.NoError(t, checkStaleHeap(q))
				time.Sleep(time.Second)
			}
		}
		require.NoError(t, checkStaleHeap(q))
		time.Sleep(time.Until(last.Add(st)) - 1)
		assert.False(t, q.State("k0").IsStale)
		synctest.Wait()
		assert.True(t, hitFresh(q, "k0"))
		time.Sleep(1)
		assert.True(t, q.State("k0").IsStale)
		synctest.Wait()
		assert.False(t, hitFresh(q, "k0"))
		require.NoError(t, checkStaleHeap(q))
	})
}

func TestStaleHeapLetsRemovedEntriesGo(t *testing.T) {
	for _, how := range []string{"Remove", "gc", "evict"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 100
				opts := []QueryOption{StaleTime(time.Hour)}
				copts := []ClientOption{}
				if how == "gc" {
					opts = append(opts, GCTime(time.Minute))
				}
				if how == "evict" {
					copts = append(copts, WithMaxEntries(n))
				}
				c := NewClient(copts...)
				defer c.Close()
				q := NewQueryFunc(c, Key{"items"}, newSource(slowValue(0)).fetch, opts...)
				ctx := context.Background()
				for i := range n {
					_, err := q.Get(ctx, "k"+itoa(i))
					require.NoError(t, err)
				}
				switch how {
				case "Remove":
					for i := range n {
						q.Remove("k" + itoa(i))
						require.NoError(t, checkStaleHeap(q))
					}
				case "gc":
					time.Sleep(time.Minute)
					synctest.Wait()
				case "evict": // each new entry evicts an old one
					for i := range n {
						_, err := q.Get(ctx, "new"+itoa(i))
						require.NoError(t, err)
						require.NoError(t, checkStaleHeap(q))
					}
				}
				require.NoError(t, checkStaleHeap(q))
				q.stale.mu.Lock()
				defer q.stale.mu.Unlock()
				gone := 0
				for _, it := range q.stale.items {
					if it.e.isGone() {
						gone++
					}
				}
				assert.LessOrEqual(t, gone, len(q.stale.items)-gone, "removed entries are dead items, never the majority")
				if how != "evict" {
					assert.Empty(t, q.stale.items)
				}
			})
		})
	}
}

func TestStaleHeapCloseDropsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(time.Minute))
		for i := range 100 {
			_, err := q.Get(context.Background(), "k"+itoa(i))
			require.NoError(t, err)
			time.Sleep(time.Millisecond)
		}
		require.NoError(t, c.Close())
		q.stale.mu.Lock()
		assert.Nil(t, q.stale.items)
		assert.True(t, q.stale.stopped)
		q.stale.mu.Unlock()
		c.gc.mu.Lock()
		assert.Empty(t, c.gc.items, "the client's queue holds neither the stale heap nor anything else")
		c.gc.mu.Unlock()
		q.SetData("k0", "late") // ignored once closed
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		assert.True(t, q.State("k0").IsStale, "State keeps the rule after Close")
		q.stale.mu.Lock()
		assert.Nil(t, q.stale.items)
		q.stale.mu.Unlock()
	})
}

// TestStaleModel runs seeded random operations on a few keys in virtual
// time and checks after each that State and the hit path agree with the
// rule: fresh while the data is not invalidated and younger than StaleTime;
// the hit path at the latest once the stale heap has run.
func TestStaleModel(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := range uint64(seeds) {
		t.Run("seed="+itoa(int(seed)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { staleModelRun(t, seed) })
		})
	}
}

func staleModelRun(t *testing.T, seed uint64) {
	const st = 10 * time.Second
	r := rand.New(rand.NewPCG(seed, 7))
	_, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(st))
	ctx := context.Background()
	type model struct {
		has         bool
		at          time.Time
		invalidated bool
	}
	keys := []string{"a", "b", "c", "d", "e"}
	m := map[string]*model{}
	for _, k := range keys {
		m[k] = &model{}
	}
	var ops []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d after %s: "+format, append([]any{seed, strings.Join(ops, ", ")}, args...)...)
	}
	for range 300 {
		k := keys[r.IntN(len(keys))]
		mk := m[k]
		switch op := r.IntN(8); op {
		case 0, 1:
			ops = append(ops, "Get "+k)
			fresh := mk.has && !mk.invalidated && time.Now().Before(mk.at.Add(st))
			_, err := q.Get(ctx, k)
			require.NoError(t, err)
			if !fresh {
				mk.has, mk.at, mk.invalidated = true, time.Now(), false
			}
		case 2:
			ops = append(ops, "SetData "+k)
			q.SetData(k, "s")
			mk.has, mk.at, mk.invalidated = true, time.Now(), false
		case 3:
			age := time.Duration(r.IntN(25)) * time.Second / 2
			ops = append(ops, fmt.Sprintf("restore %s aged %v", k, age))
			at := time.Now().Add(-age)
			restored := restoreAt(t, q, k, "r", at)
			if want := !mk.has || at.After(mk.at); restored != want {
				fail("restore: %v, want %v", restored, want)
			}
			if restored {
				mk.has, mk.at, mk.invalidated = true, at, false
			}
		case 4:
			ops = append(ops, "Invalidate "+k)
			require.NoError(t, q.Invalidate(ctx, k))
			if mk.has {
				mk.invalidated = true
			}
		case 5:
			ops = append(ops, "Remove "+k)
			q.Remove(k)
			*mk = model{}
		default:
			var d time.Duration
			switch r.IntN(3) {
			case 0:
				d = time.Duration(r.IntN(3000)) * time.Millisecond
			case 1: // to just before, or exactly at, a key's boundary
				o := m[keys[r.IntN(len(keys))]]
				if o.has {
					d = max(time.Until(o.at.Add(st))-time.Duration(r.IntN(2)), 0)
				}
			case 2:
				d = time.Duration(r.IntN(2)) // 0 or 1ns
			}
			ops = append(ops, "sleep "+d.String())
			time.Sleep(d)
		}
		now := time.Now()
		for _, k := range keys {
			mk := m[k]
			fresh := mk.has && !mk.invalidated && now.Before(mk.at.Add(st))
			if s := q.State(k); s.IsStale == fresh {
				fail("State(%s).IsStale = %v at %v, data of %v", k, s.IsStale, now, mk.at)
			}
			if fresh && !hitFresh(q, k) {
				fail("hit path of %s misses fresh data", k)
			}
		}
		synctest.Wait() // the stale heap runs what is due now
		for _, k := range keys {
			mk := m[k]
			fresh := mk.has && !mk.invalidated && now.Before(mk.at.Add(st))
			if got := hitFresh(q, k); got != fresh {
				fail("hit path of %s: %v, want %v", k, got, fresh)
			}
		}
		if err := checkStaleHeap(q); err != nil {
			fail("%v", err)
		}
	}
}

// TestStaleHeapStress runs SetData, Get, Invalidate, Remove and State on a
// few keys from several goroutines with a short StaleTime, in real time and
// bounded, for the race detector; the heap's invariants hold at the end.
func TestStaleHeapStress(t *testing.T) {
	c, q := newFuncQuery(t, newSource(slowValue(0)), StaleTime(time.Millisecond))
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 2000 {
				k := "k" + itoa(r.IntN(8))
				switch r.IntN(6) {
				case 0:
					q.SetData(k, "v")
				case 1:
					_, _ = q.Get(ctx, k)
				case 2:
					_ = q.Invalidate(ctx, k)
				case 3:
					q.Remove(k)
				case 4:
					_ = q.State(k)
				case 5:
					hitFresh(q, k)
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, checkStaleHeap(q))
	require.NoError(t, c.Close())
	q.stale.mu.Lock()
	assert.Nil(t, q.stale.items)
	q.stale.mu.Unlock()
}

// TestEntryStaysOneSizeClass keeps the entry of a string key at 80 bytes,
// a size class of its own: the stale heap's bookkeeping lives in the heap
// and in a bit of flags, and the error, HTTP meta and observers behind one
// pointer (entryExt).
func TestEntryStaysOneSizeClass(t *testing.T) {
	assert.Equal(t, uintptr(80), unsafe.Sizeof(entry[string, string]{}))
	assert.Equal(t, uintptr(72), unsafe.Sizeof(entry[int, int]{}), "a one-word key: 72 bytes, in the 80-byte class")
}
