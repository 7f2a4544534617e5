package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bounds of the reliability suite: every test here runs for a fixed time
// (plus the time to settle), on loopback only.
const (
	flakyDuration    = 3 * time.Second // chaos phase
	flakyObservers   = 1000            // observers polling
	flakyObserved    = 250             // keys they watch (4 observers per key)
	flakyKeys        = 400             // keys the workers use (the first flakyObserved are observed)
	flakyWorkers     = 16              // goroutines calling Get, Invalidate and SetData
	flakyPoll        = time.Second     // observers' RefetchInterval
	flakyStaleTime   = 100 * time.Millisecond
	flakyTimeout     = 300 * time.Millisecond // Timeout of each attempt; the "timeout" fault sleeps past it
	flakyRetries     = 2
	flakyRetryDelay  = 10 * time.Millisecond
	flakyGetWait     = time.Second // a worker's Get gives up after this
	flakyStuckRounds = 5           // once the upstream heals, refetch rounds go on while one of this many recovers an entry
	flakyHangGuard   = time.Minute // a phase that takes longer is hung, however busy the machine (a watchdog, not a timing rule)
	flakySeed        = 20240808

	loadDuration   = 2 * time.Second
	loadReaders    = 64
	loadKeys       = 100_000
	loadHot        = 5_000 // 90% of reads go to these; the rest, spread over the other 95,000 keys, mostly miss
	loadMaxEntries = 10_000
	loadMinFetches = 2 * loadMaxEntries // a run goes on until the bound was passed twice over
	loadSlack      = loadReaders        // each reader may insert one entry past WithMaxEntries before it waits for the eviction
	loadHeapBound  = 64 << 20           // heap growth, after GC, with the cache full
)

// ---------- a flaky upstream ----------

type faultKind int

const (
	faultNone    faultKind = iota // a good answer
	fault500                      // 500 with a text body
	fault503                      // 503 with Retry-After: 1
	faultSlow                     // a good answer whose body comes in two parts, 20-60ms apart
	faultReset                    // the connection is hijacked and reset
	faultJunk                     // 200 with a body that does not decode or validate
	faultTimeout                  // no answer until the client gives up
	faultKinds
)

var faultNames = [faultKinds]string{"ok", "500", "503+Retry-After", "slow body", "reset", "junk JSON", "timeout"}

// faultWeights are the odds of each kind, out of their sum.
var faultWeights = [faultKinds]int{45, 12, 3, 10, 10, 10, 10}

var junkBodies = []string{`{"key":`, `<html>502 Bad Gateway</html>`, `{"key":"x","ver":1} trailing`, `{"ver":3}`, `[1,2]`, `{"key":"k","ver":"NaN"}`}

// relItem is the data of the flaky tests: which key, and a version unique
// across the run, from the server or from SetData.
type relItem struct {
	Key string `json:"key"`
	Ver int64  `json:"ver"`
	Src string `json:"src"` // "server" or "set"
}

func (i relItem) Validate() error {
	if i.Key == "" {
		return errors.New("item without key")
	}
	return nil
}

// flakyServer answers GET /items/{key} with a fault drawn at random from a
// seeded generator, and remembers every item it ever sent.
type flakyServer struct {
	*httptest.Server
	healthy atomic.Bool // answer every request well
	ver     *atomic.Int64
	valid   *sync.Map // relItem → struct{}: every value ever sent or set
	wantHdr http.Header

	mu  sync.Mutex
	rng *rand.Rand

	requests, noCreds atomic.Int64
	faults            [faultKinds]atomic.Int64
}

func newFlakyServer(t *testing.T, ver *atomic.Int64, valid *sync.Map, wantHdr http.Header) *flakyServer {
	f := &flakyServer{ver: ver, valid: valid, wantHdr: wantHdr, rng: rand.New(rand.NewPCG(flakySeed, 1))}
	f.Server = httptest.NewServer(f)
	t.Cleanup(f.Close)
	return f
}

func (f *flakyServer) draw() (faultKind, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for _, w := range faultWeights {
		total += w
	}
	n := f.rng.IntN(total)
	aux := f.rng.IntN(1 << 16)
	for k, w := range faultWeights {
		if n < w {
			return faultKind(k), aux
		}
		n -= w
	}
	panic("unreachable")
}

func (f *flakyServer) good(key string) []byte {
	it := relItem{Key: key, Ver: f.ver.Add(1), Src: "server"}
	f.valid.Store(it, struct{}{})
	b, _ := json.Marshal(it)
	return b
}

func (f *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	for k := range f.wantHdr {
		if r.Header.Get(k) != f.wantHdr.Get(k) {
			f.noCreds.Add(1)
		}
	}
	key, ok := strings.CutPrefix(r.URL.Path, "/items/")
	if !ok || key == "" {
		http.NotFound(w, r)
		return
	}
	kind, aux := faultNone, 0
	if !f.healthy.Load() {
		kind, aux = f.draw()
	}
	f.faults[kind].Add(1)
	switch kind {
	case faultNone:
		w.Write(f.good(key))
	case fault500:
		http.Error(w, "upstream broke", http.StatusInternalServerError)
	case fault503:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	case faultSlow:
		b := f.good(key)
		w.Write(b[:len(b)/2])
		http.NewResponseController(w).Flush()
		if sleepCtx(r.Context(), time.Duration(20+aux%40)*time.Millisecond) == nil {
			w.Write(b[len(b)/2:])
		}
	case faultReset:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			relReset(conn)
		}
	case faultJunk:
		io.WriteString(w, junkBodies[aux%len(junkBodies)])
	case faultTimeout:
		sleepCtx(r.Context(), 4*flakyTimeout)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// flakyTally counts what the workers and observers saw.
type flakyTally struct {
	gets, getOK, getErr, invalidates, setData, clientInvalidates atomic.Int64
	errKinds                                                     sync.Map // string → *atomic.Int64
	bad                                                          atomic.Int64
	mu                                                           sync.Mutex
	badSamples                                                   []string
}

func (ft *flakyTally) fail(format string, args ...any) {
	ft.bad.Add(1)
	ft.mu.Lock()
	if len(ft.badSamples) < 10 {
		ft.badSamples = append(ft.badSamples, fmt.Sprintf(format, args...))
	}
	ft.mu.Unlock()
}

func (ft *flakyTally) countErr(err error) {
	kind := "other"
	var he *HTTPError
	var de *DecodeError
	switch {
	case errors.As(err, &he):
		kind = fmt.Sprint(he.StatusCode)
	case errors.As(err, &de):
		kind = "decode"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "deadline" // the attempt's Timeout or the caller's wait
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "connection reset"):
		kind = "reset"
	default:
		ft.fail("unexpected error kind: %v", err)
	}
	v, _ := ft.errKinds.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (ft *flakyTally) errSummary() string {
	var parts []string
	ft.errKinds.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return strings.Join(parts, " ")
}

// TestFlakyUpstream puts the cache in front of an upstream that fails at
// random (500, 503 with Retry-After, slow bodies, resets, junk JSON,
// timeouts) while 1,000 observers poll and 16 goroutines Get, Invalidate and
// SetData. It checks, during the run, that every value anyone sees is one
// the server sent or SetData stored, that an entry never loses its data and
// that no error or log line holds a credential; after it, that every entry
// holds data it may hold, that the cache recovers once the upstream does,
// that Close returns promptly and that Stats add up. goleak (TestMain)
// checks that nothing is left running.
func TestFlakyUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	var ver atomic.Int64
	var valid sync.Map
	const pw = "pw-5ecret-userinfo"
	creds := http.Header{"X-Api-Key": {secAPIKey}, "Authorization": {"Bearer " + secBearer}, "X-Signature": {secSig}}
	srv := newFlakyServer(t, &ver, &valid, creds)
	logs := &secretLog{secrets: []string{secAPIKey, secBearer, secSig, pw}}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	var roundTrips atomic.Int64 // requests the client made; net/http may resend one on a new connection
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		roundTrips.Add(1)
		return tr.RoundTrip(r)
	})
	base := strings.Replace(srv.URL, "http://", "http://alice:"+pw+"@", 1)
	c := NewClient(append(secCredentialOptions(),
		WithBaseURL(base), WithHTTPClient(&http.Client{Transport: rt}), WithLogger(logs.logger()))...)
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	q := NewQuery[string, relItem](c, Endpoint{URL: "/items/$key"}, StaleTime(flakyStaleTime), Timeout(flakyTimeout),
		Retry(flakyRetries), RetryDelay(func(int, error) time.Duration { return flakyRetryDelay }))
	keys := make([]string, flakyKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	var touched sync.Map // keys whose entry exists
	var setKeys sync.Map // keys that SetData was called on
	var ft flakyTally
	checkItem := func(where, key string, it relItem) {
		if it.Key != key {
			ft.fail("%s: key %s holds data of %s", where, key, it.Key)
		}
		if _, ok := valid.Load(it); !ok {
			ft.fail("%s: key %s holds %+v, which nobody sent", where, key, it)
		}
	}
	checkErr := func(where string, err error) {
		if err == nil {
			return
		}
		s := err.Error()
		for _, sec := range logs.secrets {
			if strings.Contains(s, sec) {
				ft.fail("%s: a credential in the error %q", where, s)
			}
		}
	}

	// 1,000 observers, each with a reader checking every state it gets.
	var readers sync.WaitGroup
	var states atomic.Int64
	for i := range flakyObservers {
		key := keys[i%flakyObserved]
		touched.Store(key, true)
		o := q.Use(context.Background(), key, RefetchInterval(flakyPoll))
		readers.Add(1)
		go func() {
			defer readers.Done()
			had := false
			for s := range o.Changes() {
				states.Add(1)
				if had && !s.HasData {
					ft.fail("observer of %s: the data was lost: %+v", key, s)
				}
				if s.HasData {
					had = true
					checkItem("observer", key, s.Data)
				}
				if (s.Status == StatusError) != (s.Err != nil) {
					ft.fail("observer of %s: status %v with error %v", key, s.Status, s.Err)
				}
				checkErr("observer", s.Err)
			}
		}()
	}

	// 16 workers until the deadline.
	deadline := time.Now().Add(flakyDuration)
	var workers sync.WaitGroup
	for w := range flakyWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rng := rand.New(rand.NewPCG(flakySeed, uint64(w)+2))
			for time.Now().Before(deadline) {
				key := keys[rng.IntN(flakyKeys)]
				ctx, cancel := context.WithTimeout(context.Background(), flakyGetWait)
				switch r := rng.IntN(1000); {
				case r < 600:
					touched.Store(key, true)
					ft.gets.Add(1)
					v, err := q.Get(ctx, key)
					if err != nil {
						ft.getErr.Add(1)
						ft.countErr(err)
						checkErr("Get", err)
					} else {
						ft.getOK.Add(1)
						checkItem("Get", key, v)
					}
				case r < 800:
					ft.invalidates.Add(1)
					checkErr("Invalidate", q.Invalidate(ctx, key))
				case r < 998:
					it := relItem{Key: key, Ver: ver.Add(1), Src: "set"}
					valid.Store(it, struct{}{})
					setKeys.Store(key, true)
					touched.Store(key, true)
					ft.setData.Add(1)
					q.SetData(key, it)
				default:
					ft.clientInvalidates.Add(1)
					checkErr("Client.Invalidate", c.Invalidate(ctx, Filter{Key: Key{"items"}}))
				}
				cancel()
			}
		}()
	}
	workers.Wait()

	// Every entry holds data it may hold, or never had any.
	nTouched := 0
	touched.Range(func(k, _ any) bool {
		nTouched++
		key := k.(string)
		s := q.State(key)
		if _, set := setKeys.Load(key); set && !s.HasData {
			ft.fail("%s: SetData was called but the entry has no data: %+v", key, s)
		}
		if s.HasData {
			checkItem("after the run", key, s.Data)
		}
		return true
	})
	chaos := c.Stats()

	// The upstream heals: refetching what has not recovered brings every
	// entry back. (Rounds, because on a loaded machine a burst of hundreds
	// of refetches can still overrun the attempt Timeout: retries have no
	// jitter, so they go out together again.)
	// Progress, not a fixed time, bounds this phase: a busy machine makes
	// rounds slower (and attempts may overrun their Timeout), but every few
	// rounds must still bring an entry back.
	srv.healthy.Store(true)
	t0 := time.Now()
	recoverBy := t0.Add(flakyHangGuard)
	recovered := func(key string) bool {
		s := q.State(key)
		return s.HasData && s.Status == StatusSuccess && s.Err == nil && !s.IsInvalidated
	}
	rounds, stuck, lastLeft := 0, 0, -1
	for {
		left := map[string]bool{}
		touched.Range(func(k, _ any) bool {
			if !recovered(k.(string)) {
				left[k.(string)] = true
			}
			return true
		})
		if len(left) == 0 {
			break
		}
		if lastLeft >= 0 && len(left) >= lastLeft {
			stuck++
		} else {
			stuck = 0
		}
		lastLeft = len(left)
		if stuck >= flakyStuckRounds || !time.Now().Before(recoverBy) {
			for k := range left {
				ft.fail("%s did not recover in %d rounds (%d without progress): %+v", k, rounds, stuck, q.State(k))
			}
			break
		}
		rounds++
		ctx, cancel := context.WithDeadline(context.Background(), recoverBy)
		c.Refetch(ctx, Filter{Key: Key{"items"}, Predicate: func(k Key) bool { return left[k[len(k)-1]] }})
		cancel()
	}
	recoverTook := time.Since(t0)

	// Close returns, with a watchdog that dumps the goroutines if it hangs.
	t0 = time.Now()
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	select {
	case <-done:
		closed = true
	case <-time.After(flakyHangGuard):
		buf := make([]byte, 4<<20)
		require.FailNowf(t, "Client.Close hangs", "Client.Close took more than %v; goroutines:\n%s", flakyHangGuard, buf[:runtime.Stack(buf, true)])
	}
	closeTook := time.Since(t0)
	readersDone := make(chan struct{})
	go func() {
		readers.Wait()
		close(readersDone)
	}()
	select {
	case <-readersDone:
	case <-time.After(flakyHangGuard):
		require.FailNow(t, "observers' Changes not closed after Client.Close")
	}

	// Stats add up.
	st := c.Stats()
	assert.Equal(t, nTouched, st.Entries, "Stats.Entries: the keys used (nothing evicted or collected)")
	assert.Equal(t, uint64(ft.gets.Load()), st.Hits+st.Misses, "Hits+Misses: one per Get")
	settled := st.FetchSuccesses + st.FetchErrors + st.FetchCancelled
	assert.Equal(t, st.Fetches, settled, "Fetches = %d, but %d succeeded + %d failed + %d cancelled = %d (after Close nothing is in flight)",
		st.Fetches, st.FetchSuccesses, st.FetchErrors, st.FetchCancelled, settled)
	assert.Equal(t, st.FetchErrors, uint64(logs.count("qcache: fetch failed")), "fetch failures logged, against Stats.FetchErrors")
	assert.Equal(t, st.Retries, uint64(logs.count("qcache: retrying fetch")), "retries logged, against Stats.Retries")
	// Each attempt makes one round trip (an attempt whose fetch was
	// cancelled during a retry delay makes none). The server may see more
	// requests: net/http resends a GET whose reused connection was reset.
	n := uint64(roundTrips.Load())
	assert.LessOrEqual(t, n, st.Fetches+st.Retries, "round trips, want between Fetches %d and Fetches+Retries %d", st.Fetches, st.Fetches+st.Retries)
	assert.GreaterOrEqual(t, n, st.Fetches, "round trips, want between Fetches %d and Fetches+Retries %d", st.Fetches, st.Fetches+st.Retries)
	assert.Zero(t, st.Observers, "Stats.Observers after Close")
	assert.Zero(t, srv.noCreds.Load(), "requests lacked the credentials (the test would prove nothing)")
	records, leaks := logs.result()
	if len(leaks) > 0 {
		assert.Failf(t, "a log record holds a credential", "%d log records hold a credential, e.g. %s", len(leaks), leaks[0])
	}
	if n := ft.bad.Load(); n > 0 {
		assert.Failf(t, "violations", "%d violations, e.g.:\n%s", n, strings.Join(ft.badSamples, "\n"))
	}
	assert.NotZero(t, ft.getOK.Load(), "the run did not exercise both outcomes: no good Get")
	assert.NotZero(t, ft.getErr.Load(), "the run did not exercise both outcomes: no failed Get")

	var faults []string
	var injected int64
	for k := range faultKinds {
		n := srv.faults[k].Load()
		faults = append(faults, fmt.Sprintf("%s=%d", faultNames[k], n))
		if k != faultNone && k != faultSlow {
			injected += n
		}
	}
	t.Logf("flaky upstream, %v, %d observers on %d keys, %d workers on %d keys:", flakyDuration, flakyObservers, flakyObserved, flakyWorkers, flakyKeys)
	t.Logf("  requests served %d (%d round trips, net/http resent the rest): %s; failures injected %d",
		srv.requests.Load(), roundTrips.Load(), strings.Join(faults, " "), injected)
	t.Logf("  workers: %d Get (%d ok, %d failed: %s), %d Invalidate, %d SetData, %d Client.Invalidate",
		ft.gets.Load(), ft.getOK.Load(), ft.getErr.Load(), ft.errSummary(), ft.invalidates.Load(), ft.setData.Load(), ft.clientInvalidates.Load())
	t.Logf("  observers: %d states checked", states.Load())
	t.Logf("  stats after the chaos: %+v", chaos)
	t.Logf("  stats after recovery and Close: %+v", st)
	t.Logf("  fetches: %d = %d succeeded + %d failed + %d cancelled", st.Fetches, st.FetchSuccesses, st.FetchErrors, st.FetchCancelled)
	t.Logf("  recovery: %d refetch rounds, %v; Close %v, %d Debug log records, 0 credentials in them", rounds, recoverTook.Round(time.Millisecond), closeTook.Round(time.Millisecond), records)
}

// ---------- load ----------

// TestLoadBoundedMemoryAndFastHits: 64 goroutines read 100,000 distinct
// keys (90% of reads on 5,000 hot keys, 10% spread over the rest, which
// mostly miss) with WithMaxEntries(10,000). The entry count stays within
// the bound plus the slack of one eviction pass, the heap stays bounded,
// ~90% of reads are hits and a hit does not allocate.
func TestLoadBoundedMemoryAndFastHits(t *testing.T) {
	if testing.Short() {
		t.Skip("load run skipped in -short mode")
	}
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)

	c := NewClient(WithMaxEntries(loadMaxEntries))
	defer c.Close()
	var fetches atomic.Int64
	q := NewQueryFunc(c, Key{"load"}, func(_ context.Context, k int) (int, error) {
		fetches.Add(1)
		return 2 * k, nil
	}, StaleTime(Forever))
	ctx := context.Background()
	for k := range loadHot {
		_, err := q.Get(ctx, k)
		require.NoError(t, err)
	}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { q.Get(ctx, 7) }), "allocations of a hit")
	warm := c.Stats()

	var maxEntries atomic.Int64
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-tk.C:
				if n := int64(c.Stats().Entries); n > maxEntries.Load() {
					maxEntries.Store(n)
				}
			}
		}
	}()
	// The run lasts loadDuration and, on a slow or busy machine, until the
	// readers have made loadMinFetches fetches, so that the bound is
	// exercised whatever the machine's speed; a minute without that many
	// is a hang.
	start := time.Now()
	deadline, hang := start.Add(loadDuration), start.Add(time.Minute)
	running := func() bool {
		now := time.Now()
		return now.Before(deadline) || fetches.Load() < loadMinFetches && now.Before(hang)
	}
	var ops, wrong atomic.Int64
	var wg sync.WaitGroup
	for g := range loadReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(flakySeed, uint64(g)))
			n := 0
			for ; n&255 != 0 || running(); n++ {
				k := rng.IntN(loadHot)
				if rng.IntN(10) == 0 {
					k = loadHot + rng.IntN(loadKeys-loadHot)
				}
				if v, err := q.Get(ctx, k); err != nil || v != 2*k {
					wrong.Add(1)
				}
			}
			ops.Add(int64(n))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, fetches.Load(), int64(loadMinFetches), "fetches in %v: the readers hung", elapsed)
	close(stopSampler)
	<-samplerDone
	st := c.Stats()
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	growth := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)

	hits, misses := st.Hits-warm.Hits, st.Misses-warm.Misses
	ratio := float64(hits) / float64(hits+misses)
	assert.Zero(t, wrong.Load(), "reads that returned a wrong value or an error")
	// Inserters past the bound wait for the eviction in progress, each
	// holding the one entry it inserted. Once the readers stop, the last
	// pass has brought the count back under the bound.
	assert.LessOrEqual(t, maxEntries.Load(), int64(loadMaxEntries+loadSlack), "entries reached, bound %d + slack %d", loadMaxEntries, loadSlack)
	assert.LessOrEqual(t, st.Entries, loadMaxEntries, "entries at the end")
	assert.LessOrEqual(t, growth, int64(loadHeapBound), "heap grew by %d MiB, bound %d MiB", growth>>20, loadHeapBound>>20)
	assert.GreaterOrEqual(t, ratio, 0.85, "hit ratio %.3f, want about 0.90", ratio)
	assert.LessOrEqual(t, ratio, 0.95, "hit ratio %.3f, want about 0.90", ratio)
	assert.NotZero(t, st.Evictions, "nothing was evicted: the bound was not exercised")
	t.Logf("load, %v, %d readers, %d keys (%d hot), WithMaxEntries(%d):", elapsed.Round(time.Millisecond), loadReaders, loadKeys, loadHot, loadMaxEntries)
	t.Logf("  %d reads (%.0f/s under this build), hit ratio %.3f (%d hits, %d misses), %d fetches, %d evictions",
		ops.Load(), float64(ops.Load())/elapsed.Seconds(), ratio, hits, misses, fetches.Load(), st.Evictions)
	t.Logf("  entries: max %d sampled, %d at the end; heap growth after GC %.1f MiB (%d B per entry held)",
		maxEntries.Load(), st.Entries, float64(growth)/(1<<20), growth/int64(max(st.Entries, 1)))
}
