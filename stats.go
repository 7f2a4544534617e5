package qcache

import "sync/atomic"

// Counters kept per query and per client; the query's are added to the
// client's as they happen (cost: one more atomic add on paths that already
// take a lock or start a goroutine). Hits are the exception: they are
// counted per query only, on a striped counter, and the client's are their
// sum.
const (
	nMisses = iota
	nStaleServed
	nFetches
	nFetchErrors
	nFetchSuccesses
	nFetchCancelled
	nRetries
	nDedup
	nEvictions
	nNotModified
	nCounters
)

type counters [nCounters]atomic.Uint64

// count adds one to counter i of the query and of its client.
func (q *Query[P, T]) count(i int) {
	q.n[i].Add(1)
	q.c.n[i].Add(1)
}

// QueryStats are the counters of one query since it was made, with its
// name, for metrics labelled by query. Every fetch that has settled counts
// in exactly one of FetchSuccesses, FetchErrors and FetchCancelled.
type QueryStats struct {
	Name           string `json:"name"`
	Entries        int    `json:"entries"`         // now
	Observers      int    `json:"observers"`       // now
	InFlight       int    `json:"in_flight"`       // fetches started and not settled, now
	Hits           uint64 `json:"hits"`            // Get answered from memory
	Misses         uint64 `json:"misses"`          // Get that waited for a fetch
	StaleServed    uint64 `json:"stale_served"`    // Get answered with stale data (StaleWhileRevalidate)
	Fetches        uint64 `json:"fetches"`         // fetches started
	FetchSuccesses uint64 `json:"fetch_successes"` // stored, or superseded by SetData or Remove
	FetchErrors    uint64 `json:"fetch_errors"`    // failed after their retries
	FetchCancelled uint64 `json:"fetch_cancelled"` // Cancel, Client.Close, or nobody wanted them
	Retries        uint64 `json:"retries"`         // attempts retried
	Deduplicated   uint64 `json:"deduplicated"`    // callers that joined a fetch in flight
	Evictions      uint64 `json:"evictions"`       // entries evicted by WithMaxEntries
	NotModified    uint64 `json:"not_modified"`    // 304 answers that kept the data without decoding it (also in FetchSuccesses)
}

// Stats returns the query's counters.
func (q *Query[P, T]) Stats() QueryStats {
	s := QueryStats{
		Name:           q.name,
		Entries:        int(q.nEntries.Load()),
		Observers:      int(q.nObservers.Load()),
		Hits:           q.hits.load(),
		Misses:         q.n[nMisses].Load(),
		StaleServed:    q.n[nStaleServed].Load(),
		FetchSuccesses: q.n[nFetchSuccesses].Load(),
		FetchErrors:    q.n[nFetchErrors].Load(),
		FetchCancelled: q.n[nFetchCancelled].Load(),
		Retries:        q.n[nRetries].Load(),
		Deduplicated:   q.n[nDedup].Load(),
		Evictions:      q.n[nEvictions].Load(),
		NotModified:    q.n[nNotModified].Load(),
	}
	// Fetches last: a fetch that settled after its count was read must not
	// make InFlight negative.
	s.Fetches = q.n[nFetches].Load()
	s.InFlight = int(s.Fetches - min(s.Fetches, s.FetchSuccesses+s.FetchErrors+s.FetchCancelled))
	return s
}

// QueryStats returns the Stats of every query of the client, in the order
// they were made: what a metrics collector reads at each scrape.
func (c *Client) QueryStats() []QueryStats {
	qs := c.queryList()
	out := make([]QueryStats, len(qs))
	for i, q := range qs {
		out[i] = q.stats()
	}
	return out
}
