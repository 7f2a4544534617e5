package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/qcache-go/qcache"
	"github.com/viccon/sturdyc"
	"golang.org/x/sync/singleflight"
)

// The libraries, as named in benchmark names and in the table. Limit is the
// bare sync.Map.Load, which only takes part in W1.
const (
	Qcache  = "qcache"
	Otter   = "otter"
	Sturdyc = "sturdyc"
	SFMap   = "sfmap" // singleflight + sync.Map, as teams write it themselves
	Limit   = "syncmap"
)

// Libs are the caches compared in every workload that they can run.
var Libs = []string{Qcache, Otter, Sturdyc, SFMap}

// TTL is the expiry given to the libraries that need one; qcache gets
// StaleTime(qcache.Forever) and sfmap has none, so no entry turns stale
// during a run.
const TTL = time.Hour

// Fetcher is the data source every cache sits in front of.
type Fetcher func(ctx context.Context, key string) (string, error)

// Getter is the one call every library answers: the value of key, from
// memory or from the fetcher, with concurrent misses of one key sharing one
// fetch. It is used where a call through an interface does not matter (W2,
// W3, tests); W1 calls each library directly.
type Getter interface {
	Get(ctx context.Context, key string) (string, error)
	Close()
}

// NewGetter returns lib's cache in front of fetch, configured as in every
// workload.
func NewGetter(lib string, fetch Fetcher) Getter {
	switch lib {
	case Qcache:
		return NewQcache(fetch)
	case Otter:
		return NewOtter(fetch)
	case Sturdyc:
		return NewSturdyc(fetch)
	case SFMap:
		return NewSFMapCache(fetch)
	}
	panic(fmt.Sprintf("bench: unknown library %q", lib))
}

// QcacheGetter is a qcache Query made with NewQueryFunc and
// StaleTime(Forever), with the client's defaults otherwise.
type QcacheGetter struct {
	C *qcache.Client
	Q *qcache.Query[string, string]
}

// NewQcache returns a QcacheGetter; opts are added to StaleTime(Forever).
func NewQcache(fetch Fetcher, opts ...qcache.QueryOption) *QcacheGetter {
	c := qcache.NewClient()
	opts = append([]qcache.QueryOption{qcache.StaleTime(qcache.Forever)}, opts...)
	return &QcacheGetter{C: c, Q: qcache.NewQueryFunc(c, qcache.Key{"items"}, fetch, opts...)}
}

func (g *QcacheGetter) Get(ctx context.Context, key string) (string, error) {
	return g.Q.Get(ctx, key)
}

func (g *QcacheGetter) Close() { g.C.Close() }

// OtterGetter is an unbounded otter cache with an expiry of TTL after
// writing, read with Get and a loader.
type OtterGetter struct {
	C *otter.Cache[string, string]
	L otter.Loader[string, string]
}

// NewOtter returns an OtterGetter.
func NewOtter(fetch Fetcher) *OtterGetter {
	c := otter.Must(&otter.Options[string, string]{
		ExpiryCalculator: otter.ExpiryWriting[string, string](TTL),
	})
	return &OtterGetter{C: c, L: otter.LoaderFunc[string, string](fetch)}
}

func (g *OtterGetter) Get(ctx context.Context, key string) (string, error) {
	return g.C.Get(ctx, key, g.L)
}

func (g *OtterGetter) Close() { g.C.StopAllGoroutines() }

// SturdycGetter is a sturdyc client of capacity 1<<18 (more with
// NewSturdycFor) in 64 shards with a TTL, read with GetOrFetch. Its
// eviction goroutine never ends (sturdyc has no Close).
type SturdycGetter struct {
	C     *sturdyc.Client[string]
	fetch Fetcher
}

// NewSturdyc returns a SturdycGetter.
func NewSturdyc(fetch Fetcher) *SturdycGetter { return NewSturdycFor(fetch, 0) }

// NewSturdycFor returns a SturdycGetter with room for n entries
// (SturdycCapacity).
func NewSturdycFor(fetch Fetcher, n int) *SturdycGetter {
	return &SturdycGetter{C: sturdyc.New[string](SturdycCapacity(n), 64, TTL, 10), fetch: fetch}
}

func (g *SturdycGetter) Get(ctx context.Context, key string) (string, error) {
	// A closure per call, as sturdyc's FetchFn takes no key: this is how
	// its users call it.
	return g.C.GetOrFetch(ctx, key, func(ctx context.Context) (string, error) {
		return g.fetch(ctx, key)
	})
}

func (g *SturdycGetter) Close() {}

// SFMapCache is the cache teams write themselves: a sync.Map in front of a
// singleflight.Group, which looks again inside the shared call so that a
// caller that missed just before the value landed does not fetch again. It
// never expires entries, as qcache's StaleTime(Forever).
type SFMapCache struct {
	M     sync.Map // string → string
	g     singleflight.Group
	fetch Fetcher
}

// NewSFMapCache returns an SFMapCache.
func NewSFMapCache(fetch Fetcher) *SFMapCache { return &SFMapCache{fetch: fetch} }

func (s *SFMapCache) Get(ctx context.Context, key string) (string, error) {
	if v, ok := s.M.Load(key); ok {
		return v.(string), nil
	}
	v, err, _ := s.g.Do(key, func() (any, error) {
		if v, ok := s.M.Load(key); ok {
			return v, nil
		}
		v, err := s.fetch(ctx, key)
		if err != nil {
			return nil, err
		}
		s.M.Store(key, v)
		return v, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func (s *SFMapCache) Close() {}
