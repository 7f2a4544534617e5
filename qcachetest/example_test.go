package qcachetest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcachetest"
	"github.com/stretchr/testify/assert"
)

// TestExamplePollingInABubble is the example of testing a query in
// virtual time (the README and the package doc show it too). It is a test,
// not an Example function: synctest.Test needs the test's *testing.T, which
// an Example does not have. The Example functions below show the same kit
// on the real clock.
func TestExamplePollingInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var api qcachetest.Upstream
		api.Script("GET /users/{id}",
			qcachetest.Reply{Status: 503, Header: http.Header{"Retry-After": {"2"}}},
			qcachetest.Reply{Body: User{ID: "42", Name: "Ada"}, Latency: 500 * time.Millisecond},
		)
		client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
			qcache.WithHTTPClient(api.Client()))
		defer client.Close()
		users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"})

		start := time.Now()
		obs := users.Use(t.Context(), "42", qcache.RefetchInterval(10*time.Second))
		defer obs.Close()
		time.Sleep(time.Minute) // virtual: returns at once
		synctest.Wait()         // and nothing is left to happen now

		// A 503 at 0 s, retried 2 s later (Retry-After) and answered at
		// 2.5 s; then a fetch 10 s after each one settled.
		var at []time.Duration
		for _, r := range api.Requests("/users/42") {
			at = append(at, r.Time.Sub(start))
		}
		assert.Equal(t, []time.Duration{0, 2 * time.Second, 12500 * time.Millisecond,
			23 * time.Second, 33500 * time.Millisecond, 44 * time.Second, 54500 * time.Millisecond}, at)
		assert.Equal(t, 7, api.Count("/users/42"))
		assert.Equal(t, "Ada", obs.State().Data.Name)
	})
}

// Any http.Handler can answer a qcache client through Transport, in the
// same process (here on the real clock): the second Get is answered from
// memory.
func ExampleTransport() {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.Method, r.URL.Path, r.Host)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(User{ID: r.PathValue("id"), Name: "Ada"})
	})
	mux := http.NewServeMux()
	mux.Handle("GET /users/{id}", api)
	client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
		qcache.WithHTTPClient(&http.Client{Transport: qcachetest.Transport(mux)}))
	defer client.Close()
	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"},
		qcache.StaleTime(time.Minute))

	ctx := context.Background()
	u, err := users.Get(ctx, "42")
	fmt.Println(u.ID, u.Name, err)
	u, err = users.Get(ctx, "42")
	fmt.Println(u.ID, u.Name, err)
	// Output:
	// GET /users/42 api.test
	// 42 Ada <nil>
	// 42 Ada <nil>
}

// A script: the first request gets a 503 asking to retry at once, every
// later one the data. qcache retries, and the upstream records both.
func ExampleUpstream() {
	var api qcachetest.Upstream
	api.Script("GET /users/{id}",
		qcachetest.Reply{Status: 503, Header: http.Header{"Retry-After": {"0"}}},
		qcachetest.Reply{Body: User{ID: "42", Name: "Ada"}},
	)
	client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
		qcache.WithHTTPClient(api.Client()))
	defer client.Close()
	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"})

	u, err := users.Get(context.Background(), "42")
	fmt.Println(u.Name, err)
	for _, r := range api.Requests("GET /users/{id}") {
		fmt.Println(r.Method, r.Path, r.Header.Get("Accept"))
	}
	// Output:
	// Ada <nil>
	// GET /users/42 application/json
	// GET /users/42 application/json
}

// ScriptFunc computes each reply, here from the request's path value and
// the number of requests so far.
func ExampleUpstream_ScriptFunc() {
	var api qcachetest.Upstream
	api.ScriptFunc("GET /users/{id}", func(n int, r *http.Request) qcachetest.Reply {
		return qcachetest.Reply{Body: User{ID: r.PathValue("id"), Name: fmt.Sprintf("Ada v%d", n)}}
	})
	client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
		qcache.WithHTTPClient(api.Client()))
	defer client.Close()
	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"})

	ctx := context.Background()
	for range 2 {
		u, _ := users.Fetch(ctx, "7")
		fmt.Println(u.ID, u.Name)
	}
	// Output:
	// 7 Ada v1
	// 7 Ada v2
}

// WaitIdle lets a real-clock test wait for background fetches, here the one
// that Prefetch starts.
func ExampleWaitIdle() {
	var api qcachetest.Upstream
	api.Script("GET /users/{id}", qcachetest.Reply{Body: User{ID: "42", Name: "Ada"}, Latency: 20 * time.Millisecond})
	client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
		qcache.WithHTTPClient(api.Client()))
	defer client.Close()
	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"})

	users.Prefetch("42") // returns at once
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := qcachetest.WaitIdleContext(ctx, client); err != nil {
		fmt.Println(err)
		return
	}
	u, ok := users.Peek("42")
	fmt.Println(u.Name, ok)
	// Output:
	// Ada true
}
