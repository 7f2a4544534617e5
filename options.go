package qcache

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"time"
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
	bus              *busConfig  // WithBus
	hooks            Hooks       // WithHooks
	maxFetches       int         // WithMaxConcurrentFetches
	history          int         // WithHistory (introspect.go)
	shared           SharedStore // WithSharedStore
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
	mustBePositive("WithMaxResponseBytes", n)
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

// mustBePositiveDuration panics, naming the option, unless d is positive.
func mustBePositiveDuration(name string, d time.Duration) {
	if d <= 0 {
		panic(fmt.Sprintf("qcache: %s(%v): not positive", name, d))
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
// MaxRetryDelay. A RetryDelay that panics gives the retry up: the fetch
// fails with the error it retried, and the panic is logged.
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

func mustBePositive[N int | int64](name string, n N) {
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
	mustBePositiveDuration("MaxRetryDelay", d)
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

// Local keeps a query's data in the process (for a T that cannot travel as
// JSON, or data that must not leave it). The query is kept off the client's
// Bus: its SetData, Update, Invalidate, InvalidateAll and Remove are not
// published, and SetData events of other clients are not applied to it. It
// takes no part in the shared tier (WithSharedStore), and Dehydrate (so
// FilePersister) leaves its entries out. Filters are not queries: this
// client's Client.Invalidate and Client.Remove are published whatever they
// match, and the invalidations and removals of other clients reach the
// query's entries whose keys they match.
func Local() QueryOption { return func(c *queryConfig) { c.local = true } }
