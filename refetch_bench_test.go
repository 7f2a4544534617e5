package qcache

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkObserverFootprint measures the memory of idle polling observers:
// 10,000 observers of distinct keys, each polling every minute, heap and
// stack in use after GC, divided by the number of observers.
func BenchmarkObserverFootprint(b *testing.B) {
	const n = 10_000
	for b.Loop() {
		c := NewClient()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p int) (int, error) { return p, nil }, StaleTime(Forever))
		for i := range n {
			q.SetData(i, i) // entries exist before, so only observers are counted
		}
		before := memInUse()
		obs := make([]*Observer[int], n)
		for i := range obs {
			obs[i] = q.Use(context.Background(), i, RefetchInterval(time.Minute))
		}
		after := memInUse()
		b.ReportMetric(float64(after-before)/n, "B/observer")
		for _, o := range obs {
			o.Close()
		}
		c.Close()
	}
}

func memInUse() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkPollingLateness runs 10,000 observers polling distinct keys every
// second for a few seconds and reports how late their ticks fire: the gap
// between two fetches of a key minus the interval.
func BenchmarkPollingLateness(b *testing.B) {
	const n, interval = 10_000, time.Second
	for b.Loop() {
		c := NewClient()
		var mu sync.Mutex
		last := make([]time.Time, n)
		var late []time.Duration
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p int) (int, error) {
			now := time.Now()
			mu.Lock()
			if !last[p].IsZero() {
				late = append(late, now.Sub(last[p])-interval)
			}
			last[p] = now
			mu.Unlock()
			return p, nil
		})
		for i := range n {
			q.Use(context.Background(), i, RefetchInterval(interval))
		}
		time.Sleep(4500 * time.Millisecond)
		c.Close()
		slices.Sort(late)
		if len(late) == 0 {
			b.Fatal("no ticks")
		}
		b.ReportMetric(float64(late[len(late)/2].Microseconds())/1000, "ms-median-late")
		b.ReportMetric(float64(late[len(late)*99/100].Microseconds())/1000, "ms-p99-late")
		b.ReportMetric(float64(late[len(late)-1].Microseconds())/1000, "ms-worst-late")
		b.ReportMetric(float64(len(late)), "ticks")
	}
}
