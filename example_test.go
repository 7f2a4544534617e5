package qcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache"
)

type User struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
}

// versions is a fake upstream for the examples: every call answers the next
// version of a user, and the first few calls are printed (later ones are not,
// so that the output does not depend on how fast the example stops).
type versions struct {
	n     atomic.Int32
	print int32
}

func (v *versions) fetch(ctx context.Context, id string) (User, error) {
	n := v.n.Add(1)
	if n <= v.print {
		fmt.Printf("fetch %d\n", n)
	}
	return User{ID: id, Name: "Ada", Status: fmt.Sprintf("v%d", n)}, nil
}

// waitFor reads an observer's states until one satisfies ok.
func waitFor(o *qcache.Observer[User], ok func(qcache.State[User]) bool) qcache.State[User] {
	for s := range o.Changes() {
		if ok(s) {
			return s
		}
	}
	return o.State()
}

// atLeast is true of a settled state holding version n or a later one: a
// slow reader of Changes may miss intermediate states.
func atLeast(n int) func(qcache.State[User]) bool {
	return func(s qcache.State[User]) bool {
		var v int
		fmt.Sscanf(s.Data.Status, "v%d", &v)
		return v >= n && !s.IsFetching()
	}
}

func ExampleNewQuery() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("GET", r.URL.Path)
		id := strings.TrimPrefix(r.URL.Path, "/users/")
		json.NewEncoder(w).Encode(User{ID: id, Name: "Ada"})
	}))
	defer api.Close()
	client := qcache.NewClient(qcache.WithBaseURL(api.URL))
	defer client.Close()

	getUser := qcache.NewQuery[string, User](client,
		qcache.Endpoint{URL: "/users/$userId"}, qcache.StaleTime(time.Minute))
	u, _ := getUser.Get(context.Background(), "42")
	fmt.Println(u.Name, getUser.Key("42"))
	u, _ = getUser.Get(context.Background(), "42") // fresh: from memory
	fmt.Println(u.Name, client.Stats().Hits)
	// Output:
	// GET /users/42
	// Ada users/42
	// Ada 1
}

// Polling: refetchInterval: 5000.
func ExampleQuery_Use_polling() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 3}
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch)

	obs := getUser.Use(context.Background(), "42", qcache.RefetchInterval(10*time.Millisecond))
	defer obs.Close()
	waitFor(obs, atLeast(3))
	fmt.Println("the observer has seen the third version")
	// Output:
	// fetch 1
	// fetch 2
	// fetch 3
	// the observer has seen the third version
}

// Conditional polling: refetchInterval: isActive ? 5000 : false.
func ExampleQuery_Use_conditionalPolling() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 3}
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch)
	interval := func(active bool) time.Duration {
		if active {
			return 10 * time.Millisecond
		}
		return 0
	}

	obs := getUser.Use(context.Background(), "42", qcache.RefetchInterval(interval(false)))
	defer obs.Close()
	waitFor(obs, atLeast(1))
	time.Sleep(50 * time.Millisecond)
	fmt.Println("inactive, fetches:", src.n.Load())

	obs.SetOptions(qcache.RefetchInterval(interval(true)))
	waitFor(obs, atLeast(3))
	obs.SetOptions(qcache.RefetchInterval(interval(false)))
	fmt.Println("active again, then inactive")
	// Output:
	// fetch 1
	// inactive, fetches: 1
	// fetch 2
	// fetch 3
	// active again, then inactive
}

// Refetch on focus: refetchOnWindowFocus: true.
func ExampleQuery_Use_refetchOnFocus() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 2}
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch) // StaleTime 0: stale at once

	obs := getUser.Use(context.Background(), "42", qcache.RefetchOnFocus(qcache.WhenStale))
	defer obs.Close()
	waitFor(obs, atLeast(1))
	client.SetFocused(false) // the service loses "focus" (say, a leader lease)
	client.SetFocused(true)  // regains it: stale data is refetched
	s := waitFor(obs, atLeast(2))
	fmt.Println("after focus:", s.Data.Status)
	// Output:
	// fetch 1
	// fetch 2
	// after focus: v2
}

// Manual refetch: refetch() with isRefetching.
func ExampleQuery_Use_manualRefetch() {
	client := qcache.NewClient()
	defer client.Close()
	release := make(chan struct{})
	var calls atomic.Int32
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, func(ctx context.Context, id string) (User, error) {
		n := calls.Add(1)
		if n > 1 {
			<-release // the refetch is slow
		}
		return User{ID: id, Status: fmt.Sprintf("v%d", n)}, nil
	}, qcache.StaleTime(time.Minute))

	obs := getUser.Use(context.Background(), "42")
	defer obs.Close()
	waitFor(obs, atLeast(1))

	done := make(chan qcache.State[User])
	go func() {
		s, _ := obs.Refetch(context.Background()) // the button's onClick
		done <- s
	}()
	s := waitFor(obs, func(s qcache.State[User]) bool { return s.IsRefetching() })
	fmt.Println("refetching:", s.IsRefetching(), "showing", s.Data.Status)
	close(release)
	s = <-done
	fmt.Println("refetching:", s.IsRefetching(), "showing", s.Data.Status)
	// Output:
	// refetching: true showing v1
	// refetching: false showing v2
}

// An interval computed from the data: poll a job until it is done.
func ExampleRefetchIntervalFunc() {
	client := qcache.NewClient()
	defer client.Close()
	var calls atomic.Int32
	getJob := qcache.NewQueryFunc(client, qcache.Key{"jobs"}, func(ctx context.Context, id string) (string, error) {
		if calls.Add(1) < 3 {
			return "running", nil
		}
		return "done", nil
	})

	obs := getJob.Use(context.Background(), "build-1", qcache.RefetchIntervalFunc(func(s qcache.State[string]) time.Duration {
		if s.Data == "done" {
			return 0 // stop polling
		}
		return 10 * time.Millisecond
	}))
	defer obs.Close()
	for s := range obs.Changes() {
		if s.Data == "done" {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
	fmt.Println("fetches:", calls.Load())
	// Output:
	// fetches: 3
}

// Refetch on an interval only while the data is stale:
// refetchInterval: (query) => stale ? 5000 : false.
func ExampleQuery_Use_refetchWhileStale() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 3}
	const staleTime = 30 * time.Millisecond
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch, qcache.StaleTime(staleTime))

	obs := getUser.Use(context.Background(), "42", getUser.RefetchIntervalFunc(func(s qcache.State[User]) time.Duration {
		if time.Since(s.DataUpdatedAt) >= staleTime {
			return 10 * time.Millisecond
		}
		return 0 // fresh: no polling
	}))
	defer obs.Close()
	waitFor(obs, atLeast(3))
	fmt.Println("the observer has seen the third version")
	// Output:
	// fetch 1
	// fetch 2
	// fetch 3
	// the observer has seen the third version
}

// Invalidate on an interval: setInterval(() => invalidate(...), 30000).
func ExampleClient_InvalidateEvery() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 3}
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch, qcache.StaleTime(qcache.Forever))

	obs := getUser.Use(context.Background(), "42") // invalidation refetches observed entries
	defer obs.Close()
	stop := client.InvalidateEvery(context.Background(), 10*time.Millisecond, qcache.Filter{Key: getUser.Key("42")})
	waitFor(obs, atLeast(3))
	stop()
	fmt.Println("stopped")
	// Output:
	// fetch 1
	// fetch 2
	// fetch 3
	// stopped
}

func ExampleQuery_SetData() {
	client := qcache.NewClient()
	defer client.Close()
	src := &versions{print: 5}
	getUser := qcache.NewQueryFunc(client, qcache.Key{"users"}, src.fetch, qcache.StaleTime(time.Minute))

	getUser.SetData("42", User{ID: "42", Status: "pushed"}) // from a WebSocket message, say
	u, _ := getUser.Get(context.Background(), "42")
	fmt.Println(u.Status, "fetches:", src.n.Load())
	// Output:
	// pushed fetches: 0
}

func ExampleFilter() {
	client := qcache.NewClient()
	defer client.Close()
	type postsParams struct {
		User string
		Page int `query:"page"`
	}
	users := qcache.NewQueryFunc(client, qcache.Key{"users"},
		func(ctx context.Context, id string) (string, error) { return id, nil })
	posts := qcache.NewQueryFunc(client, qcache.Key{"users"},
		func(ctx context.Context, p postsParams) ([]string, error) { return nil, nil })
	users.SetData("42", "Ada")
	users.SetData("7", "Grace")
	posts.SetData(postsParams{"42", 2}, []string{"hello"})

	fmt.Println(client.Keys(qcache.Filter{Key: qcache.Key{"users", "42"}}))
	fmt.Println(client.Keys(qcache.Filter{Key: qcache.Key{"users", "42"}, Exact: true}))
	// Output:
	// [users/42 users/42?page=2]
	// [users/42]
}
