package qcache

import (
	"context"
	"testing"
)

// BenchmarkDelivery measures what one SetData costs with 10,000 observers
// of its entry: Use's (woken by every change), UseSelect's whose selected
// value stays the same (sel runs, nobody is woken) or changes (everybody
// is), and Use with NotifyOn(DataChanged) on data that stays the same.
func BenchmarkDelivery(b *testing.B) {
	const n = 10_000
	type job struct {
		Status   string
		Progress int
	}
	run := func(b *testing.B, watch func(q *Query[int, job]) func(), next func(i int) job) {
		c := NewClient()
		defer c.Close()
		q := NewQueryFunc(c, Key{"jobs"}, func(ctx context.Context, p int) (job, error) { return job{}, nil }, StaleTime(Forever))
		q.SetData(0, job{Status: "running"})
		closers := make([]func(), n)
		for i := range closers {
			closers[i] = watch(q)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			q.SetData(0, next(i))
		}
		b.StopTimer()
		for _, f := range closers {
			f()
		}
	}
	ctx := context.Background()
	status := func(j job) string { return j.Status }
	progress := func(i int) job { return job{Status: "running", Progress: i} }
	same := func(int) job { return job{Status: "running"} }
	newStatus := func(i int) job { return job{Status: itoa(i)} }
	b.Run("Use/progress", func(b *testing.B) {
		run(b, func(q *Query[int, job]) func() { return q.Use(ctx, 0).Close }, progress)
	})
	b.Run("UseSelect/progress", func(b *testing.B) {
		run(b, func(q *Query[int, job]) func() { return UseSelect(q, ctx, 0, status).Close }, progress)
	})
	b.Run("UseSelect/status", func(b *testing.B) {
		run(b, func(q *Query[int, job]) func() { return UseSelect(q, ctx, 0, status).Close }, newStatus)
	})
	b.Run("Use+DataChanged/same", func(b *testing.B) {
		run(b, func(q *Query[int, job]) func() { return q.Use(ctx, 0, NotifyOn(DataChanged)).Close }, same)
	})
}
