package bench

import (
	"context"
	"fmt"
	"runtime/metrics"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---------- Curves: hit, miss, memory, GC pause, invalidation by size ----------

// BenchmarkCurve measures one point of the scaling curves per library and
// number of entries (run it with -benchtime=1x): each run fills one cache
// and reports every curve's metric for it (MeasureCurve); ns/op is the
// whole run's time and means nothing. Sub-benchmarks are named
// lib/n=entries, so '^BenchmarkCurve$/^qcache$/^n=1000000$' picks one.
func BenchmarkCurve(b *testing.B) {
	for _, lib := range Libs {
		b.Run(lib, func(b *testing.B) {
			for _, n := range CurveSizes {
				b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
					var sum CurvePoint
					for range b.N {
						p, err := MeasureCurve(lib, DefaultCurveConfig(n))
						if err != nil {
							b.Fatal(err)
						}
						sum.add(p)
					}
					k := float64(b.N)
					b.ReportMetric(sum.BytesPerEntry/k, "B/entry")
					b.ReportMetric(sum.HitNs/k, "hit-ns")
					b.ReportMetric(sum.MissNs/k, "miss-ns")
					b.ReportMetric(sum.CallNs/k, "call-ns")
					b.ReportMetric(sum.GCPauseP99/k, "gc-p99-ns")
					b.ReportMetric(float64(sum.GCPauses)/k, "gc-pauses")
					b.ReportMetric(sum.GCCycleNs/k, "gc-cycle-ns")
					b.ReportMetric(sum.InvalidateNs/k, "invalidate-ns")
				})
			}
		})
	}
}

func (p *CurvePoint) add(q CurvePoint) {
	p.BytesPerEntry += q.BytesPerEntry
	p.HitNs += q.HitNs
	p.MissNs += q.MissNs
	p.CallNs += q.CallNs
	p.GCPauseP99 += q.GCPauseP99
	p.GCPauses += q.GCPauses
	p.GCCycleNs += q.GCCycleNs
	p.InvalidateNs += q.InvalidateNs
}

// Curves: every measurement of a point comes out positive and plausible on
// a small cache, for every library.
func TestMeasureCurve(t *testing.T) {
	cfg := CurveConfig{
		Entries: 5_000, Reads: 10_000, MissBatch: 100, MissBatches: 3,
		GCs: 2, MaxGCs: 2, InvalidateOps: 3, InvalidateTime: time.Millisecond,
	}
	// qcache last: memory of a closed qcache client is sometimes freed only
	// while the next library fills (about 1 MB for these 5,000 entries),
	// which made that library's bytes per entry negative here (and still
	// does for the first library of a second run with -count above 1).
	// bench/run measures each library in a process of its own, so its
	// figures are not affected. The cause is not found yet.
	libs := append(slices.DeleteFunc(slices.Clone(Libs), func(l string) bool { return l == Qcache }), Qcache)
	for _, lib := range libs {
		t.Run(lib, func(t *testing.T) {
			p, err := MeasureCurve(lib, cfg)
			require.NoError(t, err)
			t.Logf("%s: %+v", lib, p)
			assert.Greater(t, p.BytesPerEntry, 0.0)
			assert.Less(t, p.BytesPerEntry, 5000.0)
			assert.Greater(t, p.HitNs, 0.0)
			assert.Greater(t, p.MissNs, 0.0)
			assert.Greater(t, p.CallNs, 0.0)
			assert.GreaterOrEqual(t, p.GCPauses, 2*cfg.GCs, "each forced GC stops the world twice")
			assert.Greater(t, p.GCPauseP99, 0.0)
			assert.Greater(t, p.GCCycleNs, 0.0)
			assert.Greater(t, p.InvalidateNs, 0.0)
		})
	}
}

// A miss is a miss every time: after MissCost, the cold keys are gone
// again, and the cache answers its own keys from memory.
func TestMissCostRemoves(t *testing.T) {
	keys := Keys(100)
	cold := ColdKeys(10)
	vals := Values(append(keys, cold...))
	for _, lib := range Libs {
		t.Run(lib, func(t *testing.T) {
			src := &countingFetch{vals: vals}
			g := NewGetterFor(lib, src.fetch, len(keys))
			defer g.Close()
			for _, k := range keys {
				_, err := g.Get(t.Context(), k)
				require.NoError(t, err)
			}
			require.Equal(t, len(keys), src.n)
			_, _, err := MissCost(t.Context(), g, src.fetch, cold, 3)
			require.NoError(t, err)
			// 3 batches of 10 misses through the cache, and 3 of 10 bare calls.
			assert.Equal(t, len(keys)+2*3*len(cold), src.n)
			for _, k := range keys {
				_, err := g.Get(t.Context(), k)
				require.NoError(t, err)
			}
			assert.Equal(t, len(keys)+2*3*len(cold), src.n, "no hit fetched")
		})
	}
}

// The uniform sequence reaches nearly every key, each about as often.
func TestUniformSequence(t *testing.T) {
	keys := Keys(4096)
	seq := UniformSequence(keys)
	require.Len(t, seq.Keys, 1<<16)
	assert.Equal(t, uint64(1<<16-1), seq.Mask)
	count := map[string]int{}
	for _, k := range seq.Keys {
		count[k]++
	}
	assert.Greater(t, len(count), 4000, "distinct keys read")
	for _, k := range keys[:10] {
		assert.Less(t, count[k], 64, "key %s read %d times, 16 expected", k, count[k])
	}
	assert.Len(t, UniformSequence(Keys(100_000)).Keys, 1<<17)
}

// The quantile of a histogram's difference is the upper bound of its
// bucket.
func TestHistogramQuantile(t *testing.T) {
	buckets := []float64{0, 1, 2, 3, 4}
	before := &metrics.Float64Histogram{Counts: []uint64{5, 5, 5, 5}, Buckets: buckets}
	after := &metrics.Float64Histogram{Counts: []uint64{5, 95, 8, 5}, Buckets: buckets}
	q, n := histogramQuantile(before, after, 0.99)
	assert.Equal(t, 93, n)
	assert.Equal(t, 3.0, q, "rank 93 of 93 is in the third bucket, [2, 3)")
	q, _ = histogramQuantile(before, after, 0.5)
	assert.Equal(t, 2.0, q)
	q, n = histogramQuantile(before, before, 0.99)
	assert.Equal(t, 0, n)
	assert.Equal(t, 0.0, q)
}

type countingFetch struct {
	vals map[string]string
	n    int // Get is called by one caller at a time here
}

func (c *countingFetch) fetch(_ context.Context, k string) (string, error) {
	c.n++
	return c.vals[k], nil
}
