package qcache_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache"
)

// A service's cache moves to its next run (or another replica) with the age
// of its data: the next run answers from memory what was fresh.
func ExampleClient_Dehydrate() {
	var fetches atomic.Int32
	fetchUser := func(ctx context.Context, id string) (User, error) {
		fetches.Add(1)
		return User{ID: id, Name: "Ada"}, nil
	}

	// One run of the service fills its cache, and saves it when it stops.
	first := qcache.NewClient()
	users := qcache.NewQueryFunc(first, qcache.Key{"users"}, fetchUser, qcache.StaleTime(time.Hour))
	users.Get(context.Background(), "42")
	var snapshot bytes.Buffer
	if err := first.Dehydrate(&snapshot, qcache.Filter{}); err != nil {
		fmt.Println(err)
	}
	first.Close()

	// The next run declares the same queries, then hydrates.
	next := qcache.NewClient()
	defer next.Close()
	users = qcache.NewQueryFunc(next, qcache.Key{"users"}, fetchUser, qcache.StaleTime(time.Hour))
	stats, err := next.Hydrate(&snapshot)
	fmt.Printf("%+v %v\n", stats, err)
	u, _ := users.Get(context.Background(), "42")
	fmt.Println(u.Name, "- fetches in both runs:", fetches.Load())
	// Output:
	// {Restored:1 Older:0 UnknownQuery:0 Ambiguous:0 BadLine:0 Invalid:0} <nil>
	// Ada - fetches in both runs: 1
}

// A FilePersister restores the file when started and writes it again when
// the client closes (and every Every).
func ExampleFilePersister() {
	dir, _ := os.MkdirTemp("", "qcache-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "qcache.jsonl")

	run := func() {
		client := qcache.NewClient()
		defer client.Close() // writes the last snapshot
		users := qcache.NewQueryFunc(client, qcache.Key{"users"},
			func(ctx context.Context, id string) (User, error) {
				fmt.Println("fetching", id)
				return User{ID: id, Name: "Ada"}, nil
			}, qcache.StaleTime(time.Hour))

		p := &qcache.FilePersister{Path: path, Every: 10 * time.Minute}
		stats, err := p.Start(client) // after declaring the queries
		fmt.Println("restored:", stats.Restored, "err:", err)
		u, _ := users.Get(context.Background(), "42")
		fmt.Println(u.Name)
	}
	run() // cold: no file yet
	run() // warm
	// Output:
	// restored: 0 err: <nil>
	// fetching 42
	// Ada
	// restored: 1 err: <nil>
	// Ada
}
