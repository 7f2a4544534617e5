package qcache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The randomized model test of invalidation: Invalidate (by key, exact
// filter, prefix filter; refetching or not) against fetches in flight,
// SetData, Update, Remove, Cancel and observers, in a synctest bubble.
// After every step, every reader of an entry's state must agree with the
// last state the entry published (Client.stateHook sees each one, under the
// entry's lock): State, the observers' Changes and State, Dehydrate's
// invalidated and updated_at, and Filter.Where's EntryInfo. And the states
// published follow the rules of invalidation:
//
//   - an invalidated entry is stale, and stale exactly when it has no data,
//     is invalidated, or is StaleTime old;
//   - an entry turns invalidated only by an invalidation (which changes
//     nothing else) or when a fetch ends (failed, or invalidated while it
//     ran); it turns valid only when data lands (SetData, Update, a fetch)
//     or when Remove resets it;
//   - an invalidation of an entry publishes an invalidated state;
//   - Get and Fetch never serve data older than the last invalidation,
//     write or Remove of the key before they were called.
//
// A failing seed prints its operation list.

const invModelKeys = 3

type invModel struct {
	t    testing.TB
	next func(n int) int

	modelLog
	marks     [invModelKeys][]int // steps of each key's writes and invalidations
	published [invModelKeys][]State[string]
	last      [invModelKeys]State[string] // the last state published, as the step before ended
	expect    []int                       // keys whose invalidation in this step must publish an invalidated state

	c         *Client
	q         *Query[string, string]
	staleTime time.Duration
	calls     atomic.Int64
	plans     []modelPlan
	obs       [invModelKeys][]*invObserver
	readers   sync.WaitGroup
}

// invObserver is an observer and the last state its Changes delivered.
type invObserver struct {
	o    *Observer[string]
	mu   sync.Mutex
	last State[string]
	got  bool
}

func (m *invModel) upstream(ctx context.Context, p string) (string, error) {
	n := int(m.calls.Add(1))
	m.callStarted(n)
	pl := m.plans[n%len(m.plans)]
	if err := sleepCtx(ctx, pl.latency); err != nil {
		return "", err
	}
	if pl.fail {
		return "", errors.New("upstream failed")
	}
	return "f" + strconv.Itoa(n), nil
}

func invKeyIndex(k Key) int {
	if len(k) != 2 || !strings.HasPrefix(k[1], "k") {
		return -1
	}
	i, err := strconv.Atoi(k[1][1:])
	if err != nil {
		return -1
	}
	return i
}

// mark records a write or an invalidation of key in the current step.
func (m *invModel) mark(key int) {
	m.mu.Lock()
	m.marks[key] = append(m.marks[key], m.step)
	m.mu.Unlock()
}

// checkServed checks that v, served by Get or Fetch for key, called in
// step asked, is not older than the key's last write or invalidation
// before that step: it is a write's value of that step or later, or from a
// fetch that started then or later.
func (m *invModel) checkServed(what string, key, asked int, v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := -1
	for _, s := range m.marks[key] {
		if s < asked {
			last = s
		}
	}
	n, err := strconv.Atoi(v[1:])
	if err != nil {
		m.failures = append(m.failures, fmt.Sprintf("step %d: a value nobody made: %q", m.step, v))
		return
	}
	origin := n
	if v[0] == 'f' {
		origin = m.fetchStart[n]
	}
	if origin < last {
		m.failures = append(m.failures, fmt.Sprintf("step %d: %s of k%d called in step %d served %q (from step %d), older than the invalidation or write of step %d",
			m.step, what, key, asked, v, origin, last))
	}
}

func (m *invModel) run() {
	m.fetchStart = map[int]int{}
	for range 16 {
		m.plans = append(m.plans, modelPlan{
			latency: time.Duration(m.next(3)) * 500 * time.Millisecond,
			fail:    m.next(5) == 0,
		})
	}
	m.staleTime = []time.Duration{0, time.Second, Forever}[m.next(3)]
	gcTime := []time.Duration{time.Second, Forever}[m.next(2)]
	m.c = NewClient()
	m.c.stateHook = func(k Key, s any) {
		if i := invKeyIndex(k); i >= 0 {
			m.mu.Lock()
			m.published[i] = append(m.published[i], s.(State[string]))
			m.mu.Unlock()
		}
	}
	m.q = NewQueryFunc(m.c, Key{"im"}, m.upstream, StaleTime(m.staleTime), GCTime(gcTime), Retry(0))
	m.runSteps(20+m.next(40), m.op, m.check)
	m.c.Close()
	for _, list := range m.obs {
		for _, o := range list {
			o.o.Close()
		}
	}
	m.readers.Wait()
}

func (m *invModel) exists(p string) bool {
	return len(m.c.Keys(Filter{Key: Key{"im", p}, Exact: true})) > 0
}

// op runs one random operation; it reports false when the choices ran out.
func (m *invModel) op() bool {
	kind := m.next(14)
	if kind < 0 {
		return false
	}
	key := m.next(invModelKeys)
	p := "k" + strconv.Itoa(key)
	m.mu.Lock()
	step := m.step
	m.mu.Unlock()
	switch kind {
	case 0, 1:
		m.logOp("Get(%s)", p)
		m.readers.Go(func() {
			if v, err := m.q.Get(context.Background(), p); err == nil {
				m.checkServed("Get", key, step, v)
			}
		})
	case 2:
		m.logOp("Fetch(%s)", p)
		m.readers.Go(func() {
			if v, err := m.q.Fetch(context.Background(), p); err == nil {
				m.checkServed("Fetch", key, step, v)
			}
		})
	case 3:
		m.logOp("SetData(%s, s%d)", p, step)
		m.mark(key)
		m.q.SetData(p, "s"+strconv.Itoa(step))
	case 4:
		m.logOp("Update(%s, u%d)", p, step)
		m.mark(key)
		m.q.Update(p, func(string, bool) string { return "u" + strconv.Itoa(step) })
	case 5, 6: // one key, with its refetch if observed
		existed := m.exists(p)
		m.logOp("Query.Invalidate(%s) existed %v", p, existed)
		m.mark(key)
		m.readers.Go(func() { m.q.Invalidate(context.Background(), p) })
		m.expectInvalidated(key, existed)
	case 7: // one key by an exact filter, refetched or not
		rt := []RefetchType{RefetchNone, RefetchAll}[m.next(2)]
		existed := m.exists(p)
		m.logOp("Client.Invalidate(exact %s, %v) existed %v", p, rt, existed)
		m.mark(key)
		m.readers.Go(func() {
			m.c.Invalidate(context.Background(), Filter{Key: Key{"im", p}, Exact: true, Refetch: rt})
		})
		m.expectInvalidated(key, existed)
	case 8: // every key by a prefix (the key index), not refetched
		var existed [invModelKeys]bool
		for k := range invModelKeys {
			existed[k] = m.exists("k" + strconv.Itoa(k))
			m.mark(k)
		}
		m.logOp("Client.Invalidate(prefix im) existed %v", existed)
		require.NoError(m.t, m.c.Invalidate(context.Background(), Filter{Key: Key{"im"}, Refetch: RefetchNone}))
		for k := range invModelKeys {
			m.expectInvalidated(k, existed[k])
		}
	case 9:
		m.logOp("Remove(%s)", p)
		m.mark(key)
		m.q.Remove(p)
	case 10:
		m.logOp("Cancel(%s)", p)
		m.c.Cancel(Filter{Key: Key{"im", p}, Exact: true})
	case 11:
		m.logOp("Use(%s)", p)
		o := &invObserver{o: m.q.Use(context.Background(), p)}
		m.obs[key] = append(m.obs[key], o)
		m.readers.Go(func() {
			for s := range o.o.Changes() {
				o.mu.Lock()
				o.last, o.got = s, true
				o.mu.Unlock()
			}
		})
	case 12:
		if n := len(m.obs[key]); n > 0 {
			i := m.next(n)
			m.logOp("Observer(%s)#%d.Close", p, i)
			m.obs[key][i].o.Close()
			m.obs[key] = slices.Delete(m.obs[key], i, i+1)
		}
	case 13:
		d := time.Duration(m.next(5)) * 300 * time.Millisecond
		m.logOp("sleep %v", d)
		time.Sleep(d)
	}
	return true
}

// expectInvalidated checks, once the step's goroutines are blocked, that
// the invalidation of key in this step published an invalidated state
// (when the entry existed). It runs in check.
func (m *invModel) expectInvalidated(key int, existed bool) {
	if !existed {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expect = append(m.expect, key)
}

// check runs after every step, with every goroutine of the bubble blocked.
func (m *invModel) check() {
	m.mu.Lock()
	published := m.published
	m.published = [invModelKeys][]State[string]{}
	expect := m.expect
	m.expect = nil
	m.mu.Unlock()

	for _, key := range expect {
		if !slices.ContainsFunc(published[key], func(s State[string]) bool { return s.IsInvalidated && s.IsStale }) {
			m.failf("k%d was invalidated, but published no invalidated state: %+v", key, published[key])
		}
	}
	var dehydrated bytes.Buffer
	require.NoError(m.t, m.c.Dehydrate(&dehydrated, Filter{}))
	lines := map[string]snapshotLine{}
	sc := bufio.NewScanner(&dehydrated)
	sc.Scan() // the header
	for sc.Scan() {
		var l snapshotLine
		require.NoError(m.t, json.Unmarshal(sc.Bytes(), &l))
		lines[strings.Join(l.Key, "/")] = l
	}
	infos := map[string]EntryInfo{}
	m.c.Keys(Filter{Where: func(i EntryInfo) bool {
		infos[strings.Join(i.Key, "/")] = i
		return true
	}})

	for key := range invModelKeys {
		p := "k" + strconv.Itoa(key)
		// The rules of the states published, each from the one before.
		prev := m.last[key]
		for _, s := range published[key] {
			m.checkTransition(key, prev, s)
			prev = s
		}
		if !m.exists(p) {
			m.last[key] = State[string]{}
			continue
		}
		m.last[key] = prev
		st := m.q.State(p)
		if !sameState(st, prev) {
			m.failf("State(%s) = %+v, but the last state published is %+v", p, st, prev)
		}
		stale := !st.HasData || st.IsInvalidated ||
			m.staleTime != Forever && !time.Now().Before(st.DataUpdatedAt.Add(m.staleTime))
		if st.IsStale != stale {
			m.failf("State(%s) = %+v: IsStale should be %v (StaleTime %v)", p, st, stale, m.staleTime)
		}
		for i, o := range m.obs[key] {
			o.mu.Lock()
			last, got := o.last, o.got
			o.mu.Unlock()
			if !got || !sameState(last, st) || last.IsStale != st.IsStale {
				m.failf("observer #%d of %s got %+v last, State is %+v", i, p, last, st)
			}
			if os := o.o.State(); !sameState(os, st) || os.IsStale != st.IsStale {
				m.failf("observer #%d of %s: State() = %+v, the entry's is %+v", i, p, os, st)
			}
		}
		name := "im/" + p
		l, ok := lines[name]
		switch {
		case ok != st.HasData:
			m.failf("Dehydrate has a line for %s: %v, State %+v", p, ok, st)
		case ok && (l.Invalidated != st.IsInvalidated || !l.UpdatedAt.Equal(st.DataUpdatedAt)):
			m.failf("Dehydrate wrote %s invalidated %v at %v, State is %+v", p, l.Invalidated, l.UpdatedAt, st)
		}
		if in, ok := infos[name]; !ok || in.IsInvalidated != st.IsInvalidated || in.IsStale != st.IsStale ||
			in.HasData != st.HasData || in.FetchStatus != st.FetchStatus {
			m.failf("EntryInfo of %s = %+v (found %v), State is %+v", p, in, ok, st)
		}
	}
}

// sameState compares two states of one entry but for IsStale (which turns
// with time without a change being published) and IsPlaceholder.
func sameState(a, b State[string]) bool {
	return a.Data == b.Data && a.HasData == b.HasData && a.Err == b.Err && a.Status == b.Status &&
		a.FetchStatus == b.FetchStatus && a.DataUpdatedAt.Equal(b.DataUpdatedAt) &&
		a.ErrorUpdatedAt.Equal(b.ErrorUpdatedAt) && a.FailureCount == b.FailureCount &&
		a.IsInvalidated == b.IsInvalidated
}

// checkTransition checks the rules of invalidation for the state b that
// key published after a.
func (m *invModel) checkTransition(key int, a, b State[string]) {
	if b.IsInvalidated && !b.IsStale {
		m.failf("k%d published an invalidated state that is fresh: %+v", key, b)
	}
	fetchEnded := a.FetchStatus != FetchIdle && b.FetchStatus == FetchIdle
	switch {
	case !a.IsInvalidated && b.IsInvalidated:
		onlyFlag := a.Data == b.Data && a.HasData == b.HasData && a.Status == b.Status &&
			a.FetchStatus == b.FetchStatus && a.DataUpdatedAt.Equal(b.DataUpdatedAt) && a.FailureCount == b.FailureCount
		if !onlyFlag && !fetchEnded {
			m.failf("k%d turned invalidated neither by an invalidation nor when a fetch ended: %+v -> %+v", key, a, b)
		}
	case a.IsInvalidated && !b.IsInvalidated:
		landed := b.HasData && b.Status == StatusSuccess
		reset := !b.HasData && b.Status == StatusPending
		if !landed && !reset {
			m.failf("k%d turned valid without data landing or a reset: %+v -> %+v", key, a, b)
		}
	}
}

func (m *invModel) report() {
	m.t.Helper()
	m.modelLog.report(m.t, "the invalidation model was broken")
}

func TestInvalidationModelRandomized(t *testing.T) {
	seeds := modelSeeds(200, 40)
	base := rand.Uint64() // a new set of seeds each run; a failure names its seed
	if s := os.Getenv("QCACHE_INV_SEED"); s != "" {
		base, _ = strconv.ParseUint(s, 10, 64) // to run a failing seed again (as the first)
	}
	for i := range uint64(seeds) {
		seed := base + i
		t.Run(strconv.Itoa(int(i)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 0x51ed))
				m := &invModel{t: t, next: rng.IntN}
				m.run()
				if t.Failed() || len(m.failures) > 0 {
					t.Logf("seed %d", seed)
				}
				m.report()
			})
		})
	}
}

// The model's checks can fail: a state published fresh while invalidated,
// or valid again without data landing, is caught.
func TestInvalidationModelCatchesBadTransitions(t *testing.T) {
	m := &invModel{t: t}
	ok := State[string]{Data: "a", HasData: true, Status: StatusSuccess}
	m.checkTransition(0, ok, State[string]{Data: "a", HasData: true, Status: StatusSuccess, IsInvalidated: true, IsStale: true})
	assert.Empty(t, m.failures)
	m.checkTransition(0, ok, State[string]{Data: "a", HasData: true, Status: StatusSuccess, IsInvalidated: true})
	assert.Len(t, m.failures, 1, "invalidated and fresh")
	m.checkTransition(0, ok, State[string]{Data: "b", HasData: true, Status: StatusSuccess, IsInvalidated: true, IsStale: true})
	assert.Len(t, m.failures, 2, "invalidated with new data, no fetch ended")
	inv := State[string]{Data: "a", HasData: true, Status: StatusError, Err: errors.New("x"), IsInvalidated: true, IsStale: true}
	m.checkTransition(0, inv, State[string]{Data: "a", HasData: true, Status: StatusError, Err: inv.Err, FetchStatus: Fetching, IsStale: true})
	assert.Len(t, m.failures, 3, "valid again when a fetch started")
	m.fetchStart = map[int]int{1: 2}
	m.marks[0] = []int{3}
	m.checkServed("Get", 0, 4, "f1")
	assert.Len(t, m.failures, 4, "a fetch from before the invalidation served")
	m.checkServed("Get", 0, 4, "s3")
	assert.Len(t, m.failures, 4)
}

// TestInvalidateStress runs invalidations by key, by group prefix and of
// the whole query against Get (the lock-free hit path), Fetch, SetData,
// Remove, State, observers and Dehydrate on real goroutines, bounded, for
// the race detector. Each owner goroutine is the only writer of its key:
// after it invalidates the key (itself, or through a prefix), its next Get
// must be served by a fetch that started after the invalidation, never the
// data from before it; and no state anyone sees is invalidated and fresh.
func TestInvalidateStress(t *testing.T) {
	rounds := 1500
	if testing.Short() {
		rounds = 300
	}
	var seq atomic.Int64 // values: SetData's and fetches' (taken as the fetch function starts)
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"st"}, func(context.Context, groupItem) (int64, error) {
		v := seq.Add(1)
		runtime.Gosched()
		return v, nil
	}, StaleTime(Forever))
	ctx := context.Background()
	const owners, nOthers = 3, 4
	checkState := func(what string, s State[int64]) {
		if s.IsInvalidated && !s.IsStale {
			assert.Fail(t, "an invalidated state is fresh", "%s: %+v", what, s)
		}
	}
	// get is Get, again when a concurrent Remove cancelled the fetch it
	// waited for (its waiters get context.Canceled).
	get := func(p groupItem) (int64, error) {
		for {
			v, err := q.Get(ctx, p)
			if !errors.Is(err, context.Canceled) {
				return v, err
			}
		}
	}
	var wg sync.WaitGroup
	for w := range owners {
		wg.Go(func() {
			group := "g" + strconv.Itoa(w)
			p := groupItem{group, "own"}
			for i := range rounds {
				v := seq.Add(1)
				q.SetData(p, v)
				if got, err := get(p); assert.NoError(t, err) && got < v {
					assert.Fail(t, "Get served data older than SetData", "%v: %d < %d", p, got, v)
				}
				before := seq.Load()
				switch i % 3 {
				case 0:
					if err := q.Invalidate(ctx, p); !errors.Is(err, context.Canceled) {
						assert.NoError(t, err) // its refetch, for an observer, may be cancelled by a Remove
					}
				case 1:
					assert.NoError(t, c.Invalidate(ctx, Filter{Key: Key{"st", group}, Refetch: RefetchNone}))
				case 2:
					assert.NoError(t, c.Invalidate(ctx, Filter{Key: Key{"st"}, Refetch: RefetchNone}))
				}
				s := q.State(p)
				checkState("owner", s)
				if s.HasData && s.Data == v && !s.IsInvalidated {
					assert.Fail(t, "the data from before the invalidation is valid", "%v: %+v", p, s)
				}
				if got, err := get(p); assert.NoError(t, err) && got <= before {
					assert.Fail(t, "Get after Invalidate served data from before it", "%v: %d, invalidated after %d", p, got, before)
				}
			}
		})
	}
	var done atomic.Bool
	var others sync.WaitGroup
	for w := range nOthers {
		others.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for !done.Load() {
				g := "g" + strconv.Itoa(rng.IntN(owners))
				p := groupItem{g, []string{"own", "a", "b"}[rng.IntN(3)]}
				switch rng.IntN(9) {
				case 0, 1:
					_, err := get(p)
					assert.NoError(t, err)
				case 2:
					if _, err := q.Fetch(ctx, p); !errors.Is(err, context.Canceled) {
						assert.NoError(t, err)
					}
				case 3:
					if p.Item != "own" {
						q.SetData(p, seq.Add(1))
					}
				case 4:
					q.Remove(p)
				case 5:
					if err := c.Invalidate(ctx, Filter{Key: Key{"st", g}, Refetch: []RefetchType{RefetchNone, RefetchAll}[rng.IntN(2)]}); !errors.Is(err, context.Canceled) {
						assert.NoError(t, err)
					}
				case 6:
					checkState("State", q.State(p))
				case 7:
					o := q.Use(ctx, p)
					checkState("observer", <-o.Changes()) // the state when Use returned
					runtime.Gosched()
					checkState("observer", o.State())
					o.Close()
				case 8:
					assert.NoError(t, c.Dehydrate(io.Discard, Filter{Key: Key{"st", g}}))
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	others.Wait()
}
