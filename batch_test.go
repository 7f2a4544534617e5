package qcache

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// batchSource answers a batch with "v:<p>" for every p but those in skip.
type batchSource struct {
	mu    sync.Mutex
	calls [][]int
	skip  map[int]bool
	err   error
}

func (s *batchSource) fetch(ctx context.Context, ps []int) (map[int]string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, slices.Clone(ps))
	s.mu.Unlock()
	if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, s.err
	}
	out := map[int]string{}
	for _, p := range ps {
		if !s.skip[p] {
			out[p] = "v:" + strconv.Itoa(p)
		}
	}
	return out, nil
}

func (s *batchSource) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, c := range s.calls {
		out = append(out, len(c))
	}
	return out
}

func TestBatchStormIsOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &batchSource{}
		c := NewClient()
		defer c.Close()
		q := NewQueryBatch(c, Key{"users"}, src.fetch)
		var wg sync.WaitGroup
		for p := range 512 {
			wg.Go(func() {
				v, err := q.Get(context.Background(), p)
				assert.NoError(t, err)
				assert.Equal(t, "v:"+strconv.Itoa(p), v, "each waiter gets its own key's data")
			})
		}
		wg.Wait()
		assert.Equal(t, []int{512}, src.sizes(), "512 concurrent misses, one upstream call")
		assert.Equal(t, Key{"users", "7"}, q.Key(7))
	})
}

func TestBatchMissingKeysAndErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &batchSource{skip: map[int]bool{2: true}}
		c := NewClient()
		defer c.Close()
		q := NewQueryBatch(c, Key{"users"}, src.fetch, Retry(0))
		got, err := q.GetMany(context.Background(), []int{1, 2, 3})
		assert.Equal(t, map[int]string{1: "v:1", 3: "v:3"}, got, "what arrived is returned")
		require.ErrorIs(t, err, ErrNotInBatch)
		assert.Contains(t, err.Error(), ": 2:", "the error names the key")
		assert.Equal(t, []int{3}, src.sizes())

		src.err = &HTTPError{StatusCode: 503}
		_, err = q.GetMany(context.Background(), []int{4, 5})
		var he *HTTPError
		require.ErrorAs(t, err, &he, "each key's error stays matchable")
		assert.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), 2, "one error per key")
	})
}

func TestBatchWindowAndMaxBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &batchSource{}
		c := NewClient()
		defer c.Close()
		q := NewQueryBatch(c, Key{"users"}, src.fetch, MaxBatch(4), BatchWindow(5*time.Millisecond))
		var wg sync.WaitGroup
		for p := range 10 {
			wg.Go(func() { q.Get(context.Background(), p) })
		}
		synctest.Wait()
		time.Sleep(20 * time.Millisecond) // a later key, past the window, makes a batch of its own
		wg.Go(func() { q.Get(context.Background(), 100) })
		wg.Wait()
		assert.Equal(t, []int{4, 4, 2, 1}, src.sizes())
	})
}

func TestGetManyAnswersHitsFromMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var asked []int
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) {
			mu.Lock()
			asked = append(asked, p)
			mu.Unlock()
			if p < 0 {
				return 0, &HTTPError{StatusCode: 404}
			}
			return p * 2, nil
		}, StaleTime(time.Hour), Retry(0))
		q.SetData(1, 2)
		got, err := q.GetMany(context.Background(), []int{1, 2, 2, 3, -1})
		var he *HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, map[int]int{1: 2, 2: 4, 3: 6}, got)
		mu.Lock()
		slices.Sort(asked)
		assert.Equal(t, []int{-1, 2, 3}, asked, "hits and duplicates are not fetched")
		mu.Unlock()
		assert.Equal(t, uint64(1), q.Stats().Hits)
	})
}

func TestMaxConcurrentFetchesWith10000Observers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inFlight, peak, calls atomic.Int64
		c := NewClient(WithMaxConcurrentFetches(64))
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p int) (int, error) {
			calls.Add(1)
			n := inFlight.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			defer inFlight.Add(-1)
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return 0, err
			}
			return p, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		obs := make([]*Observer[int], 10_000)
		for i := range obs {
			obs[i] = q.Use(ctx, i, RefetchInterval(time.Second))
		}
		synctest.Wait()
		queued := 0
		for _, o := range obs {
			if o.State().FetchStatus == FetchQueued {
				queued++
			}
		}
		assert.Equal(t, 10_000-64, queued, "the rest wait in FetchQueued")
		time.Sleep(3 * time.Second)
		cancel()
		for _, o := range obs {
			o.Close()
		}
		assert.Equal(t, int64(64), peak.Load(), "never more than 64 at once")
		assert.Greater(t, calls.Load(), int64(10_000), "every observer fetched, and polling went on")
	})
}

func TestQueuedFetchesAreFIFOAndCancellable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var order []string
		c := NewClient(WithMaxConcurrentFetches(1))
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p string) (string, error) {
			mu.Lock()
			order = append(order, p)
			mu.Unlock()
			if err := sleepCtx(ctx, time.Second); err != nil {
				return "", err
			}
			return p, nil
		})
		for _, p := range []string{"first", "a", "b", "c"} {
			q.Prefetch(p)
			synctest.Wait()
		}
		short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := q.Get(short, "gone")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		time.Sleep(10 * time.Second)
		mu.Lock()
		assert.Equal(t, []string{"first", "a", "b", "c"}, order, "first come, first served; the one that left never ran")
		mu.Unlock()
		assert.Equal(t, uint64(1), c.Stats().FetchCancelled)
	})
}

func ExampleNewQueryBatch() {
	c := NewClient()
	defer c.Close()
	users := NewQueryBatch(c, Key{"users"}, func(ctx context.Context, ids []int) (map[int]string, error) {
		fmt.Println("one call for", len(ids), "users")
		out := map[int]string{}
		for _, id := range ids {
			out[id] = "user " + strconv.Itoa(id)
		}
		return out, nil
	}, BatchWindow(50*time.Millisecond)) // GetMany asks its keys from goroutines: leave them time to gather
	got, err := users.GetMany(context.Background(), []int{1, 2, 3})
	fmt.Println(got[2], err)
	// Output:
	// one call for 3 users
	// user 2 <nil>
}

// BenchmarkBatchStorm: 512 goroutines ask 512 distinct missing keys of a
// NewQueryBatch query at once; it reports the upstream calls per storm.
func BenchmarkBatchStorm(b *testing.B) {
	var calls atomic.Int64
	c := NewClient()
	defer c.Close()
	q := NewQueryBatch(c, Key{"users"}, func(ctx context.Context, ps []int) (map[int]int, error) {
		calls.Add(1)
		out := make(map[int]int, len(ps))
		for _, p := range ps {
			out[p] = p
		}
		return out, nil
	}, BatchWindow(20*time.Millisecond)) // the real clock: 512 goroutines take a few ms to start on 2 busy cores
	b.ReportAllocs()
	round := 0
	for b.Loop() {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 512 {
			wg.Go(func() {
				<-start
				q.Get(context.Background(), round*512+i)
			})
		}
		close(start)
		wg.Wait()
		round++
	}
	b.ReportMetric(float64(calls.Load())/float64(round), "calls/storm")
}
