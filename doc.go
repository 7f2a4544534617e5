// Package qcache is a query cache for Go services that read other APIs: the
// Go counterpart of TanStack Query.
//
// A service declares a typed query once, from an endpoint, and then asks it
// for data instead of calling the API. The cache answers from memory while
// the data is fresh, shares one request among every caller that wants the
// same key, keeps data fresh in the background (polling, refetch on focus
// and reconnect, invalidation, WebSocket pushes) and tells observers when it
// changes.
//
//	client := qcache.NewClient(qcache.WithBaseURL("https://api.example.com"))
//	defer client.Close()
//
//	getUser := qcache.NewQuery[string, User](client,
//		qcache.Endpoint{URL: "/users/$userId"}, qcache.StaleTime(30*time.Second))
//
//	u, err := getUser.Get(ctx, "42") // GET /users/42 once, then from memory for 30 s
//
//	obs := getUser.Use(ctx, "42", qcache.RefetchInterval(5*time.Second)) // poll
//	defer obs.Close()
//	for s := range obs.Changes() {
//		fmt.Println(s.Data.Name, s.IsRefetching())
//	}
//
// # Map of the package
//
// What flows where: an endpoint becomes a Query; each parameter value gets
// an entry; an entry runs at most one fetch; its states go to observers
// and hooks.
//
//	query.go     Query, NewQuery, NewQueryFunc: Get, Fetch, SetData … (endpoint → Query)
//	batch.go     GetMany, NewQueryBatch: many keys at once
//	entrymap.go  a query's entries, looked up without a lock (Query → entry)
//	keyindex.go  a query's entries by key prefix, for filters (Filter → entries)
//	cache.go     the entry: its state, its one fetch, retries, gc (entry → fetch)
//	fetchctx.go  the contexts a fetch function gets, without a channel or timer until one is asked for
//	http.go      the HTTP fetch: URL, headers, redirects, conditional requests, decoding
//	refetch.go   Observer: polling, focus, reconnect, Changes (entry → observers)
//	invalidate.go, mutation.go, ws.go, bus.go   what changes entries from outside
//	hydrate.go, persist.go   Dehydrate, Hydrate, FilePersister: a cache to a file and back, with its age
//	shared.go    the shared tier under the cache, for replicas (WithSharedStore)
//	hooks.go, stats.go   Hooks, Stats, QueryStats (entry → metrics, traces, logs)
//	introspect.go   WithHistory, entries' histories and the view package inspect draws
//	client.go, gc.go, stale.go, clock.go   the client, its deadline queue (gc), the turns to stale, entry times
//	options.go, state.go, errors.go   client and query options, State, errors
//
// # Concepts
//
// Entries. A Query[P, T] holds one entry per parameter value P. P binds the
// URL template: a struct with `path:"name"` and `query:"name"` tags, a string
// or integer for a template with one variable, struct{} for none. T is
// decoded from the JSON body and validated when it has a Validate method.
// NewQueryFunc makes the same kind of query over any other source.
//
// Keys. Every entry has a Key: the query's KeyPrefix, the bound path split on
// "/", then one segment with the canonical query string:
// "/users/$userId" with userId=42 and page=2 is Key{"users", "42", "?page=2"}.
// A Filter selects entries by key prefix (segment by segment), exactly, or
// by predicate, across every query of a client.
//
// Freshness. Data is fresh for StaleTime after it lands (default 0: stale at
// once). Get answers fresh data from memory without allocating or locking;
// otherwise it fetches and waits, sharing the fetch in flight. Invalidation
// and failed fetches make data stale whatever StaleTime says. Entries without
// observers are dropped GCTime after they were last needed (default 5 min).
//
// Fetching. At most one fetch per entry is in flight. Get, Prefetch and the
// automatic refetches of observers join it. Fetch, Observer.Refetch,
// Client.Refetch and invalidation need data requested after they asked: they
// wait for one follow-up fetch that starts when the one in flight settles,
// so a storm of them costs at most one fetch in flight and one waiting.
// SetData wins over every fetch that started before it. Failed fetches are
// retried (3 times, 1 s, 2 s, 4 s; never for 4xx other than 408 and 429, nor
// for decode errors); Retry-After is honoured up to MaxRetryDelay (30 s), and
// a server asking for longer fails the fetch at once. Cancel, Client.Close and
// the last waiter or observer leaving end a fetch at once: the entry goes back
// to its state before it, and a late answer is dropped.
//
// Observers. Query.Use starts an Observer: it fetches on start when the data
// is stale, polls (RefetchInterval, or RefetchIntervalFunc computed from the
// state), refetches when the client regains focus or comes back online, and
// delivers the newest state on Changes. SetOptions changes all of it live.
// UseSelect observes one value derived from the data, and NotifyOn chooses
// what wakes Changes (data, status, fetch status, error, or any change);
// SetParams moves an observer to another key, showing the previous data as
// a placeholder until the new key has its own. Query.All lists a query's
// entries and Query.UpdateWhere patches those a predicate selects. Values
// handed out are shared with the cache: modify copies, or give the query a
// Clone.
//
// Invalidation. Client.Invalidate marks entries stale and refetches the
// observed ones; InvalidateEvery does it on a ticker. Mutations invalidate
// the filters they name when they settle, whether they succeeded or not.
//
// Warm restarts. Client.Dehydrate writes the entries that hold data, with
// their age, and Client.Hydrate puts them back into the queries declared
// with the same names, never over newer data; FilePersister does both with
// a file, atomically, so that a restarted service starts warm.
//
// WebSocket. Client.SubscribeWS reads a socket and hands each message to a
// handler (SetDataHandler, InvalidateHandler, Route), reconnecting with
// backoff and invalidating what may have been missed after each reconnect.
//
// Errors. Non-2xx answers are *HTTPError, undecodable or invalid bodies
// *DecodeError; the cached data stays in both cases. A path value that is
// empty, "." or ".." (in any escaping) is refused before any request with a
// *RequestError wrapping ErrInvalidPathValue. Every call after
// Client.Close returns ErrClosed. Malformed endpoints panic in NewQuery, as
// malformed patterns do in http.ServeMux.
//
// # Options
//
// An option's name says what it configures. Client options, given to
// NewClient, start with With (WithBaseURL, WithBus); query options, given
// to NewQuery, NewQueryFunc, NewQueryBatch or WithQueryDefaults, are bare
// (StaleTime, Retry, Local); observer options, given to Use, UseSelect and
// Observer.SetOptions, are bare too (RefetchInterval, Enabled, NotifyOn).
// WebSocket options start with WS (WSReconnect), bus options with Bus
// (BusPublish), mutation options with Mutation (MutationInvalidates,
// MutationOnSuccess). Each feature declares its options in its own file
// (ws.go, bus.go, mutation.go, refetch.go and select.go); options.go holds
// the client and query options and their defaults.
//
// # Differences from TanStack Query
//
// Polling counts each interval from the entry's last state change, so with
// RefetchInterval(5s) and a fetch that takes 1 s, fetches start 6 s apart
// (TanStack's setInterval would start them 5 s apart, and stack them when
// the upstream is slower than the interval). Explicit refetches do not
// cancel the fetch in flight (TanStack cancels and
// restarts, which can starve under a stream of invalidations); SetData is
// never overwritten by an older fetch (TanStack asks for cancelQueries
// first); the interval function is asked again when data turns stale, not
// only after fetches; focus is whatever the service says it is (SetFocused).
package qcache
