package qcache

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStressRealClock: 8 goroutines mix every public operation on 3,000
// keys of three queries (one of them a NewQueryBatch) for a bounded time on
// the real clock, with WithMaxConcurrentFetches(16), GCTime(1ms) on two, a bound of 500 entries, and an upstream that fails, panics, stalls and ignores
// cancellation. Nothing may panic or hang, every value served must be one
// the key could hold, Stats must add up after Close, and goleak (TestMain)
// checks that nothing is left running. QCACHE_STRESS sets the duration
// (default 15 s); -short skips it.
func TestStressRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("real-clock stress skipped in -short mode")
	}
	duration := 15 * time.Second
	if s := os.Getenv("QCACHE_STRESS"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "QCACHE_STRESS")
		duration = d
	}
	const (
		workers = 8
		keys    = 3000
	)
	c := NewClient(WithMaxEntries(500), WithMaxConcurrentFetches(16))
	var calls atomic.Int64
	upstream := func(ctx context.Context, k int) (string, error) {
		n := calls.Add(1)
		switch n % 50 {
		case 0:
			panic("stress: upstream panicked")
		case 1, 2, 3, 4, 5:
			return "", errors.New("stress: upstream failed")
		case 6:
			time.Sleep(2 * time.Millisecond) // deaf to cancellation
		case 7, 8:
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return "f:" + strconv.Itoa(k) + ":" + strconv.FormatInt(n, 10), nil
	}
	retry := []QueryOption{Retry(1), RetryDelay(func(int, error) time.Duration { return time.Millisecond })}
	// Two queries on the same keys: one collected 1 ms after use, one kept
	// until WithMaxEntries evicts it.
	qs := []*Query[int, string]{
		NewQueryFunc(c, Key{"s"}, upstream, append(retry, GCTime(time.Millisecond), StaleTime(2*time.Millisecond))...),
		NewQueryFunc(c, Key{"t"}, upstream, append(retry, StaleTime(5*time.Millisecond))...),
		NewQueryBatch(c, Key{"b"}, func(ctx context.Context, ks []int) (map[int]string, error) {
			out := make(map[int]string, len(ks))
			for i, k := range ks {
				if i%10 == 9 {
					continue // left out: ErrNotInBatch
				}
				v, err := upstream(ctx, k)
				if err != nil {
					return nil, err
				}
				out[k] = v
			}
			return out, nil
		}, append(retry, GCTime(time.Millisecond))...),
	}

	var bad atomic.Int64
	var badSample atomic.Value
	check := func(what string, k int, v string) {
		if !strings.HasPrefix(v, "f:"+strconv.Itoa(k)+":") && v != "s:"+strconv.Itoa(k) && v != "u:"+strconv.Itoa(k) {
			bad.Add(1)
			badSample.Store(what + " of " + strconv.Itoa(k) + " served " + strconv.Quote(v))
		}
	}
	checkState := func(s State[string]) {
		if (s.Status == StatusError) != (s.Err != nil) || (s.Status == StatusPending && s.HasData) {
			bad.Add(1)
			badSample.Store("inconsistent state")
		}
	}

	deadline := time.Now().Add(duration)
	var ops [workers]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for time.Now().Before(deadline) {
				ops[w].Add(1)
				k := rng.IntN(keys)
				q := qs[rng.IntN(len(qs))]
				switch rng.IntN(16) {
				case 0, 1, 2:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(20))*time.Millisecond)
					if v, err := q.Get(ctx, k); err == nil {
						check("Get", k, v)
					}
					cancel()
				case 3:
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					if v, err := q.Fetch(ctx, k); err == nil {
						check("Fetch", k, v)
					}
					cancel()
				case 4:
					q.Prefetch(k)
				case 5:
					q.SetData(k, "s:"+strconv.Itoa(k))
				case 6:
					q.Update(k, func(string, bool) string { return "u:" + strconv.Itoa(k) })
				case 7:
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
					q.Invalidate(ctx, k)
					cancel()
				case 8:
					q.Remove(k)
				case 9:
					c.Cancel(Filter{Key: q.Key(k), Exact: true})
				case 10:
					o := q.Use(context.Background(), k, RefetchInterval(time.Millisecond))
					for range rng.IntN(3) {
						// The first state comes at once; the next only with a
						// change, which may never come (offline, with the mount
						// fetch already paused when Use returned).
						select {
						case s := <-o.Changes():
							checkState(s)
						case <-time.After(5 * time.Millisecond):
						}
					}
					if rng.IntN(2) == 0 {
						o.Close()
					} else {
						go o.Close() // closed from elsewhere while it works
					}
				case 11:
					if v, ok := q.Peek(k); ok {
						check("Peek", k, v)
					}
					checkState(q.State(k))
				case 12:
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
					c.Refetch(ctx, Filter{Predicate: func(key Key) bool { return key[1] == strconv.Itoa(k) }})
					cancel()
				case 14:
					ks := []int{k, (k + 1) % keys, (k + 7) % keys}
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					got, _ := q.GetMany(ctx, ks)
					cancel()
					for p, v := range got {
						check("GetMany", p, v)
					}
				case 15:
					c.SetOnline(rng.IntN(4) != 0) // mostly online
				case 13:
					if err := checkGCQueue(&c.gc, nil); err != nil {
						bad.Add(1)
						badSample.Store("gc queue: " + err.Error())
					}
					c.Stats()
				}
			}
		})
	}
	noHang(t, "the stress workers", wg.Wait)
	c.SetOnline(true)
	noHang(t, "Client.Close", func() { c.Close() })

	st := c.Stats()
	assert.Equalf(t, st.Fetches, st.FetchSuccesses+st.FetchErrors+st.FetchCancelled,
		"Fetches = %d, but not as many settled: %+v", st.Fetches, st)
	assert.Zerof(t, st.Observers, "%d observers after Close", st.Observers)
	n := bad.Load()
	assert.Zerof(t, n, "%d violations, e.g. %v", n, badSample.Load())
	var total int64
	for w := range workers {
		assert.NotZerof(t, ops[w].Load(), "worker %d made no progress", w)
		total += ops[w].Load()
	}
	t.Logf("stress, %v, %d workers, %d keys, GOMAXPROCS %d: %d operations, %d upstream calls; %+v",
		duration, workers, keys, runtime.GOMAXPROCS(0), total, calls.Load(), st)
}

// TestStressPollingTicks races the ways an observer's tick meets the rest,
// on the real clock with 1 ms intervals for a bounded time: a change
// (SetData, a fetch) moving a queued tick while the client's deadline
// queue pops it, Close and the end of the context while a tick is due,
// SetOptions turning the interval to 0 and back or switching the observer
// off, interval functions, Client.Close with observers still polling. The
// queue must stay a well-formed heap, no ended observer may keep a tick
// queued, nothing fetches once every observer has ended, and goleak
// (TestMain) checks that no tick's goroutine is left.
func TestStressPollingTicks(t *testing.T) {
	const (
		workers = 4
		keys    = 8
		live    = 6 // observers a worker keeps
	)
	const duration = 300 * time.Millisecond
	c := NewClient()
	var calls atomic.Int64
	q := NewQueryFunc(c, Key{"p"}, func(ctx context.Context, k int) (int, error) {
		return int(calls.Add(1)), nil
	})
	type obs struct {
		o      *Observer[int]
		cancel context.CancelFunc
	}
	interval := func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(3)) * time.Millisecond / 2 }
	use := func(r *rand.Rand) obs {
		ctx, cancel := context.WithCancel(context.Background())
		var opt UseOption
		if r.IntN(3) == 0 {
			opt = q.RefetchIntervalFunc(func(s State[int]) time.Duration {
				return time.Duration(s.Data%3) * time.Millisecond / 2
			})
		} else {
			opt = RefetchInterval(interval(r))
		}
		return obs{q.Use(ctx, r.IntN(keys), opt, RefetchIntervalInBackground(true)), cancel}
	}
	// end ends o by Close or by its context, and reports whether it has
	// waited for the end.
	end := func(o obs, r *rand.Rand) bool {
		if r.IntN(2) == 0 {
			o.o.Close()
		} else {
			o.cancel()
		}
		if r.IntN(2) == 0 {
			return false
		}
		o.o.Close() // waits for the end of a cancelled one too
		o.cancel()
		c.gc.mu.Lock()
		assert.Zero(t, o.o.tickPos, "an ended observer has no tick queued")
		c.gc.mu.Unlock()
		return true
	}
	var wg sync.WaitGroup
	left := make([][]obs, workers)
	ending := make([][]obs, workers) // ended without waiting
	deadline := time.Now().Add(duration)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 17))
			var mine []obs
			for time.Now().Before(deadline) {
				for len(mine) < live {
					mine = append(mine, use(r))
				}
				i := r.IntN(len(mine))
				o := mine[i]
				switch r.IntN(8) {
				case 0, 1:
					q.SetData(r.IntN(keys), r.IntN(1000))
				case 2:
					o.o.SetOptions(RefetchInterval(interval(r)))
				case 3:
					o.o.SetOptions(RefetchInterval(0))
				case 4:
					o.o.SetOptions(Enabled(r.IntN(2) == 0))
				case 5:
					if !end(o, r) {
						ending[w] = append(ending[w], o)
					}
					mine = slices.Delete(mine, i, i+1)
				case 6:
					assert.NoError(t, checkGCQueue(&c.gc, nil))
				case 7:
					time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
				}
			}
			left[w] = mine
		}()
	}
	wg.Wait()
	require.NoError(t, checkGCQueue(&c.gc, nil))
	for _, mine := range ending {
		for _, o := range mine {
			o.o.Close()
			o.cancel()
		}
	}
	// Half the observers end by themselves, the rest with the client.
	for w, mine := range left {
		if w%2 == 0 {
			for _, o := range mine {
				o.o.Close()
				o.cancel()
			}
		}
	}
	c.gc.mu.Lock()
	for _, it := range c.gc.items {
		if o, ok := it.e.(*Observer[int]); ok {
			assert.Zero(t, o.flags.Load()&obsEnded, "an ended observer has a tick queued")
		}
	}
	c.gc.mu.Unlock()
	require.NoError(t, c.Close())
	n := calls.Load()
	time.Sleep(20 * time.Millisecond) // 40 intervals: a tick left behind would fetch
	assert.Equal(t, n, calls.Load(), "nothing fetches after Close")
	c.gc.mu.Lock()
	assert.Empty(t, c.gc.items)
	c.gc.mu.Unlock()
	for _, mine := range left {
		for _, o := range mine {
			o.cancel()
			assert.Zero(t, o.o.tickPos)
		}
	}
}
