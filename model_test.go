package qcache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// The randomized model test: a seeded generator of operation sequences
// (Get, Fetch, Prefetch, SetData, Update, Invalidate, Remove, Cancel,
// Use/Close, time passing, and an upstream whose answers are slow, failing,
// panicking or deaf to cancellation) runs in a synctest bubble, and after
// every step the cache is checked against the rules of DESIGN.md:
//
//   - data served (Get, Peek) is never older than the key's last SetData,
//     Update or Remove: it is that write's value, a later one's, or the
//     answer of a fetch that started after it (so a removed entry is never
//     served);
//   - every state an entry publishes is consistent (an error status has an
//     error, a pending one has no data);
//   - Stats.Entries is the number of entries, and after Close every fetch
//     started has settled exactly once;
//   - the gc queue's heap places match their indexes;
//   - nothing outlives Close (synctest.Test fails on a goroutine left).
//
// A failing seed prints its operation list.

const modelKeys = 3

// modelPlan is what the upstream does on one call.
type modelPlan struct {
	latency time.Duration
	fail    bool
	panics  bool
	deaf    bool // ignores its context
}

type modelRun struct {
	t    testing.TB
	next func(n int) int // the next choice in [0, n)

	modelLog
	writes [modelKeys][]int // steps of each key's SetData, Update and Remove

	c       *Client
	q       *Query[string, string]
	calls   atomic.Int64
	plans   []modelPlan
	obs     [modelKeys][]*Observer[string]
	readers sync.WaitGroup
}

// modelLog is what a model test's run records, shared by the model tests:
// the step it is in, the operations it made, the failures it found, and
// the step each upstream call started in.
type modelLog struct {
	mu         sync.Mutex
	step       int
	ops        []string
	fetchStart map[int]int // upstream call -> step it started in
	failures   []string
}

func (m *modelLog) failf(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failures = append(m.failures, fmt.Sprintf("step %d: ", m.step)+fmt.Sprintf(format, args...))
}

func (m *modelLog) logOp(format string, args ...any) {
	m.mu.Lock()
	m.ops = append(m.ops, fmt.Sprintf("%3d ", m.step)+fmt.Sprintf(format, args...))
	m.mu.Unlock()
}

// runSteps runs op up to n times, until it reports false, each step
// followed by synctest.Wait and check.
func (m *modelLog) runSteps(n int, op func() bool, check func()) {
	for range n {
		if !op() {
			break
		}
		synctest.Wait()
		check()
		m.mu.Lock()
		m.step++
		m.mu.Unlock()
	}
}

// callStarted records that upstream call n starts in the current step.
func (m *modelLog) callStarted(n int) {
	m.mu.Lock()
	m.fetchStart[n] = m.step
	m.mu.Unlock()
}

func (m *modelRun) upstream(ctx context.Context, p string) (string, error) {
	n := int(m.calls.Add(1))
	m.callStarted(n)
	pl := m.plans[n%len(m.plans)]
	if pl.deaf {
		time.Sleep(pl.latency)
	} else if err := sleepCtx(ctx, pl.latency); err != nil {
		return "", err
	}
	switch {
	case pl.panics:
		panic("upstream panicked")
	case pl.fail:
		return "", errors.New("upstream failed")
	}
	return "f" + strconv.Itoa(n), nil
}

// origin is the step a value was made in: a write's own step, or the step
// its fetch started in.
func (m *modelRun) origin(v string) int {
	n, err := strconv.Atoi(v[1:])
	if err != nil {
		m.failf("a value nobody made: %q", v)
		return -1
	}
	if v[0] == 'f' {
		at, ok := m.fetchStart[n]
		if !ok {
			m.failf("value %q of a call never made", v)
		}
		return at
	}
	return n
}

// checkServed checks that v, served for key to a call made in step asked,
// is not older than the key's last write before that step.
func (m *modelRun) checkServed(what string, key, asked int, v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := -1
	for _, w := range m.writes[key] {
		if w < asked {
			last = w
		}
	}
	// A fetch that started in the write's own step started after it: the
	// steps before it had settled, and a write starts no other fetch.
	if o := m.origin(v); o < last {
		m.failures = append(m.failures, fmt.Sprintf("step %d: %s of k%d asked in step %d served %q (from step %d), older than the write of step %d",
			m.step, what, key, asked, v, o, last))
	}
}

func checkPublished(s State[string]) error {
	if (s.Status == StatusError) != (s.Err != nil) {
		return fmt.Errorf("status %v with error %v", s.Status, s.Err)
	}
	if s.Status == StatusPending && s.HasData {
		return fmt.Errorf("pending with data %q", s.Data)
	}
	if s.Status == StatusSuccess && !s.HasData {
		return errors.New("success without data")
	}
	return nil
}

func (m *modelRun) run() {
	m.fetchStart = map[int]int{}
	for range 32 {
		m.plans = append(m.plans, modelPlan{
			latency: time.Duration(m.next(4)) * 500 * time.Millisecond,
			fail:    m.next(4) == 0,
			panics:  m.next(16) == 0,
			deaf:    m.next(4) == 0,
		})
	}
	staleTimes := []time.Duration{0, time.Second, Forever}
	gcTimes := []time.Duration{time.Second, 5 * time.Minute}
	opts := []QueryOption{
		StaleTime(staleTimes[m.next(3)]), GCTime(gcTimes[m.next(2)]),
		Retry(m.next(2)), RetryDelay(func(int, error) time.Duration { return 500 * time.Millisecond }),
	}
	var copts []ClientOption
	if m.next(3) == 0 {
		copts = append(copts, WithMaxEntries(2))
	}
	m.c = NewClient(copts...)
	m.c.stateHook = func(k Key, s any) {
		if err := checkPublished(s.(State[string])); err != nil {
			m.failf("%v published %v", k, err)
		}
	}
	m.q = NewQueryFunc(m.c, Key{"m"}, m.upstream, opts...)
	m.runSteps(20+m.next(40), m.op, m.check)
	m.c.Close()
	for _, list := range m.obs {
		for _, o := range list {
			o.Close()
		}
	}
	m.readers.Wait()
	st := m.c.Stats()
	if settled := st.FetchSuccesses + st.FetchErrors + st.FetchCancelled; settled != st.Fetches {
		m.failf("after Close: %d fetches started, %d settled (%+v)", st.Fetches, settled, st)
	}
}

// op runs one random operation; it reports false when the choices ran out.
func (m *modelRun) op() bool {
	kind := m.next(13)
	if kind < 0 {
		return false
	}
	key := m.next(modelKeys)
	p := "k" + strconv.Itoa(key)
	m.mu.Lock()
	step := m.step
	m.mu.Unlock()
	switch kind {
	case 0, 1: // Get, with a context that lives, ends soon, or has ended
		timeout := []time.Duration{0, 700 * time.Millisecond, -1}[m.next(3)]
		m.logOp("Get(%s) timeout %v", p, timeout)
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		switch {
		case timeout > 0:
			ctx, cancel = context.WithTimeout(ctx, timeout)
		case timeout < 0:
			ctx, cancel = context.WithCancel(ctx)
			cancel()
		}
		m.readers.Go(func() {
			defer cancel()
			if v, err := m.q.Get(ctx, p); err == nil {
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
		m.logOp("Prefetch(%s)", p)
		m.q.Prefetch(p)
	case 4:
		m.logOp("SetData(%s, s%d)", p, step)
		m.mu.Lock()
		m.writes[key] = append(m.writes[key], step)
		m.mu.Unlock()
		m.q.SetData(p, "s"+strconv.Itoa(step))
	case 5:
		m.logOp("Update(%s, u%d)", p, step)
		m.mu.Lock()
		m.writes[key] = append(m.writes[key], step)
		m.mu.Unlock()
		m.q.Update(p, func(string, bool) string { return "u" + strconv.Itoa(step) })
	case 6:
		m.logOp("Invalidate(%s)", p)
		m.readers.Go(func() { m.q.Invalidate(context.Background(), p) })
	case 7:
		m.logOp("Remove(%s)", p)
		m.mu.Lock()
		m.writes[key] = append(m.writes[key], step)
		m.mu.Unlock()
		m.q.Remove(p)
	case 8:
		m.logOp("Cancel(%s)", p)
		m.c.Cancel(Filter{Key: Key{"m", p}, Exact: true})
	case 9:
		interval := []time.Duration{0, time.Second}[m.next(2)]
		m.logOp("Use(%s) interval %v", p, interval)
		o := m.q.Use(context.Background(), p, RefetchInterval(interval))
		m.obs[key] = append(m.obs[key], o)
		m.readers.Go(func() {
			for s := range o.Changes() {
				if err := checkPublished(s); err != nil {
					m.failf("observer of %s got %v", p, err)
				}
			}
		})
	case 10:
		if n := len(m.obs[key]); n > 0 {
			i := m.next(n)
			m.logOp("Observer(%s)#%d.Close", p, i)
			m.obs[key][i].Close()
			m.obs[key] = append(m.obs[key][:i], m.obs[key][i+1:]...)
		}
	case 11, 12:
		d := time.Duration(m.next(6)) * 300 * time.Millisecond
		m.logOp("sleep %v", d)
		time.Sleep(d)
	}
	return true
}

// check runs after every step, with every goroutine of the bubble blocked.
func (m *modelRun) check() {
	m.mu.Lock()
	step := m.step
	m.mu.Unlock()
	for key := range modelKeys {
		if v, ok := m.q.Peek("k" + strconv.Itoa(key)); ok {
			m.checkServed("Peek", key, step+1, v)
		}
	}
	if n, keys := m.c.Stats().Entries, len(m.c.Keys(Filter{})); n != keys {
		m.failf("Stats.Entries = %d, but %d entries", n, keys)
	}
	if err := checkGCQueue(&m.c.gc, nil); err != nil {
		m.failf("gc queue: %v", err)
	}
}

// report fails t, naming what broke, with the failures and the operations
// that led to them.
func (m *modelLog) report(t testing.TB, what string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.failures) > 0 {
		require.FailNowf(t, what, "%s\noperations:\n%s", strings.Join(m.failures, "\n"), strings.Join(m.ops, "\n"))
	}
}

func (m *modelRun) report() {
	m.t.Helper()
	m.modelLog.report(m.t, "the model was broken")
}

// modelSeeds is how many seeds a model test runs: short with -short, else
// QCACHE_MODEL_SEEDS when set, else full.
func modelSeeds(full, short int) int {
	seeds := full
	if s := os.Getenv("QCACHE_MODEL_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = short
	}
	return seeds
}

func TestModelRandomized(t *testing.T) {
	seeds := modelSeeds(300, 50)
	for seed := range uint64(seeds) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 0x9e3779b9))
				m := &modelRun{t: t, next: rng.IntN}
				m.run()
				m.report()
			})
		})
	}
}

// FuzzModel drives the model test with the fuzzer's bytes as its choices.
func FuzzModel(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte("\x09\x00\x00\x00\x07\x00\x0b\x05\x00\x00\x0c\x03"))
	f.Fuzz(func(t *testing.T, choices []byte) {
		synctest.Test(t, func(t *testing.T) {
			i := 0
			next := func(n int) int {
				if i >= len(choices) {
					return -1
				}
				c := int(choices[i])
				i++
				return c % n
			}
			// The op loop stops when the choices run out; other choices
			// default to 0.
			m := &modelRun{t: t}
			m.next = func(n int) int {
				v := next(n)
				if v < 0 && n == 13 {
					return -1
				}
				return max(v, 0)
			}
			m.run()
			m.report()
		})
	})
}

func TestModelCatchesAStaleServe(t *testing.T) {
	// The checker itself must be able to fail: a fetch that started before
	// a SetData may not be served after it.
	m := &modelRun{t: t, modelLog: modelLog{fetchStart: map[int]int{1: 3, 2: 5}}}
	m.writes[0] = []int{5}
	m.checkServed("Get", 0, 6, "f1")
	require.Len(t, m.failures, 1)
	m.failures = nil
	m.checkServed("Get", 0, 6, "s5")
	m.checkServed("Get", 0, 6, "f2")
	require.Empty(t, m.failures)
}
