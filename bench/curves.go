package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
	"unsafe"
)

// CurveSizes are the numbers of entries at which the scaling curves are
// measured (BenchmarkCurve).
var CurveSizes = []int{10_000, 100_000, 1_000_000}

// CurveConfig says how much work one point of the curves does. The
// benchmark uses DefaultCurveConfig; tests use a small one.
type CurveConfig struct {
	Entries int // cached entries, filled through each library's Get

	Reads int // hit latency: reads in all, spread over GOMAXPROCS readers

	MissBatch   int // miss overhead: cold keys missed per timed batch,
	MissBatches int // then removed again outside the timing

	GCs    int           // GC pause: at least this many forced collections while readers run,
	GCTime time.Duration // and more until this much time was spent in them,
	MaxGCs int           // but no more than this many

	InvalidateOps  int           // prefix invalidation: at least this many ops,
	InvalidateTime time.Duration // and until this much time was spent in them
}

// DefaultCurveConfig is the work of one point of BenchmarkCurve at n
// entries.
func DefaultCurveConfig(n int) CurveConfig {
	return CurveConfig{
		Entries:        n,
		Reads:          1 << 20,
		MissBatch:      1_000,
		MissBatches:    20,
		GCs:            2,
		GCTime:         500 * time.Millisecond,
		MaxGCs:         50,
		InvalidateOps:  2,
		InvalidateTime: 200 * time.Millisecond,
	}
}

// CurvePoint is what one point of the curves measured for one library at
// one number of entries.
type CurvePoint struct {
	BytesPerEntry float64 // heap per entry beyond the keys and values (W3's method)
	HitNs         float64 // ns per Get of a cached key, readers in parallel
	MissNs        float64 // ns per Get of a cold key whose fetch answers at once
	CallNs        float64 // ns per bare call of that fetch, no cache in front
	GCPauseP99    float64 // ns, p99 of the stop-the-world pauses of the GCs
	GCPauses      int     // how many pauses GCPauseP99 is taken over
	GCCycleNs     float64 // ns, mean wall time of one forced full GC
	InvalidateNs  float64 // ns to end the freshness of 1% of the entries by prefix
}

// MissOverheadNs is what a miss costs beyond calling the fetch itself.
func (p CurvePoint) MissOverheadNs() float64 { return p.MissNs - p.CallNs }

// MeasureCurve measures one point of the curves for lib: it fills lib's
// cache with cfg.Entries entries through its Get and measures, on that one
// cache, the heap per entry, hit latency, miss overhead and GC pauses; then
// it closes it and measures prefix invalidation on a cache of as many
// entries in 100 groups (W5's setting, NewPrefix).
func MeasureCurve(lib string, cfg CurveConfig) (CurvePoint, error) {
	var p CurvePoint
	n := cfg.Entries
	ctx := context.Background()
	keys := Keys(n)
	cold := ColdKeys(cfg.MissBatch)
	vals := Values(append(keys[:n:n], cold...))
	fetch := func(_ context.Context, k string) (string, error) { return vals[k], nil }

	// Memory per entry: W3's method (MemoryPerEntry), on the cache the
	// other measurements then use.
	before := heapLive()
	g := NewGetterFor(lib, fetch, n+cfg.MissBatch)
	defer func() {
		if g != nil {
			g.Close()
		}
	}()
	gcOff := debug.SetGCPercent(-1) // saves the fill's collections; heapLive collects
	for _, k := range keys {
		if v, err := g.Get(ctx, k); err != nil || v != vals[k] {
			debug.SetGCPercent(gcOff)
			return p, fmt.Errorf("%s: fill %s: %q, %v", lib, k, v, err)
		}
	}
	debug.SetGCPercent(gcOff)
	after := heapLive()
	own := float64(unsafe.Sizeof(keys[0]) + unsafe.Sizeof(vals[keys[0]]))
	p.BytesPerEntry = (float64(after)-float64(before))/float64(n) - own

	seq := UniformSequence(keys)
	var err error
	if p.HitNs, err = ParallelHits(ctx, g, seq, cfg.Reads); err != nil {
		return p, err
	}
	if p.MissNs, p.CallNs, err = MissCost(ctx, g, fetch, cold, cfg.MissBatches); err != nil {
		return p, err
	}
	if p.GCPauseP99, p.GCPauses, p.GCCycleNs, err = GCPauses(ctx, g, seq, cfg.GCs, cfg.MaxGCs, cfg.GCTime); err != nil {
		return p, err
	}
	runtime.KeepAlive(keys)
	runtime.KeepAlive(vals)
	g.Close()
	g = nil

	if p.InvalidateNs, err = InvalidateCost(ctx, lib, n, cfg.InvalidateOps, cfg.InvalidateTime); err != nil {
		return p, err
	}
	return p, nil
}

// NewGetterFor is NewGetter for a cache that must hold n entries without
// evicting any: sturdyc, the one bounded cache, gets room for twice as many
// (its shards fill unevenly), at least the 1<<18 of the other workloads.
func NewGetterFor(lib string, fetch Fetcher, n int) Getter {
	if lib == Sturdyc {
		return NewSturdycFor(fetch, n)
	}
	return NewGetter(lib, fetch)
}

// SturdycCapacity is the capacity given to sturdyc for n entries.
func SturdycCapacity(n int) int { return max(1<<18, 2*n) }

// ColdKeys returns n keys that Keys never returns ("m0000042"), of the same
// length.
func ColdKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("m%07d", i)
	}
	return keys
}

// UniformSequence draws reads of keys uniformly at random (fixed seed), as
// many as the power of two at or above len(keys) and at least 1<<16, so
// that at every size the reads reach nearly every key and a reader's next
// key is seldom in the CPU's caches.
func UniformSequence(keys []string) *Sequence {
	n := 1 << 16
	for n < len(keys) {
		n <<= 1
	}
	r := rand.New(rand.NewPCG(3, 4))
	seq := &Sequence{Keys: make([]string, n), Mask: uint64(n - 1)}
	for i := range seq.Keys {
		seq.Keys[i] = keys[r.IntN(len(keys))]
	}
	return seq
}

// ParallelHits reads seq's keys from g, reads in all, spread over
// GOMAXPROCS readers that start at once, and returns the wall time per read
// (as b.RunParallel's ns/op). seq's keys should all be cached already, or
// the misses are timed too; a failed Get is returned as the error.
func ParallelHits(ctx context.Context, g Getter, seq *Sequence, reads int) (float64, error) {
	readers := runtime.GOMAXPROCS(0)
	per := max(1, reads/readers)
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		errs  = make([]error, readers)
	)
	for r := range readers {
		wg.Go(func() {
			i := seq.Start()
			<-start
			for range per {
				if _, err := g.Get(ctx, seq.Keys[i&seq.Mask]); err != nil {
					errs[r] = err
					return
				}
				i++
			}
		})
	}
	runtime.GC() // the fill's garbage is not the hit path's
	t := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(wall.Nanoseconds()) / float64(per*readers), nil
}

// Remover is a cache that can drop one key, so that it is cold again.
type Remover interface {
	Remove(key string)
}

// Remove drops key (Query.Remove).
func (g *QcacheGetter) Remove(key string) { g.Q.Remove(key) }

// Remove drops key (Cache.Invalidate).
func (g *OtterGetter) Remove(key string) { g.C.Invalidate(key) }

// Remove drops key (Client.Delete).
func (g *SturdycGetter) Remove(key string) { g.C.Delete(key) }

// Remove drops key (sync.Map.Delete).
func (s *SFMapCache) Remove(key string) { s.M.Delete(key) }

// MissCost measures, one caller at a time, a Get of a cold key whose fetch
// answers at once, and the bare call of that fetch on the same keys: in
// each of batches rounds, every key of cold is missed once (timed), then
// removed again (not timed), so that the cache keeps its size. It returns
// ns per miss and ns per bare call; their difference is the miss overhead.
func MissCost(ctx context.Context, g Getter, fetch Fetcher, cold []string, batches int) (missNs, callNs float64, err error) {
	rm, ok := g.(Remover)
	if !ok {
		return 0, 0, fmt.Errorf("%T cannot remove a key", g)
	}
	var miss, call time.Duration
	for range batches {
		t := time.Now()
		for _, k := range cold {
			if _, err := g.Get(ctx, k); err != nil {
				return 0, 0, err
			}
		}
		miss += time.Since(t)
		for _, k := range cold {
			rm.Remove(k)
		}
		t = time.Now()
		for _, k := range cold {
			if _, err := fetch(ctx, k); err != nil {
				return 0, 0, err
			}
		}
		call += time.Since(t)
	}
	ops := float64(len(cold) * batches)
	return float64(miss.Nanoseconds()) / ops, float64(call.Nanoseconds()) / ops, nil
}

// gcPauses is the runtime/metrics histogram of GC stop-the-world pauses;
// it is the same as the deprecated /gc/pauses:seconds.
const gcPauses = "/sched/pauses/total/gc:seconds"

// GCPauses runs GOMAXPROCS-1 readers (at least one) of seq's keys from g,
// as ParallelHits, and while they run forces gcs full collections; the P
// left free runs the collector, as on a server that is busy but not
// saturated (with every P reading, the scheduler's time slices, not the
// cache, set how long a collection takes). It forces at least gcs and
// more, up to maxGCs, until minTime has passed. It returns the 99th percentile
// of the GC pauses in that time (ns, from the runtime/metrics histogram:
// the upper bound of the bucket that holds it), how many pauses there were,
// and the mean wall time of one collection (ns), which grows with the
// pointers the cache holds.
func GCPauses(ctx context.Context, g Getter, seq *Sequence, gcs, maxGCs int, minTime time.Duration) (p99 float64, pauses int, cycleNs float64, err error) {
	readers := max(1, runtime.GOMAXPROCS(0)-1)
	var (
		stop = make(chan struct{})
		wg   sync.WaitGroup
		errs = make([]error, readers)
	)
	for r := range readers {
		wg.Go(func() {
			i := seq.Start()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 256 {
					if _, err := g.Get(ctx, seq.Keys[i&seq.Mask]); err != nil {
						errs[r] = err
						return
					}
					i++
				}
			}
		})
	}
	// Two samples: Read may reuse a histogram's memory.
	before, after := []metrics.Sample{{Name: gcPauses}}, []metrics.Sample{{Name: gcPauses}}
	metrics.Read(before)
	t := time.Now()
	forced := 0
	for forced < gcs || (forced < maxGCs && time.Since(t) < minTime) {
		runtime.GC()
		forced++
	}
	cycle := time.Since(t)
	metrics.Read(after)
	close(stop)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, 0, 0, err
		}
	}
	q, count := histogramQuantile(before[0].Value.Float64Histogram(), after[0].Value.Float64Histogram(), 0.99)
	return q * 1e9, count, float64(cycle.Nanoseconds()) / float64(forced), nil
}

// histogramQuantile returns the q-quantile of the samples that after holds
// beyond before (two reads of one cumulative histogram), as the upper
// bound of the bucket it falls in, and the number of those samples. An
// unbounded last bucket gives its lower bound.
func histogramQuantile(before, after *metrics.Float64Histogram, q float64) (float64, int) {
	total := uint64(0)
	diff := make([]uint64, len(after.Counts))
	for i, c := range after.Counts {
		diff[i] = c - before.Counts[i]
		total += diff[i]
	}
	if total == 0 {
		return 0, 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	seen := uint64(0)
	for i, c := range diff {
		seen += c
		if seen >= rank {
			if hi := after.Buckets[i+1]; !math.IsInf(hi, 1) {
				return hi, int(total)
			}
			return after.Buckets[i], int(total)
		}
	}
	return after.Buckets[len(after.Buckets)-1], int(total)
}

// InvalidateCost fills lib's cache with n entries in 100 groups (W5's
// setting) and ends the freshness of one group (1%) per op, the group
// restored outside the timing, for at least ops ops and at least minTime
// of them; it returns ns per op.
func InvalidateCost(ctx context.Context, lib string, n, ops int, minTime time.Duration) (float64, error) {
	const groups = 100
	per := max(1, n/groups)
	gcOff := debug.SetGCPercent(-1) // saves the fill's collections
	p := NewPrefix(lib, groups, per)
	debug.SetGCPercent(gcOff)
	defer p.Close()
	// One untimed round first, for every library alike: qcache builds a
	// query's key index on its first match by key (a one-time pass over
	// the query's entries, reported apart as the index build), and the
	// curve is the steady cost of an invalidation.
	if _, err := p.Invalidate(ctx, groups-1); err != nil {
		return 0, err
	}
	p.Restore(groups - 1)
	var spent time.Duration
	done := 0
	for done < ops || spent < minTime {
		group := done % groups
		t := time.Now()
		hit, err := p.Invalidate(ctx, group)
		spent += time.Since(t)
		if err != nil || hit != per {
			return 0, fmt.Errorf("%s: invalidate group %d: %d entries, %v", lib, group, hit, err)
		}
		p.Restore(group)
		done++
	}
	return float64(spent.Nanoseconds()) / float64(done), nil
}
