package qcacheprom_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheprom"
)

// A Collector installed on a client and registered. A service registers it
// with prometheus.MustRegister and serves promhttp.Handler(); the example
// uses a registry of its own, and prints a few lines of one scrape.
func Example() {
	metrics := qcacheprom.New()
	client := qcache.NewClient(qcache.WithHooks(metrics.Hooks()))
	defer client.Close()
	metrics.Watch(client)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)

	users := qcache.NewQueryFunc(client, qcache.Key{"users"}, func(ctx context.Context, id int) (string, error) {
		return fmt.Sprint("user ", id), nil
	}, qcache.StaleTime(time.Minute))
	ctx := context.Background()
	users.Get(ctx, 1) // a miss: fetched
	users.Get(ctx, 1) // a hit
	users.Get(ctx, 2) // a miss

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		for _, name := range []string{"qcache_entries{", "qcache_hits_total{", "qcache_misses_total{"} {
			if strings.HasPrefix(line, name) {
				fmt.Print(line)
			}
		}
	}
	// Output:
	// qcache_entries{query="users"} 2
	// qcache_hits_total{query="users"} 1
	// qcache_misses_total{query="users"} 2
}
