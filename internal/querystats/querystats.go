// Package querystats adds up the per-query counters of several clients by
// query name, for the metrics adapters (qcacheprom, qcacheotel), which read
// them at each scrape.
package querystats

import "github.com/qcache-go/qcache"

// ByName returns the names of the queries of clients, in the order first
// seen, and their QueryStats added up by name: queries that share a name,
// in one client or several, count as one.
func ByName(clients []*qcache.Client) (names []string, sums map[string]*qcache.QueryStats) {
	sums = map[string]*qcache.QueryStats{}
	for _, c := range clients {
		for _, s := range c.QueryStats() {
			sum, ok := sums[s.Name]
			if !ok {
				names = append(names, s.Name)
				sums[s.Name] = &s
				continue
			}
			add(sum, &s)
		}
	}
	return names, sums
}

// add adds the counters and gauges of s to sum.
func add(sum, s *qcache.QueryStats) {
	sum.Entries += s.Entries
	sum.Observers += s.Observers
	sum.InFlight += s.InFlight
	sum.Hits += s.Hits
	sum.Misses += s.Misses
	sum.StaleServed += s.StaleServed
	sum.Fetches += s.Fetches
	sum.FetchSuccesses += s.FetchSuccesses
	sum.FetchErrors += s.FetchErrors
	sum.FetchCancelled += s.FetchCancelled
	sum.Retries += s.Retries
	sum.Deduplicated += s.Deduplicated
	sum.Evictions += s.Evictions
	sum.NotModified += s.NotModified
}
