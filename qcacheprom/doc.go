// Package qcacheprom exports the metrics of qcache clients to Prometheus.
//
// A Collector counts what the hooks of a client tell it (fetches by
// outcome, their durations, evictions by reason, WebSocket and bus events)
// and, at each scrape, reads the per-query counters and gauges that the
// clients it watches keep themselves (hits, misses, entries, observers,
// fetches in flight):
//
//	metrics := qcacheprom.New()
//	client := qcache.NewClient(
//		qcache.WithBaseURL("https://api.example.com"),
//		qcache.WithHooks(metrics.Hooks()),
//	)
//	defer client.Close()
//	metrics.Watch(client)
//	prometheus.MustRegister(metrics)
//	http.Handle("/metrics", promhttp.Handler())
//
// Every metric is named qcache_… and labelled by query name (qcache.QueryName;
// NewQuery names a query after its method and URL template, NewQueryFunc
// after its key prefix), which is bounded: keys never become labels. The
// README lists the metrics.
//
// It is a sub-module, github.com/qcache-go/qcache/qcacheprom, so that the
// root module does not depend on the Prometheus client.
package qcacheprom
