package redisbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/redisbus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstream is the API every replica reads: it records when each key was
// requested.
type upstream struct {
	t0    time.Time
	delay time.Duration
	mu    sync.Mutex
	reqs  map[string][]time.Duration
	total atomic.Int64
}

func newUpstream(delay time.Duration) *upstream {
	return &upstream{t0: time.Now(), delay: delay, reqs: map[string][]time.Duration{}}
}

func (u *upstream) fetch(ctx context.Context, k string) (string, error) {
	u.mu.Lock()
	u.reqs[k] = append(u.reqs[k], time.Since(u.t0))
	n := len(u.reqs[k])
	u.mu.Unlock()
	u.total.Add(1)
	if u.delay > 0 {
		time.Sleep(u.delay)
	}
	return fmt.Sprintf("%s#%d", k, n), nil
}

func (u *upstream) count(k string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs[k])
}

// storeReplica is one replica with a shared store (and, optionally, a bus).
type storeReplica struct {
	rdb   *redis.Client
	store *redisbus.Store
	c     *qcache.Client
	q     *qcache.Query[string, string]
}

func newStoreReplica(t *testing.T, srv *redisServer, u *upstream, shared bool, withBus string,
	sopts []redisbus.StoreOption, qopts ...qcache.QueryOption) *storeReplica {
	t.Helper()
	r := &storeReplica{}
	r.rdb = redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialTimeout: time.Second, PoolSize: 64})
	var copts []qcache.ClientOption
	if shared {
		r.store = redisbus.NewStore(r.rdb, append([]redisbus.StoreOption{redisbus.StorePrefix(t.Name() + ":")}, sopts...)...)
		copts = append(copts, qcache.WithSharedStore(r.store))
	}
	var bus *redisbus.Bus
	if withBus != "" {
		bus = redisbus.New(r.rdb, redisbus.Channel(t.Name()), redisbus.Reconnect(20*time.Millisecond, 200*time.Millisecond))
		copts = append(copts, qcache.WithBus(bus, qcache.BusOrigin(withBus)))
	}
	r.c = qcache.NewClient(copts...)
	t.Cleanup(func() {
		r.c.Close()
		if r.store != nil {
			r.store.Close()
		}
		r.rdb.Close()
	})
	r.q = qcache.NewQueryFunc(r.c, qcache.Key{"items"}, u.fetch, qopts...)
	if bus != nil {
		eventually(t, func() bool { return bus.Stats().Subscribes == 1 }, withBus+" subscribed")
	}
	return r
}

// TestStoreOneUpstreamRequestPerKeyPerStaleWindow is the figure of the
// shared tier: three replicas, 1,000 keys, every replica's observer of every
// key polling at StaleTime.
//
// A stale window of a key is one generation of its data, and the requests
// of a key are grouped into generations: a request of generation g comes
// once the data of generation g-1 is StaleTime old, at least StaleTime
// after the first request of g-1, while the requests of one generation (one
// per replica without the shared tier) come within milliseconds of each
// other (seconds at worst, on a loaded machine: StaleTime is 4 s). So a
// request more than StaleTime/2 after the first of the current
// generation starts the next one, and the count per generation is exact: 1
// with the shared tier, 3 without. (Wall-clock windows would not be: a
// machine that stalls for a second shifts a generation across a window's
// edge.)
func TestStoreOneUpstreamRequestPerKeyPerStaleWindow(t *testing.T) {
	srv := startRedis(t)
	keys := 1000
	if testing.Short() {
		keys = 100
	}
	const stale, windows = 4 * time.Second, 3
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			u := newUpstream(2 * time.Millisecond)
			var rs []*storeReplica
			for range 3 {
				rs = append(rs, newStoreReplica(t, srv, u, shared, "", nil, qcache.StaleTime(stale)))
			}
			ctx := t.Context()
			var obs []*qcache.Observer[string]
			u.t0 = time.Now()
			for k := range keys {
				for _, r := range rs {
					obs = append(obs, r.q.Use(ctx, fmt.Sprint(k), qcache.RefetchInterval(stale)))
				}
			}
			var lastFirst time.Duration
			eventually(t, func() bool {
				u.mu.Lock()
				defer u.mu.Unlock()
				for k := range keys {
					r := u.reqs[fmt.Sprint(k)]
					if len(r) == 0 {
						return false
					}
					lastFirst = max(lastFirst, r[0])
				}
				return true
			}, "every key fetched once")
			time.Sleep(lastFirst + windows*stale + stale/2 - time.Since(u.t0))
			for _, o := range obs {
				o.Close()
			}
			want := 1
			if !shared {
				want = len(rs)
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			total := 0
			for k := range keys {
				reqs := slices.Clone(u.reqs[fmt.Sprint(k)])
				slices.Sort(reqs)
				var gens []int // requests per generation
				var genStart time.Duration
				for _, at := range reqs {
					if len(gens) == 0 || at-genStart > stale/2 {
						gens, genStart = append(gens, 0), at
					}
					gens[len(gens)-1]++
				}
				if !assert.GreaterOrEqual(t, len(gens), windows, "key %d: requests at %v", k, reqs) {
					return
				}
				for g, n := range gens[:windows] {
					total += n
					if !assert.Equal(t, want, n, "key %d, generation %d: requests at %v", k, g, reqs) {
						return
					}
				}
			}
			ratio := float64(total) / float64(keys*windows)
			t.Logf("shared tier %v: %d replicas, %d keys, %d stale windows of %v (first fetches over %v): %d upstream requests = %.2f per key per stale window",
				shared, len(rs), keys, windows, stale, lastFirst.Round(time.Millisecond), total, ratio)
			if shared {
				var st qcache.SharedStats
				for _, r := range rs {
					s := r.c.SharedStats()
					st.Hits += s.Hits
					st.Misses += s.Misses
					st.Waits += s.Waits
					st.Errors += s.Errors
					st.Fallbacks += s.Fallbacks
				}
				t.Logf("shared stats, summed over the replicas: hits %d, misses %d, waits %d, errors %d, fallbacks %d",
					st.Hits, st.Misses, st.Waits, st.Errors, st.Fallbacks)
				assert.Zero(t, st.Errors)
				assert.Zero(t, st.Fallbacks)
			}
		})
	}
}

// TestStoreSurvivesRedisRestart kills redis-server (SIGKILL) while three
// replicas poll and answer Gets, and starts it again on the same port:
// Get never fails (the upstream never does), every answer is the key's,
// the replicas fetch upstream while Redis is down, and sharing resumes.
func TestStoreSurvivesRedisRestart(t *testing.T) {
	srv := startRedis(t)
	u := newUpstream(time.Millisecond)
	const stale = 300 * time.Millisecond
	var rs []*storeReplica
	for range 3 {
		rs = append(rs, newStoreReplica(t, srv, u, true, "", nil, qcache.StaleTime(stale)))
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const keys = 50
	var wg sync.WaitGroup
	var gets, bad atomic.Int64
	for i, r := range rs {
		for k := range keys {
			o := r.q.Use(ctx, fmt.Sprint(k), qcache.RefetchInterval(stale))
			defer o.Close()
		}
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				k := fmt.Sprint((n + i) % keys)
				v, err := r.q.Get(ctx, k)
				if ctx.Err() != nil {
					return
				}
				gets.Add(1)
				if err != nil || !strings.HasPrefix(v, k+"#") {
					bad.Add(1)
					t.Errorf("Get(%s) = %q, %v", k, v, err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	hits := func() uint64 {
		var n uint64
		for _, r := range rs {
			n += r.c.SharedStats().Hits
		}
		return n
	}
	eventually(t, func() bool { return hits() > keys }, "sharing")

	srv.kill()
	for _, r := range rs {
		eventually(t, func() bool { return r.c.SharedStats().Fallbacks > 0 }, "fell back")
	}
	before := u.total.Load()
	time.Sleep(3 * stale)
	assert.Greater(t, u.total.Load(), before, "upstream fetched while Redis is down")
	srv.start()

	after := make([]uint64, len(rs))
	for i, r := range rs {
		after[i] = r.c.SharedStats().Hits
	}
	for i, r := range rs {
		eventually(t, func() bool { return r.c.SharedStats().Hits > after[i]+keys/2 }, "sharing resumed")
	}
	cancel()
	wg.Wait()
	assert.Zero(t, bad.Load())
	var st qcache.SharedStats
	for _, r := range rs {
		s := r.c.SharedStats()
		st.Errors += s.Errors
		st.Fallbacks += s.Fallbacks
		st.Hits += s.Hits
	}
	t.Logf("%d Gets, none failed; shared stats summed: errors %d, fallbacks %d, hits %d", gets.Load(), st.Errors, st.Fallbacks, st.Hits)
	// The leases of the fetches in flight at the kill went with Redis (no
	// persistence): the first fetch of each key after the restart takes a
	// new one at once.
	keysLeft, err := rs[0].rdb.Keys(context.Background(), t.Name()+":l:*").Result()
	require.NoError(t, err)
	assert.LessOrEqual(t, len(keysLeft), keys, "only leases of fetches in flight")
}

func TestStoreCorruptValueIsCountedDeletedAndRefetched(t *testing.T) {
	srv := startRedis(t)
	u := newUpstream(0)
	a := newStoreReplica(t, srv, u, true, "", nil, qcache.StaleTime(time.Hour))
	ctx := t.Context()
	now := time.Now().UnixNano()
	for i, garbage := range []string{"garbage", fmt.Sprintf("qc1 1 %d d\n{not json", now), fmt.Sprintf("qc1 1 %d d\n42", now)} {
		k := fmt.Sprint(i)
		vk := a.store.ValueKey(a.q.Key(k))
		require.NoError(t, a.rdb.Set(ctx, vk, garbage, time.Hour).Err())
		v, err := a.q.Get(ctx, k)
		require.NoError(t, err)
		assert.Equal(t, k+"#1", v)
		assert.Equal(t, uint64(i+1), a.c.SharedStats().Corrupt)
		eventually(t, func() bool {
			raw, err := a.rdb.Get(ctx, vk).Result()
			return err == nil && strings.HasSuffix(raw, "\n\""+k+"#1\"")
		}, "refetched and written back over it")
	}
	assert.Zero(t, a.c.SharedStats().Errors)
}

func TestStoreMaxValueBytes(t *testing.T) {
	srv := startRedis(t)
	u := newUpstream(50 * time.Millisecond)
	small := []redisbus.StoreOption{redisbus.StoreMaxValueBytes(8)}
	a := newStoreReplica(t, srv, u, true, "", small, qcache.StaleTime(time.Hour))
	b := newStoreReplica(t, srv, u, true, "", small, qcache.StaleTime(time.Hour))
	ctx := t.Context()
	_, err := a.q.Get(ctx, "a-long-key") // "a-long-key#1" is 14 bytes of JSON
	require.NoError(t, err)
	eventually(t, func() bool { return a.c.SharedStats().Skipped == 1 }, "not shared")
	raw, err := a.rdb.Get(ctx, a.store.ValueKey(a.q.Key("a-long-key"))).Result()
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(raw, " L\n"), "only a too-large mark is stored: %q", raw)
	start := time.Now()
	v, err := b.q.Get(ctx, "a-long-key")
	require.NoError(t, err)
	assert.Equal(t, "a-long-key#2", v, "B fetched it itself")
	assert.Less(t, time.Since(start), time.Second, "without waiting for a lease")
	assert.Zero(t, b.c.SharedStats().Waits)
	// A small one is shared.
	_, err = a.q.Get(ctx, "k")
	require.NoError(t, err)
	eventually(t, func() bool { return a.c.SharedStats().Writes == 1 }, "written")
	v, err = b.q.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, "k#1", v)
}

// TestStoreLeaseOfADeadReplicaExpires: a replica took a key's lease and
// died; the others wait for the lease to run out, not forever, and then
// fetch.
func TestStoreLeaseOfADeadReplicaExpires(t *testing.T) {
	srv := startRedis(t)
	u := newUpstream(0)
	ttl := []redisbus.StoreOption{redisbus.StoreLeaseTTL(700 * time.Millisecond)}
	a := newStoreReplica(t, srv, u, true, "", ttl, qcache.StaleTime(time.Hour))
	b := newStoreReplica(t, srv, u, true, "", ttl, qcache.StaleTime(time.Hour))
	ctx := t.Context()
	token, _, err := a.store.TryLease(ctx, a.q.Key("1"))
	require.NoError(t, err)
	require.NotEmpty(t, token)
	a.c.Close() // the leader is gone without releasing
	start := time.Now()
	v, err := b.q.Get(ctx, "1")
	require.NoError(t, err)
	elapsed := time.Since(start)
	assert.Equal(t, "1#1", v)
	assert.Greater(t, elapsed, 500*time.Millisecond, "waited for the lease")
	assert.Less(t, elapsed, 5*time.Second, "and no longer than it")
	assert.Equal(t, uint64(1), b.c.SharedStats().Waits)
	assert.Equal(t, uint64(1), b.c.SharedStats().Misses)
	t.Logf("waited %v for a dead replica's lease of 700ms", elapsed.Round(time.Millisecond))
}

// TestStoreInvalidationThroughTheBus: A invalidates; the bus makes B and C
// refetch their observed entries; the shared value is stale for both, and
// their refetches share one upstream request.
func TestStoreInvalidationThroughTheBus(t *testing.T) {
	srv := startRedis(t)
	u := newUpstream(20 * time.Millisecond)
	a := newStoreReplica(t, srv, u, true, "A", nil, qcache.StaleTime(time.Hour))
	b := newStoreReplica(t, srv, u, true, "B", nil, qcache.StaleTime(time.Hour))
	c := newStoreReplica(t, srv, u, true, "C", nil, qcache.StaleTime(time.Hour))
	ctx := t.Context()
	ob, oc := b.q.Use(ctx, "1"), c.q.Use(ctx, "1")
	defer ob.Close()
	defer oc.Close()
	eventually(t, func() bool { return ob.State().HasData && oc.State().HasData }, "mounted")
	require.Equal(t, 1, u.count("1"), "one upstream request for both")
	_, err := a.q.Get(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, 1, u.count("1"), "A too read it from the shared tier")

	require.NoError(t, a.c.Invalidate(ctx, qcache.Filter{Key: qcache.Key{"items"}}))
	eventually(t, func() bool { return ob.State().Data == "1#2" && oc.State().Data == "1#2" }, "B and C refetched")
	assert.Equal(t, 2, u.count("1"), "B's and C's refetches shared one request")
	v, err := a.q.Get(ctx, "1")
	require.NoError(t, err)
	assert.Equal(t, "1#2", v, "A's own entry is invalidated; it reads the new value")
	assert.Equal(t, 2, u.count("1"))

	// SetData writes through: a replica without the entry reads it.
	a.q.SetData("2", "pushed")
	d := newStoreReplica(t, srv, u, true, "", nil, qcache.StaleTime(time.Hour))
	v, err = d.q.Get(ctx, "2")
	require.NoError(t, err)
	assert.Equal(t, "pushed", v)
	assert.Zero(t, u.count("2"))
}

// TestStoreLatencyAndMemory prints the added latency of a shared-tier hit
// against an upstream fetch over HTTP on loopback, and the memory of one
// shared entry in Redis. go test -run LatencyAndMemory -v prints them.
func TestStoreLatencyAndMemory(t *testing.T) {
	srv := startRedis(t)
	type user struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/users/")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%s,"name":"User %s","email":"user%s@example.com"}`, id, id, id)
	}))
	defer api.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer rdb.Close()
	const n = 1000
	newClient := func(shared bool) (*qcache.Client, *qcache.Query[int, user], *redisbus.Store) {
		var opts []qcache.ClientOption
		var store *redisbus.Store
		if shared {
			store = redisbus.NewStore(rdb, redisbus.StorePrefix(t.Name()+":"))
			t.Cleanup(func() { store.Close() })
			opts = append(opts, qcache.WithSharedStore(store))
		}
		c := qcache.NewClient(append(opts, qcache.WithBaseURL(api.URL))...)
		t.Cleanup(func() { c.Close() })
		return c, qcache.NewQuery[int, user](c, qcache.Endpoint{URL: "/users/$id"}, qcache.StaleTime(time.Hour)), store
	}
	measure := func(q *qcache.Query[int, user]) []time.Duration {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			_, err := q.Get(t.Context(), i)
			lat = append(lat, time.Since(start))
			require.NoError(t, err)
		}
		slices.Sort(lat)
		return lat
	}
	// The writer fills the shared tier; a second replica then reads every
	// key from it; a third client without the tier fetches every key.
	cw, qw, store := newClient(true)
	_ = measure(qw)
	eventually(t, func() bool { return cw.SharedStats().Writes == n }, "written")
	cr, qr, _ := newClient(true)
	hit := measure(qr)
	require.Equal(t, uint64(n), cr.SharedStats().Hits)
	_, qu, _ := newClient(false)
	up := measure(qu)
	t.Logf("Get of a key this replica does not hold, %d keys, loopback: shared-tier hit median %v p99 %v; upstream HTTP fetch median %v p99 %v",
		n, hit[n/2].Round(time.Microsecond), hit[n*99/100].Round(time.Microsecond),
		up[n/2].Round(time.Microsecond), up[n*99/100].Round(time.Microsecond))

	vk := store.ValueKey(qr.Key(42))
	raw, err := rdb.Get(t.Context(), vk).Result()
	require.NoError(t, err)
	mem, err := rdb.MemoryUsage(t.Context(), vk).Result()
	require.NoError(t, err)
	var u user
	_, body, _ := strings.Cut(raw, "\n")
	require.NoError(t, json.Unmarshal([]byte(body), &u))
	t.Logf("one shared entry: key %q (%d bytes), value %d bytes (%d of JSON): MEMORY USAGE %d bytes",
		vk, len(vk), len(raw), len(body), mem)
	assert.Less(t, mem, int64(512))
}
