package qcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memStore is a SharedStore in memory, with the versions, leases and
// wake-ups the contract asks for, for the client's side of the shared tier
// in virtual time.
type memStore struct {
	mu       sync.Mutex
	version  uint64
	values   map[string]memValue
	marks    map[string]uint64 // "p" + prefix or "x" + key → version of the last Invalidate
	leases   map[string]memLease
	wake     map[string]chan struct{}
	leaseTTL time.Duration
	maxBytes int
	fail     atomic.Bool // every call fails
	calls    atomic.Int64
	tokens   int
}

type memValue struct {
	v        SharedValue
	tooLarge bool
	corrupt  bool
	expires  time.Time
}

type memLease struct {
	token   string
	expires time.Time
}

var errStoreDown = errors.New("store down")

func newMemStore() *memStore {
	return &memStore{version: 1, values: map[string]memValue{}, marks: map[string]uint64{},
		leases: map[string]memLease{}, wake: map[string]chan struct{}{}, leaseTTL: 10 * time.Second}
}

func keyID(k Key) string {
	if k == nil {
		k = Key{}
	}
	b, _ := json.Marshal([]string(k))
	return string(b)
}

func (s *memStore) check() error {
	s.calls.Add(1)
	if s.fail.Load() {
		return errStoreDown
	}
	return nil
}

func (s *memStore) wakeLocked(id string) {
	if ch, ok := s.wake[id]; ok {
		close(ch)
		delete(s.wake, id)
	}
}

func (s *memStore) Load(ctx context.Context, key Key) (SharedLookup, error) {
	if err := s.check(); err != nil {
		return SharedLookup{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := SharedLookup{Version: s.version}
	mv, ok := s.values[keyID(key)]
	if !ok || !time.Now().Before(mv.expires) {
		return out, nil
	}
	switch {
	case mv.corrupt:
		out.Corrupt = true
		return out, nil
	case mv.tooLarge:
		out.TooLarge, out.Value.DataUpdatedAt = true, mv.v.DataUpdatedAt
		return out, nil
	}
	out.Value, out.Found = mv.v, true
	mark := s.marks["x"+keyID(key)]
	for i := 0; i <= len(key); i++ {
		mark = max(mark, s.marks["p"+keyID(key[:i])])
	}
	out.Invalidated = mark > mv.v.Version
	return out, nil
}

func (s *memStore) Store(ctx context.Context, key Key, v SharedValue, ttl time.Duration) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := keyID(key)
	defer s.wakeLocked(id)
	if ttl > time.Hour {
		ttl = time.Hour
	}
	if s.maxBytes > 0 && len(v.Data) > s.maxBytes {
		s.values[id] = memValue{v: SharedValue{DataUpdatedAt: v.DataUpdatedAt}, tooLarge: true, expires: time.Now().Add(ttl)}
		return fmt.Errorf("mem: %d bytes: %w", len(v.Data), ErrSharedValueTooLarge)
	}
	if v.Version == 0 {
		s.version++
		v.Version = s.version
		s.marks["x"+id] = s.version
	}
	v.Data = bytes.Clone(v.Data)
	s.values[id] = memValue{v: v, expires: time.Now().Add(ttl)}
	return nil
}

func (s *memStore) Delete(ctx context.Context, key Key) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.values, keyID(key))
	return nil
}

func (s *memStore) Invalidate(ctx context.Context, prefix Key, exact bool) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	if exact {
		s.marks["x"+keyID(prefix)] = s.version
	} else {
		s.marks["p"+keyID(prefix)] = s.version
	}
	return nil
}

func (s *memStore) TryLease(ctx context.Context, key Key) (string, time.Duration, error) {
	if err := s.check(); err != nil {
		return "", 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := keyID(key)
	now := time.Now()
	if l, ok := s.leases[id]; ok && now.Before(l.expires) {
		return "", l.expires.Sub(now), nil
	}
	s.tokens++
	token := fmt.Sprint("t", s.tokens)
	s.leases[id] = memLease{token: token, expires: now.Add(s.leaseTTL)}
	return token, 0, nil
}

func (s *memStore) Release(ctx context.Context, key Key, token string) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := keyID(key)
	if l, ok := s.leases[id]; ok && l.token == token {
		delete(s.leases, id)
		s.wakeLocked(id)
	}
	return nil
}

func (s *memStore) Watch(key Key) (func(context.Context, time.Duration), func()) {
	s.mu.Lock()
	id := keyID(key)
	ch, ok := s.wake[id]
	if !ok {
		ch = make(chan struct{})
		s.wake[id] = ch
	}
	s.mu.Unlock()
	wait := func(ctx context.Context, d time.Duration) {
		elapsed := make(chan struct{})
		t := time.AfterFunc(d, func() { close(elapsed) })
		defer t.Stop()
		select {
		case <-ch:
		case <-elapsed:
		case <-ctx.Done():
		}
	}
	return wait, func() {}
}

// put stores raw data for key as a fetch stamped with the current version.
func (s *memStore) put(key Key, data string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[keyID(key)] = memValue{v: SharedValue{Data: []byte(data), DataUpdatedAt: at, Version: s.version},
		expires: time.Now().Add(time.Hour)}
}

func (s *memStore) has(key Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.values[keyID(key)]
	return ok
}

// replicas makes n clients on one store, each with a query over src; the
// upstream is shared, as replicas of one service share their API.
func replicas(t *testing.T, n int, store SharedStore, src *source, opts ...QueryOption) ([]*Client, []*Query[string, string]) {
	t.Helper()
	var cs []*Client
	var qs []*Query[string, string]
	for range n {
		c := NewClient(WithSharedStore(store))
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
		qs = append(qs, NewQueryFunc(c, Key{"items"}, src.fetch, opts...))
	}
	return cs, qs
}

func TestSharedFreshValueKeepsItsAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(100 * time.Millisecond))
		cs, qs := replicas(t, 2, store, src, StaleTime(10*time.Second))
		v, err := qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v1:1", v)
		landed := qs[0].State("1").DataUpdatedAt

		time.Sleep(4 * time.Second)
		v, err = qs[1].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v1:1", v, "B answered from the shared tier")
		assert.Equal(t, 1, src.count(), "no upstream request for B")
		s := qs[1].State("1")
		assert.Equal(t, landed, s.DataUpdatedAt, "the original DataUpdatedAt")
		assert.False(t, s.IsStale)
		assert.Equal(t, uint64(1), cs[1].SharedStats().Hits)

		// B's copy turns stale when A's does: 10 s after it was fetched.
		time.Sleep(6*time.Second - time.Nanosecond)
		synctest.Wait()
		assert.False(t, qs[1].State("1").IsStale)
		_, hit := qs[1].entries.readOnly().m["1"].hit()
		assert.True(t, hit, "the hit path still answers")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.True(t, qs[1].State("1").IsStale)
		_, hit = qs[1].entries.readOnly().m["1"].hit()
		assert.False(t, hit, "the stale timer counted from the original DataUpdatedAt")

		// The shared value is stale too: B fetches upstream and writes back.
		v, err = qs[1].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v2:1", v)
		assert.Equal(t, 2, src.count())
		synctest.Wait() // the write-back follows the answer
		assert.Equal(t, uint64(1), cs[1].SharedStats().Misses)
		assert.Equal(t, uint64(2), cs[0].SharedStats().Writes+cs[1].SharedStats().Writes)
	})
}

func TestSharedSingleFlightAcrossReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		cs, qs := replicas(t, 3, store, src, StaleTime(10*time.Second))
		start := time.Now()
		var wg sync.WaitGroup
		got := make([]string, 3)
		for i, q := range qs {
			wg.Go(func() {
				v, err := q.Get(t.Context(), "1")
				assert.NoError(t, err)
				got[i] = v
			})
		}
		wg.Wait()
		assert.Equal(t, []string{"v1:1", "v1:1", "v1:1"}, got)
		assert.Equal(t, 1, src.count(), "one upstream request for three replicas")
		assert.Equal(t, time.Second, time.Since(start), "the waiters were woken when the value landed")
		var hits, waits, misses uint64
		for _, c := range cs {
			s := c.SharedStats()
			hits, waits, misses = hits+s.Hits, waits+s.Waits, misses+s.Misses
		}
		assert.Equal(t, uint64(2), hits)
		assert.Equal(t, uint64(2), waits)
		assert.Equal(t, uint64(1), misses)
	})
}

// StaleTime 0: nothing is fresh in the shared tier, but replicas that
// asked while one fetched share its answer, as callers of one client share
// a fetch in flight.
func TestSharedStaleTimeZeroSharesTheFetchInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		_, qs := replicas(t, 2, store, src)
		_, err := qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		synctest.Wait() // written back, lease released
		var wg sync.WaitGroup
		for _, q := range qs {
			wg.Go(func() {
				v, err := q.Get(t.Context(), "1")
				assert.NoError(t, err)
				assert.Equal(t, "v2:1", v)
			})
		}
		wg.Wait()
		assert.Equal(t, 2, src.count())
	})
}

func TestSharedDeadLeaderDoesNotBlockForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(100 * time.Millisecond))
		cs, qs := replicas(t, 1, store, src, StaleTime(10*time.Second))
		// A replica took the lease and died.
		token, _, err := store.TryLease(t.Context(), Key{"items", "1"})
		require.NoError(t, err)
		require.NotEmpty(t, token)
		time.Sleep(3 * time.Second)
		start := time.Now()
		v, err := qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v1:1", v)
		assert.Equal(t, 7*time.Second+100*time.Millisecond, time.Since(start),
			"waited for the rest of the dead lease, then fetched")
		synctest.Wait()
		s := cs[0].SharedStats()
		assert.Equal(t, uint64(1), s.Waits)
		assert.Equal(t, uint64(1), s.Misses, "took the expired lease and fetched")
		assert.True(t, store.has(Key{"items", "1"}), "and wrote back")
	})
}

func TestSharedWaiterWhoseLeaseWasTakenFetchesItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(100 * time.Millisecond))
		cs, qs := replicas(t, 1, store, src, StaleTime(10*time.Second))
		key := Key{"items", "1"}
		_, _, err := store.TryLease(t.Context(), key)
		require.NoError(t, err)
		// Another dead replica holds the lease from just before the first ends.
		time.AfterFunc(10*time.Second-time.Millisecond, func() {
			store.mu.Lock()
			store.leases[keyID(key)] = memLease{token: "other", expires: time.Now().Add(10 * time.Second)}
			store.mu.Unlock()
		})
		start := time.Now()
		_, err = qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, 10*time.Second+100*time.Millisecond, time.Since(start), "one lease's wait, no more")
		assert.Equal(t, uint64(1), cs[0].SharedStats().WaitTimeouts)
		assert.Equal(t, 1, src.count())
	})
}

func TestSharedStoreDownFallsBackAndComesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		var logs bytes.Buffer
		var logMu sync.Mutex
		logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
		src := newSource(slowValue(10 * time.Millisecond))
		c := NewClient(WithSharedStore(store), WithLogger(logger))
		defer c.Close()
		q := NewQueryFunc(c, Key{"items"}, src.fetch)
		store.fail.Store(true)
		for i := range 100 {
			v, err := q.Get(t.Context(), fmt.Sprint(i))
			require.NoError(t, err, "no store error reaches Get")
			assert.Equal(t, value(i+1, fmt.Sprint(i)), v)
		}
		s := c.SharedStats()
		assert.Equal(t, uint64(1), s.Errors, "one failed call, then the store is left alone")
		assert.Equal(t, uint64(100), s.Fallbacks)
		assert.Equal(t, int64(1), store.calls.Load())
		logMu.Lock()
		assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), "one Warn line, not one per key")
		logMu.Unlock()

		store.fail.Store(false)
		time.Sleep(time.Second)
		_, err := q.Get(t.Context(), "x")
		require.NoError(t, err)
		synctest.Wait()
		s = c.SharedStats()
		assert.Equal(t, uint64(100), s.Fallbacks, "back on the shared tier")
		assert.Equal(t, uint64(1), s.Misses)
		assert.Equal(t, uint64(1), s.Writes)
		logMu.Lock()
		assert.Contains(t, logs.String(), "shared store reachable again")
		logMu.Unlock()
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestSharedSetDataWritesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		_, qs := replicas(t, 2, store, src, StaleTime(10*time.Second))
		qs[0].SetData("1", "pushed")
		v, err := qs[1].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "pushed", v)
		assert.Equal(t, 0, src.count())
		qs[0].Update("1", func(old string, ok bool) string { return old + "+1" })
		v, err = qs[1].Fetch(t.Context(), "1") // explicit: upstream, written back
		require.NoError(t, err)
		assert.Equal(t, "v1:1", v)
		assert.Equal(t, 1, src.count())
	})
}

// A SetData wins over a fetch that started before it, on every replica.
func TestSharedSetDataWinsOverAnOlderFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		_, qs := replicas(t, 3, store, src, StaleTime(10*time.Second))
		go qs[0].Get(context.Background(), "1")
		time.Sleep(500 * time.Millisecond)
		qs[1].SetData("1", "pushed")
		time.Sleep(time.Second)
		synctest.Wait()
		v, err := qs[2].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v2:1", v, "A's older value is invalidated in the store: C fetched")
	})
}

func TestSharedInvalidationMarksStale(t *testing.T) {
	for _, how := range []string{"client", "query", "all", "mutation"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newMemStore()
				src := newSource(slowValue(time.Second))
				cs, qs := replicas(t, 3, store, src, StaleTime(time.Hour))
				_, err := qs[0].Get(t.Context(), "1")
				require.NoError(t, err)
				_, err = qs[1].Get(t.Context(), "1")
				require.NoError(t, err)
				require.Equal(t, 1, src.count())
				switch how {
				case "client":
					require.NoError(t, cs[1].Invalidate(t.Context(), Filter{Key: Key{"items"}}))
				case "query":
					require.NoError(t, qs[1].Invalidate(t.Context(), "1"))
				case "all":
					require.NoError(t, qs[1].InvalidateAll(t.Context()))
				case "mutation":
					d := NewClient(WithSharedStore(store), WithHTTPClient(&http.Client{Transport: roundTripFunc(
						func(r *http.Request) (*http.Response, error) {
							return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: r}, nil
						})}))
					defer d.Close()
					m := NewMutation[string, string, struct{}](d, Endpoint{Method: http.MethodPut, URL: "http://api.test/items/$id"},
						MutationInvalidates(Filter{Key: Key{"items", "1"}, Exact: true}))
					_, err := m.Do(t.Context(), "1", "x")
					require.NoError(t, err)
				}
				v, err := qs[2].Get(t.Context(), "1")
				require.NoError(t, err)
				assert.Equal(t, "v2:1", v, "C does not take the invalidated value")
				assert.Equal(t, uint64(0), cs[2].SharedStats().Hits)
				v, err = qs[0].Fetch(t.Context(), "1")
				require.NoError(t, err)
				assert.Equal(t, "v3:1", v)
			})
		})
	}
}

// A fetch that started before an invalidation made elsewhere writes back a
// value that no replica takes as fresh.
func TestSharedFetchBeforeInvalidationIsNotFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		cs, qs := replicas(t, 3, store, src, StaleTime(time.Hour))
		go qs[0].Get(context.Background(), "1")
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, cs[1].Invalidate(t.Context(), Filter{}))
		time.Sleep(time.Second)
		synctest.Wait()
		require.True(t, store.has(Key{"items", "1"}), "A wrote back")
		v, err := qs[2].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "v2:1", v)
	})
}

func TestSharedCorruptValueIsDeletedAndRefetched(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"not json", "{garbage"},
		{"wrong type", `{"a":1}`},
		{"envelope", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newMemStore()
				src := newSource(slowValue(time.Second))
				cs, qs := replicas(t, 1, store, src, StaleTime(time.Hour))
				key := Key{"items", "1"}
				if tc.data == "" {
					store.values[keyID(key)] = memValue{corrupt: true, expires: time.Now().Add(time.Hour)}
				} else {
					store.put(key, tc.data, time.Now())
				}
				v, err := qs[0].Get(t.Context(), "1")
				require.NoError(t, err)
				assert.Equal(t, "v1:1", v)
				synctest.Wait()
				s := cs[0].SharedStats()
				assert.Equal(t, uint64(1), s.Corrupt)
				assert.Equal(t, uint64(0), s.Errors)
				assert.Equal(t, uint64(1), s.Writes, "refetched and written back over it")
				look, err := store.Load(t.Context(), key)
				require.NoError(t, err)
				assert.Equal(t, `"v1:1"`, string(look.Value.Data))
			})
		})
	}
}

type checked struct{ N int }

func (c checked) Validate() error {
	if c.N < 0 {
		return errors.New("negative")
	}
	return nil
}

func TestSharedValueFailingValidateIsCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		c := NewClient(WithSharedStore(store))
		defer c.Close()
		q := NewQueryFunc(c, Key{"n"}, func(ctx context.Context, p string) (checked, error) { return checked{1}, nil },
			StaleTime(time.Hour))
		store.put(Key{"n", "1"}, `{"N":-1}`, time.Now())
		v, err := q.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, checked{1}, v)
		assert.Equal(t, uint64(1), c.SharedStats().Corrupt)
	})
}

func TestSharedTooLargeIsNotShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		store.maxBytes = 8
		var n atomic.Int64
		fetch := func(ctx context.Context, p string) (string, error) {
			n.Add(1)
			sleepCtx(ctx, time.Second)
			return strings.Repeat("x", 100), nil
		}
		var qs []*Query[string, string]
		var cs []*Client
		for range 3 {
			c := NewClient(WithSharedStore(store))
			defer c.Close()
			cs = append(cs, c)
			qs = append(qs, NewQueryFunc(c, Key{"big"}, fetch, StaleTime(time.Hour)))
		}
		_, err := qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, uint64(1), cs[0].SharedStats().Skipped)
		assert.Equal(t, uint64(0), cs[0].SharedStats().Writes)
		// The others see that it is too large: they fetch at once, together,
		// without waiting for a lease.
		start := time.Now()
		var wg sync.WaitGroup
		for _, q := range qs[1:] {
			wg.Go(func() {
				_, err := q.Get(t.Context(), "1")
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, int64(3), n.Load())
		assert.Equal(t, uint64(0), cs[1].SharedStats().Waits+cs[2].SharedStats().Waits)
	})
}

func TestSharedLocalQueryStaysOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		_, qs := replicas(t, 2, store, src, StaleTime(time.Hour), Local())
		_, err := qs[0].Get(t.Context(), "1")
		require.NoError(t, err)
		qs[0].SetData("2", "x")
		require.NoError(t, qs[0].Invalidate(t.Context(), "1"))
		assert.Equal(t, int64(0), store.calls.Load())
	})
}

// A waiter whose fetch is cancelled stops waiting at once, and a cancelled
// leader releases its lease so that others need not wait it out.
func TestSharedCancelWhileWaitingAndLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		src := newSource(slowValue(time.Second))
		_, qs := replicas(t, 2, store, src, StaleTime(time.Hour))
		ctx, cancel := context.WithCancel(t.Context())
		errs := make(chan error, 2)
		go func() { _, err := qs[0].Get(ctx, "1"); errs <- err }()
		synctest.Wait()
		go func() { _, err := qs[1].Get(ctx, "1"); errs <- err }()
		time.Sleep(100 * time.Millisecond)
		cancel()
		for range 2 {
			assert.ErrorIs(t, <-errs, context.Canceled)
		}
		synctest.Wait()
		store.mu.Lock()
		assert.Empty(t, store.leases, "the cancelled leader released its lease")
		store.mu.Unlock()
		start := time.Now()
		_, err := qs[1].Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start))
	})
}

func TestSharedStatsZeroWithoutStore(t *testing.T) {
	c := NewClient()
	defer c.Close()
	assert.Equal(t, SharedStats{}, c.SharedStats())
	assert.Panics(t, func() { WithSharedStore(nil) })
}
