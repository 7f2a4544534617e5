// Command basic is a first tour of qcache: it starts a small user API on
// loopback, declares one query over it, and shows what the cache does with
// Get, stale time, shared fetches and SetData. It exits by itself.
//
//	go run ./examples/basic
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache"
)

type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func main() {
	if err := run(os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run is the whole tour, printing to out.
func run(out io.Writer) error {
	// The upstream: GET /users/{id}, 50 ms per request, counting requests.
	var requests atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		time.Sleep(50 * time.Millisecond)
		id := strings.TrimPrefix(r.URL.Path, "/users/")
		fmt.Fprintf(out, "  upstream: request %d: GET %s\n", n, r.URL.Path)
		json.NewEncoder(w).Encode(User{ID: id, Name: "Ada #" + id})
	}))
	defer api.Close()

	client := qcache.NewClient(qcache.WithBaseURL(api.URL))
	defer client.Close()

	// Declared once: data is fresh for 300 ms after it lands.
	getUser := qcache.NewQuery[string, User](client,
		qcache.Endpoint{URL: "/users/$userId"}, qcache.StaleTime(300*time.Millisecond))
	ctx := context.Background()

	fmt.Fprintln(out, "1. The first Get fetches:")
	u, err := getUser.Get(ctx, "42")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  got %+v\n", u)

	fmt.Fprintln(out, "2. A Get while the data is fresh answers from memory (no request):")
	u, _ = getUser.Get(ctx, "42")
	fmt.Fprintf(out, "  got %+v, upstream requests so far: %d\n", u, requests.Load())

	fmt.Fprintln(out, "3. Once stale, 20 concurrent Gets share one request:")
	time.Sleep(350 * time.Millisecond)
	fmt.Fprintf(out, "  stale: %v\n", getUser.State("42").IsStale)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { getUser.Get(ctx, "42") })
	}
	wg.Wait()
	fmt.Fprintf(out, "  upstream requests so far: %d\n", requests.Load())

	fmt.Fprintln(out, "4. SetData (say, from a push) makes data fresh without a request:")
	getUser.SetData("42", User{ID: "42", Name: "Ada Lovelace"})
	u, _ = getUser.Get(ctx, "42")
	fmt.Fprintf(out, "  got %+v, upstream requests so far: %d\n", u, requests.Load())

	st := client.Stats()
	fmt.Fprintf(out, "Stats: %d hits, %d misses, %d fetches, %d callers shared a fetch in flight\n",
		st.Hits, st.Misses, st.Fetches, st.Deduplicated)
	return nil
}
