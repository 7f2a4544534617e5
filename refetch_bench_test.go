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
// second for a few seconds and reports how late their ticks fire. A tick is
// due one interval after the entry's last change, the success of its
// previous fetch (DataUpdatedAt): "late" is how long after that the next
// fetch starts. "gap-over" is the gap between two fetch starts of a key
// minus the interval, which adds the previous fetch's own time from start
// to success.
func BenchmarkPollingLateness(b *testing.B) {
	const n, interval = 10_000, time.Second
	for b.Loop() {
		c := NewClient()
		var mu sync.Mutex
		last := make([]time.Time, n)
		var late, gapOver []time.Duration
		var q *Query[int, int]
		q = NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p int) (int, error) {
			now := time.Now()
			prev := q.State(p)
			mu.Lock()
			if !last[p].IsZero() {
				gapOver = append(gapOver, now.Sub(last[p])-interval)
				late = append(late, now.Sub(prev.DataUpdatedAt)-interval)
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
		if len(late) == 0 {
			b.Fatal("no ticks")
		}
		slices.Sort(late)
		slices.Sort(gapOver)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(late[len(late)/2]), "ms-median-late")
		b.ReportMetric(ms(late[len(late)*99/100]), "ms-p99-late")
		b.ReportMetric(ms(late[len(late)-1]), "ms-worst-late")
		b.ReportMetric(ms(gapOver[len(gapOver)/2]), "ms-median-gap-over")
		b.ReportMetric(ms(gapOver[len(gapOver)-1]), "ms-worst-gap-over")
		b.ReportMetric(float64(len(late)), "ticks")
	}
}
