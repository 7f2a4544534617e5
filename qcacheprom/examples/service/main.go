// Command service is a small service that caches a demo API with qcache and
// serves its metrics for Prometheus at /metrics, on loopback. It prints the
// URL to scrape and runs until interrupted (or for -for).
//
//	go run ./examples/service                  # in qcacheprom/; then curl the URL it prints
//	go run ./examples/service -addr 127.0.0.1:0 -for 10s
//
// It lives in the qcacheprom module, not in the root module's examples/,
// so that the root module does not depend on the Prometheus client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheprom"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli parses args, runs the service until ctx ends or -for has passed, and
// returns the exit code.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:2112", "serve /metrics on `host:port` (port 0: any free port)")
	runFor := fs.Duration("for", 0, "stop after this `duration` (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "service: no arguments expected")
		return 2
	}
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}
	if err := run(ctx, *addr, stdout); err != nil {
		fmt.Fprintln(stderr, "service:", err)
		return 1
	}
	return 0
}

// run serves /metrics on addr while a workload reads users through qcache.
func run(ctx context.Context, addr string, stdout io.Writer) error {
	api := demoAPI()
	defer api.Close()

	// The wiring a service needs: a Collector, its hooks on the client,
	// the client watched, the Collector registered.
	metrics := qcacheprom.New()
	client := qcache.NewClient(qcache.WithBaseURL(api.URL), qcache.WithHooks(metrics.Hooks()))
	defer client.Close()
	metrics.Watch(client)
	reg := prometheus.NewRegistry() // a service may use prometheus.DefaultRegisterer instead
	reg.MustRegister(metrics, collectors.NewGoCollector())

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "metrics: http://%s/metrics\n", ln.Addr())

	type User struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"},
		qcache.StaleTime(2*time.Second), qcache.Retry(1),
		qcache.RetryDelay(func(int, error) time.Duration { return 100 * time.Millisecond }))
	o := users.Use(ctx, "1", qcache.RefetchInterval(time.Second)) // an observer, polling
	defer o.Close()
	var wg sync.WaitGroup
	for range 4 { // requests of the service, reading users through the cache
		wg.Go(func() {
			for {
				users.Get(ctx, fmt.Sprint(rand.IntN(20)))
				select {
				case <-ctx.Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
	<-ctx.Done()
	wg.Wait()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// demoAPI serves GET /users/{id} on loopback in 10–30 ms; user 13 fails
// one time in two, so that the metrics show retries and errors.
func demoAPI() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/users/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		time.Sleep(time.Duration(10+rand.IntN(20)) * time.Millisecond)
		if id == "13" && rand.IntN(2) == 0 {
			http.Error(w, "unlucky", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, `{"id":%q,"name":"user %s"}`, id, id)
	}))
}
