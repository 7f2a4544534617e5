package qcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// ---------- client options ----------

// ClientOption configures a Client in NewClient.
type ClientOption func(*clientConfig)

type clientConfig struct {
	baseURL          *url.URL
	httpClient       *http.Client
	header           http.Header
	editors          []func(*http.Request) error
	queryDefaults    []QueryOption
	maxEntries       int
	maxResponseBytes int64
	logger           *slog.Logger
	bus              *busConfig // WithBus
	hooks            Hooks      // WithHooks
	maxFetches       int        // WithMaxConcurrentFetches
}

const defaultMaxResponseBytes = 10 << 20

func defaultClientConfig() clientConfig {
	return clientConfig{
		httpClient:       http.DefaultClient,
		header:           http.Header{},
		maxResponseBytes: defaultMaxResponseBytes,
		logger:           slog.New(slog.DiscardHandler),
	}
}

// WithBaseURL sets the URL that relative endpoint URLs are joined to. It
// panics if base is not an absolute http or https URL.
func WithBaseURL(base string) ClientOption {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		panic(fmt.Sprintf("qcache: WithBaseURL(%q): not an absolute http(s) URL", base))
	}
	u.RawQuery, u.Fragment = "", ""
	return func(c *clientConfig) { c.baseURL = u }
}

// WithHTTPClient sets the HTTP client used for every request (default
// http.DefaultClient).
func WithHTTPClient(h *http.Client) ClientOption {
	return func(c *clientConfig) {
		if h != nil {
			c.httpClient = h
		}
	}
}

// WithHeader adds a header sent with every request. Its value never appears
// in errors or logs, and it is not sent on after a redirect to another
// origin (scheme, host or port).
func WithHeader(key, value string) ClientOption {
	return func(c *clientConfig) { c.header.Add(key, value) }
}

// WithRequestEditor adds a function that may change every request before it
// is sent (to sign it, say). An error from it fails the fetch and is not
// retried; it is returned wrapped as it is, so it must not carry credentials
// (nor r.URL, which may hold the base URL's user info). Headers it sets are
// not sent on after a redirect to another origin (scheme, host or port).
func WithRequestEditor(edit func(*http.Request) error) ClientOption {
	return func(c *clientConfig) {
		if edit != nil {
			c.editors = append(c.editors, edit)
		}
	}
}

// WithQueryDefaults sets options applied to every query before its own.
func WithQueryDefaults(opts ...QueryOption) ClientOption {
	return func(c *clientConfig) { c.queryDefaults = append(c.queryDefaults, opts...) }
}

// WithMaxConcurrentFetches bounds the attempts of fetches that run at once
// in the client to n: an upstream with a rate limit, or 10,000 observers
// polling in phase, never see more than n requests in flight. A fetch
// waiting for a slot shows FetchQueued; waiters are served first come,
// first served (golang.org/x/sync/semaphore), and a fetch cancelled while
// queued leaves the queue. A slot is held for one attempt, not across a
// retry's wait. A fetch started from inside a fetch function, with that
// function's context (a query that depends on another), takes no slot: its
// caller holds one and waits for it, so a bound cannot deadlock it. It
// panics if n is not positive.
func WithMaxConcurrentFetches(n int) ClientOption {
	mustBePositive("WithMaxConcurrentFetches", n)
	return func(c *clientConfig) { c.maxFetches = n }
}

// WithMaxEntries bounds the number of cached entries across all queries.
// Past it, entries without observers are evicted, least recently used first;
// observed entries and entries with a fetch in flight are never evicted, so
// the bound can be exceeded by them. 0, the default, means no bound.
func WithMaxEntries(n int) ClientOption {
	if n < 0 {
		panic(fmt.Sprintf("qcache: WithMaxEntries(%d): negative", n))
	}
	return func(c *clientConfig) { c.maxEntries = n }
}

// WithMaxResponseBytes bounds response bodies (default 10 MiB). A larger
// body fails the fetch without being read into memory.
func WithMaxResponseBytes(n int64) ClientOption {
	if n <= 0 {
		panic(fmt.Sprintf("qcache: WithMaxResponseBytes(%d): not positive", n))
	}
	return func(c *clientConfig) { c.maxResponseBytes = n }
}

// WithLogger sets the logger for fetch failures, retries and stream events
// (default: discard).
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) {
		if l != nil {
			c.logger = l
		}
	}
}

// ---------- query options ----------

// QueryOption configures a Query in NewQuery and NewQueryFunc, or every query
// of a client through WithQueryDefaults.
type QueryOption func(*queryConfig)

// Forever, as a StaleTime, keeps data fresh until it is invalidated; as a
// GCTime, keeps unobserved entries until they are removed.
const Forever = time.Duration(math.MaxInt64)

type queryConfig struct {
	staleTime     time.Duration
	gcTime        time.Duration
	retry         int
	retryDelay    func(failureCount int, err error) time.Duration
	timeout       time.Duration
	maxRetryDelay time.Duration
	keyPrefix     []string
	swr           bool
	local         bool                                   // Local
	name          string                                 // QueryName
	retryIf       func(failureCount int, err error) bool // RetryIf
	staleIfError  time.Duration                          // StaleIfError
	errorTTL      time.Duration                          // CacheErrors
	cacheErr      func(error) bool                       // CacheErrors
	maxFetches    int                                    // MaxConcurrentFetches
	batchWindow   time.Duration                          // BatchWindow
	maxBatch      int                                    // MaxBatch
	clone         any                                    // Clone: func(T) T
}

// defaultTimeout bounds each attempt of a fetch unless Timeout says otherwise.
const defaultTimeout = 30 * time.Second

func defaultQueryConfig() queryConfig {
	return queryConfig{gcTime: 5 * time.Minute, retry: 3, timeout: defaultTimeout, maxRetryDelay: 30 * time.Second}
}

func nonNegative(name string, d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("qcache: %s(%v): negative duration", name, d))
	}
}

// StaleTime sets how long data stays fresh after it lands (default 0: stale
// at once, so every Get fetches, shared with any fetch in flight).
func StaleTime(d time.Duration) QueryOption {
	nonNegative("StaleTime", d)
	return func(c *queryConfig) { c.staleTime = d }
}

// GCTime sets how long an entry without observers is kept (default 5
// minutes), counted from its creation, its last settled fetch or the leaving
// of its last observer, whichever is latest.
func GCTime(d time.Duration) QueryOption {
	nonNegative("GCTime", d)
	return func(c *queryConfig) { c.gcTime = d }
}

// Retry sets how many times a failed fetch is retried after the first
// attempt (default 3). Errors that cannot succeed on retry (4xx other than
// 408 and 429, decode and validation errors) are never retried.
func Retry(n int) QueryOption {
	if n < 0 {
		panic(fmt.Sprintf("qcache: Retry(%d): negative", n))
	}
	return func(c *queryConfig) { c.retry = n }
}

// RetryDelay sets the delay before each retry. failureCount is 0 before the
// first retry, 1 before the second, and so on. The default is
// min(1s·2^failureCount, MaxRetryDelay), without jitter. A Retry-After header
// on the failed response takes precedence. Every delay is capped at
// MaxRetryDelay.
func RetryDelay(f func(failureCount int, err error) time.Duration) QueryOption {
	return func(c *queryConfig) { c.retryDelay = f }
}

// MaxConcurrentFetches bounds the attempts of the query's fetches that run
// at once to n, as WithMaxConcurrentFetches does for the whole client (both
// apply when both are set). It panics if n is not positive.
func MaxConcurrentFetches(n int) QueryOption {
	mustBePositive("MaxConcurrentFetches", n)
	return func(c *queryConfig) { c.maxFetches = n }
}

func mustBePositive(name string, n int) {
	if n <= 0 {
		panic(fmt.Sprintf("qcache: %s(%d): not positive", name, n))
	}
}

// RetryIf decides, after each failed attempt, whether to retry: failureCount
// is the number of attempts that failed before this one (0 after the first),
// err the error of this one. It replaces Retry's count and the default rule
// of what is retryable (TanStack's retry as a function); MaxRetryDelay still
// caps the wait, and a server asking for longer still ends the fetch.
func RetryIf(f func(failureCount int, err error) bool) QueryOption {
	return func(c *queryConfig) { c.retryIf = f }
}

// StaleIfError makes Get answer the cached data, with a nil error, when the
// fetch it waited for failed and the data is younger than d (by its
// DataUpdatedAt). The entry still holds the error: State and observers show
// it. A Get whose own context ended gets that error, not stale data.
// StaleWhileRevalidate keeps its meaning: it answers stale data without
// waiting at all.
func StaleIfError(d time.Duration) QueryOption {
	nonNegative("StaleIfError", d)
	return func(c *queryConfig) { c.staleIfError = d }
}

// CacheErrors caches failures for d (negative caching): a Get of a key
// whose last fetch failed with an error that match accepts, less than d
// ago, returns that error without a request. A nil match takes HTTP 404
// and 410 answers. Observers' refetches, Fetch and invalidation still
// fetch.
func CacheErrors(d time.Duration, match func(error) bool) QueryOption {
	nonNegative("CacheErrors", d)
	if match == nil {
		match = isGone
	}
	return func(c *queryConfig) { c.errorTTL, c.cacheErr = d, match }
}

// isGone reports whether err is an HTTP 404 or 410 answer.
func isGone(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusGone)
}

// MaxRetryDelay caps every wait before a retry, computed or sent by the
// server (default 30 s). A server whose Retry-After asks for longer does not
// park the entry: the fetch fails at once with its *HTTPError, observers see
// the error, and the next poll or refetch tries again. It panics if d is not
// positive.
func MaxRetryDelay(d time.Duration) QueryOption {
	if d <= 0 {
		panic(fmt.Sprintf("qcache: MaxRetryDelay(%v): not positive", d))
	}
	return func(c *queryConfig) { c.maxRetryDelay = d }
}

// Timeout bounds each attempt of a fetch: for NewQuery, from the request to
// the end of the body; for NewQueryFunc, through the context given to the
// function (default 30 s; 0: no bound). An attempt that runs out fails with
// an error wrapping context.DeadlineExceeded, and is retried like any
// transport error. The default also protects an entry from an upstream
// that never answers behind an http.Client without a Timeout of its own,
// such as http.DefaultClient, which would otherwise hold it in Fetching
// for good.
func Timeout(d time.Duration) QueryOption {
	nonNegative("Timeout", d)
	return func(c *queryConfig) { c.timeout = d }
}

// QueryName names the query in metrics, traces, logs and errors. By default
// NewQuery names a query after its method and endpoint ("GET
// /users/$userId") and NewQueryFunc after its key ("orders"). A name is a
// metric label: keep it bounded (never a key or a user's input). Two
// queries may share a name; their metrics then add up.
func QueryName(name string) QueryOption { return func(c *queryConfig) { c.name = name } }

// KeyPrefix puts parts in front of every key of the query, so that queries
// with the same paths on different services have distinct keys.
func KeyPrefix(parts ...string) QueryOption {
	parts = append([]string(nil), parts...)
	return func(c *queryConfig) { c.keyPrefix = parts }
}

// StaleWhileRevalidate makes Get answer stale data at once and refetch it in
// the background. Get still waits when there is no data at all.
func StaleWhileRevalidate() QueryOption {
	return func(c *queryConfig) { c.swr = true }
}

// ---------- observer options ----------

// UseOption configures an Observer in Query.Use and Observer.SetOptions.
type UseOption func(*useConfig)

// Trigger says when an event (mount, focus, reconnect) refetches.
type Trigger int

const (
	WhenStale Trigger = iota // refetch if the data is stale (default)
	Always                   // refetch whatever the data
	Never                    // do not refetch on this event
)

// String returns "WhenStale", "Always" or "Never".
func (t Trigger) String() string {
	switch t {
	case WhenStale:
		return "WhenStale"
	case Always:
		return "Always"
	case Never:
		return "Never"
	}
	return "Trigger(?)"
}

type useConfig struct {
	interval     time.Duration
	intervalFunc any // func(State[T]) time.Duration
	equal        any // func(a, b T) bool
	// The small fields together, so that an idle observer's config stays
	// small: Triggers as int8.
	onFocus, onReconnect, onMount int8
	background                    bool
	enabled                       bool
	deepEqual                     bool
	notify                        Notify // NotifyOn; 0: the observer's default
}

func defaultUseConfig() useConfig { return useConfig{enabled: true} }

// RefetchInterval polls: the observer refetches d after the entry's last
// state change. 0 turns polling off. It replaces a RefetchIntervalFunc.
func RefetchInterval(d time.Duration) UseOption {
	nonNegative("RefetchInterval", d)
	return func(c *useConfig) { c.interval, c.intervalFunc = d, nil }
}

// RefetchIntervalFunc polls with an interval computed from the state. f is
// asked again after every state change and when the data turns stale;
// returning 0 (or less) stops polling until a later answer says otherwise.
// It replaces a RefetchInterval. T must be the query's data type (also for
// UseSelect: f sees the entry's state, not the selected one), or Use
// panics; the method Query.RefetchIntervalFunc takes the same function
// checked by the compiler. A panic in f stops polling and is logged; it
// does not end the process.
func RefetchIntervalFunc[T any](f func(State[T]) time.Duration) UseOption {
	return func(c *useConfig) {
		c.interval, c.intervalFunc = 0, f
		if f == nil {
			c.intervalFunc = nil
		}
	}
}

// RefetchIntervalFunc is the package's RefetchIntervalFunc with f's type
// checked by the compiler against the query's: an observer of q (Use or
// UseSelect) cannot panic on it.
//
//	obs := getJob.Use(ctx, id, getJob.RefetchIntervalFunc(func(s qcache.State[Job]) time.Duration {
//		if s.Data.Done {
//			return 0
//		}
//		return time.Second
//	}))
func (q *Query[P, T]) RefetchIntervalFunc(f func(State[T]) time.Duration) UseOption {
	return RefetchIntervalFunc(f)
}

// RefetchIntervalInBackground keeps polling while the client is not focused
// (default false: interval ticks are skipped while unfocused).
func RefetchIntervalInBackground(on bool) UseOption {
	return func(c *useConfig) { c.background = on }
}

// RefetchOnFocus sets what a focus transition (SetFocused(true) after false)
// does (default WhenStale).
func RefetchOnFocus(t Trigger) UseOption { return func(c *useConfig) { c.onFocus = int8(t) } }

// RefetchOnReconnect sets what going back online (SetOnline(true) after
// false) does (default WhenStale).
func RefetchOnReconnect(t Trigger) UseOption { return func(c *useConfig) { c.onReconnect = int8(t) } }

// RefetchOnMount sets what Use does when the observer starts (default
// WhenStale).
func RefetchOnMount(t Trigger) UseOption { return func(c *useConfig) { c.onMount = int8(t) } }

// Enabled turns every automatic fetch of the observer on or off (default
// on). A disabled observer still fetches on Observer.Refetch.
func Enabled(on bool) UseOption { return func(c *useConfig) { c.enabled = on } }

// ---------- mutation options ----------

// MutationOption configures a Mutation in NewMutation.
type MutationOption func(*mutationConfig)

type mutationConfig struct {
	invalidates []Filter
	retry       int
	retryDelay  func(failureCount int, err error) time.Duration
	serial      bool   // queue Do calls per key
	scope       string // queue Do calls across mutations of this scope
	hooks       []mutationHook
}

// mutationHook is a typed hook kept untyped until NewMutation checks it
// against the mutation's types.
type mutationHook struct {
	kind string // "OnMutate", "OnSuccess", "OnError", "OnSettled"
	fn   any
}

func (c *mutationConfig) addHook(kind string, fn any, isNil bool) {
	if !isNil {
		c.hooks = append(c.hooks, mutationHook{kind, fn})
	}
}

// Invalidates adds filters that are invalidated after every Do that settles,
// successful or not, before Do returns: after a success because the server
// changed, after a failure because an optimistic update was rolled back to
// data that may be outdated and the server may have applied part of the
// change. Do waits for the refetches the invalidation starts (Filter.Refetch
// says which) until they settle or its context ends; their errors land in
// the entries' State, never in Do's result. An entry matched by several
// filters is invalidated once. Calls that never start (the client is
// closed, ctx has ended, p cannot be bound, ctx ends while waiting for a
// turn under Serial or MutationScope) invalidate nothing.
func Invalidates(filters ...Filter) MutationOption {
	filters = append([]Filter(nil), filters...)
	return func(c *mutationConfig) { c.invalidates = append(c.invalidates, filters...) }
}

// MutationRetry sets how many times a failed request of a mutation is
// retried after the first attempt (default 0: mutations are not retried,
// since they are usually not idempotent). As for queries, 4xx answers other
// than 408 and 429, decode and validation errors are never retried, and a
// Retry-After header sets the delay.
func MutationRetry(n int) MutationOption {
	if n < 0 {
		panic(fmt.Sprintf("qcache: MutationRetry(%d): negative", n))
	}
	return func(c *mutationConfig) { c.retry = n }
}

// MutationRetryDelay sets the delay before each retry of a mutation, as
// RetryDelay does for a query (default min(1s·2^failureCount, 30s)).
func MutationRetryDelay(f func(failureCount int, err error) time.Duration) MutationOption {
	return func(c *mutationConfig) { c.retryDelay = f }
}

// Serial makes Do calls of the mutation whose parameters have the same key
// (Mutation.Key) run one at a time, in the order they were called: each
// waits for the one before it to settle, hooks and invalidation included.
// Calls with different keys still run in parallel. Combined with
// MutationScope, the queue is shared by every mutation of the scope, per
// key.
func Serial() MutationOption {
	return func(c *mutationConfig) { c.serial = true }
}

// MutationScope makes Do calls of every mutation of the client given the
// same scope name run one at a time, in the order they were called, whatever
// their parameters (TanStack Query's scope.id). With Serial as well, the
// queue is per scope and key: calls of the scope's mutations on the same key
// run one at a time, calls on different keys in parallel. An empty name
// turns the scope off.
func MutationScope(name string) MutationOption {
	return func(c *mutationConfig) { c.scope = name }
}

// ---------- WebSocket options ----------

// WSOption configures a stream in Client.SubscribeWS.
type WSOption func(*wsConfig)

type wsConfig struct {
	minDelay, maxDelay time.Duration
	resync             Filter
	readLimit          int64
	pingInterval       time.Duration
	pingTimeout        time.Duration // 0: the ping interval
	onConnect          func(ctx context.Context, s *WSStream) error
	onError            func(error)
	dial               *websocket.DialOptions
	dialTimeout        time.Duration
	stableAfter        time.Duration // 0: maxDelay; see WSStableAfter in ws.go
	resyncMinInterval  time.Duration // see WSResyncMinInterval in ws.go
}

func defaultWSConfig() wsConfig {
	return wsConfig{
		minDelay:     500 * time.Millisecond,
		maxDelay:     30 * time.Second,
		readLimit:    1 << 20,
		pingInterval: 30 * time.Second,
		dialTimeout:  30 * time.Second,

		resyncMinInterval: 30 * time.Second,
	}
}

// WSReconnect sets the bounds of the delay before each reconnect (default
// 500ms and 30s): the delay doubles after every failed attempt, with jitter,
// and stays between min and max. It goes back to min once a link has
// stayed up for WSStableAfter (default max): a link that drops sooner, even
// after delivering messages, counts as a failed attempt. It panics unless
// 0 < min ≤ max.
func WSReconnect(min, max time.Duration) WSOption {
	if min <= 0 || max < min {
		panic(fmt.Sprintf("qcache: WSReconnect(%v, %v): want 0 < min <= max", min, max))
	}
	return func(c *wsConfig) { c.minDelay, c.maxDelay = min, max }
}

// WSResync sets the filter invalidated after every reconnect, because
// messages were missed while the link was down (default Filter{}: every
// entry, refetching the ones with an enabled observer). The first connect
// does not invalidate, and refetching resyncs are rate-limited by
// WSResyncMinInterval. Use Filter{Refetch: RefetchNone, Predicate: ...} to
// narrow or soften it.
func WSResync(f Filter) WSOption { return func(c *wsConfig) { c.resync = f } }

// WSReadLimit bounds the size of one message (default 1 MiB). A larger
// message is refused without being read into memory, reported, and the link
// is re-established. It panics unless n is positive.
func WSReadLimit(n int64) WSOption {
	if n <= 0 {
		panic(fmt.Sprintf("qcache: WSReadLimit(%d): not positive", n))
	}
	return func(c *wsConfig) { c.readLimit = n }
}

// WSOnConnect sets a function called after every connect, first and
// reconnects alike, before any message is read: the place to send subscribe
// messages with s.Send. ctx ends with the stream. An error (or a panic) is
// reported, counted in Stats().Errors, and the link is re-established after
// the backoff delay.
func WSOnConnect(f func(ctx context.Context, s *WSStream) error) WSOption {
	return func(c *wsConfig) { c.onConnect = f }
}

// WSOnError sets a function told of every error of the stream: refused or
// failed dials, dropped links, OnConnect failures and bad messages. It is
// called from the stream's goroutine, one call at a time, and must not block
// for long. It is not told of the stream's own end.
func WSOnError(f func(error)) WSOption { return func(c *wsConfig) { c.onError = f } }

// WSDialOptions sets the options of every dial (HTTP client, headers,
// subprotocols, compression). The stream does not modify o.
func WSDialOptions(o *websocket.DialOptions) WSOption {
	return func(c *wsConfig) { c.dial = o }
}

// WSDialTimeout bounds one handshake, from the TCP dial to the server's
// answer (default 30s): a server that accepts the connection and never
// answers is given up on after d, and dialled again after the backoff delay.
// It panics unless d is positive.
func WSDialTimeout(d time.Duration) WSOption {
	if d <= 0 {
		panic(fmt.Sprintf("qcache: WSDialTimeout(%v): not positive", d))
	}
	return func(c *wsConfig) { c.dialTimeout = d }
}

// WSPingInterval sets how often the stream pings the server to find a dead
// link that no read would notice (default 30s; 0 turns pinging off). A ping
// not answered within the ping timeout (by default the interval itself)
// drops the link, which is then re-established. It panics on a negative d.
func WSPingInterval(d time.Duration) WSOption {
	nonNegative("WSPingInterval", d)
	return func(c *wsConfig) { c.pingInterval = d }
}

// WSPingTimeout sets how long a ping may wait for its pong before the link
// is dropped (default: the ping interval). It panics unless d is positive.
func WSPingTimeout(d time.Duration) WSOption {
	if d <= 0 {
		panic(fmt.Sprintf("qcache: WSPingTimeout(%v): not positive", d))
	}
	return func(c *wsConfig) { c.pingTimeout = d }
}

// ---------- replication options ----------

// BusOption configures a client's end of its Bus in WithBus.
type BusOption func(*busConfig)

type busConfig struct {
	bus     Bus
	origin  string
	publish uint8 // bit 1<<EventKind per kind published
	queue   int
	onError func(error)
}

const allEventKinds = 1<<EventInvalidate | 1<<EventSetData | 1<<EventRemove

// WithBus connects the client to b: it publishes what happens to its
// entries and applies what other clients publish (see Bus). By default it
// publishes every kind of event (BusPublish narrows that), from a queue of
// 1024 events (BusQueue), under a random origin id (BusOrigin). NewClient
// then starts two goroutines, one publishing and one subscribed, which
// Close ends; Close first publishes what is still queued, for at most one
// second.
//
// Publishing never blocks the caller: events go to the queue, and when it is
// full they are dropped (counted in BusStats.Dropped). After an event was
// dropped or refused by the bus, the client publishes one invalidation of
// every entry once the bus takes events again, so that no replica keeps data
// that a lost event would have invalidated.
//
// What is applied from others is never published again; what the client
// does on its own (a WebSocket resync, InvalidateEvery, garbage collection,
// eviction) is published only when it goes through Client.Invalidate,
// Client.Remove or a query's SetData, Update, Invalidate, InvalidateAll or
// Remove.
func WithBus(b Bus, opts ...BusOption) ClientOption {
	if b == nil {
		panic("qcache: WithBus: nil Bus")
	}
	cfg := busConfig{bus: b, publish: allEventKinds, queue: 1024}
	for _, o := range opts {
		o(&cfg)
	}
	return func(c *clientConfig) {
		cfg := cfg
		c.bus = &cfg
	}
}

// BusPublish sets the kinds of event the client publishes (default all
// three). BusPublish(EventInvalidate, EventRemove) keeps data off the bus:
// other replicas then refetch instead of receiving values. With no kind the
// client only receives. The client applies every kind it receives,
// whatever it publishes.
func BusPublish(kinds ...EventKind) BusOption {
	var mask uint8
	for _, k := range kinds {
		if !k.valid() {
			panic(fmt.Sprintf("qcache: BusPublish: unknown event kind %d", int(k)))
		}
		mask |= 1 << k
	}
	return func(c *busConfig) { c.publish = mask }
}

// BusOrigin sets the client's origin id, carried by its events so that it
// ignores them when they come back (default: 16 random hex digits). Two
// clients on one bus must not share it.
func BusOrigin(id string) BusOption { return func(c *busConfig) { c.origin = id } }

// BusQueue sets how many events may wait to be published (default 1024).
// It panics unless n is positive.
func BusQueue(n int) BusOption {
	if n <= 0 {
		panic(fmt.Sprintf("qcache: BusQueue(%d): not positive", n))
	}
	return func(c *busConfig) { c.queue = n }
}

// BusOnError sets a function told of every bus error: events that could not
// be encoded or published, events received that were invalid or whose data
// did not decode into the query's T, and Subscribe failures. It is called
// from the client's bus goroutines and from callers of SetData, and must not
// block. Every such error is also logged (WithLogger) at Warn level.
func BusOnError(f func(error)) BusOption { return func(c *busConfig) { c.onError = f } }

// Local keeps a query off the client's Bus: its SetData, Update, Invalidate,
// InvalidateAll and Remove are not published, and SetData events of other
// clients are not applied to it (for a T that cannot travel as JSON, or
// data that must stay in the process). Filters are not queries: this
// client's Client.Invalidate and Client.Remove are published whatever they
// match, and the invalidations and removals of other clients reach the
// query's entries whose keys they match.
func Local() QueryOption { return func(c *queryConfig) { c.local = true } }
