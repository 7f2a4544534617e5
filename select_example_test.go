package qcache_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache"
)

type Job struct {
	Status   string
	Progress int
}

// woke prints the state waiting in Changes, if any. The examples drive
// changes with SetData, which delivers before it returns.
func woke[T any](o *qcache.Observer[T]) {
	select {
	case s := <-o.Changes():
		fmt.Println("woke:", s.Data)
	default:
		fmt.Println("not woken")
	}
}

// Watch one derived value: the observer wakes when the job's status
// changes, not when its progress does.
func ExampleUseSelect() {
	client := qcache.NewClient()
	defer client.Close()
	getJob := qcache.NewQueryFunc(client, qcache.Key{"jobs"}, func(ctx context.Context, id string) (Job, error) {
		return Job{Status: "running"}, nil
	}, qcache.StaleTime(time.Minute))
	getJob.SetData("build-1", Job{Status: "running", Progress: 10})

	status := qcache.UseSelect(getJob, context.Background(), "build-1", func(j Job) string { return j.Status })
	defer status.Close()
	fmt.Println("start:", (<-status.Changes()).Data)

	getJob.SetData("build-1", Job{Status: "running", Progress: 50})
	woke(status)
	getJob.SetData("build-1", Job{Status: "done", Progress: 100})
	woke(status)
	// Output:
	// start: running
	// not woken
	// woke: done
}

// Polling data that does not change wakes nobody with
// NotifyOn(DataChanged); Use's default wakes on every fetch.
func ExampleNotifyOn() {
	client := qcache.NewClient()
	defer client.Close()
	var fetches atomic.Int32
	getConfig := qcache.NewQueryFunc(client, qcache.Key{"config"}, func(ctx context.Context, _ struct{}) (string, error) {
		fetches.Add(1)
		return "v1", nil
	})
	getConfig.SetData(struct{}{}, "v1")

	obs := getConfig.Use(context.Background(), struct{}{},
		qcache.RefetchInterval(5*time.Millisecond), qcache.NotifyOn(qcache.DataChanged))
	defer obs.Close()
	fmt.Println("start:", (<-obs.Changes()).Data)
	for fetches.Load() < 10 {
		time.Sleep(5 * time.Millisecond)
	}
	woke(obs) // ten polls of the same data later
	getConfig.SetData(struct{}{}, "v2")
	woke(obs)
	// Output:
	// start: v1
	// not woken
	// woke: v2
}

// Paginated view: moving to a page that is not cached yet keeps showing the
// previous page, marked as placeholder, until the new one lands
// (placeholderData: keepPreviousData).
func ExampleObserver_SetParams() {
	client := qcache.NewClient()
	defer client.Close()
	release := make(chan struct{})
	listPosts := qcache.NewQueryFunc(client, qcache.Key{"posts"}, func(ctx context.Context, page int) ([]string, error) {
		if page > 1 {
			<-release // page 2 takes a while
		}
		return []string{fmt.Sprintf("post %d.1", page), fmt.Sprintf("post %d.2", page)}, nil
	}, qcache.StaleTime(time.Minute))

	obs := listPosts.Use(context.Background(), 1)
	defer obs.Close()
	for s := range obs.Changes() {
		if s.HasData {
			fmt.Println("page 1:", s.Data)
			break
		}
	}

	if err := obs.SetParams(2); err != nil {
		fmt.Println(err)
	}
	s := obs.State()
	fmt.Println("while page 2 loads:", s.Data, "placeholder:", s.IsPlaceholder)
	close(release)
	for s := range obs.Changes() {
		if !s.IsPlaceholder && !s.IsFetching() {
			fmt.Println("page 2:", s.Data, "placeholder:", s.IsPlaceholder)
			break
		}
	}
	// Output:
	// page 1: [post 1.1 post 1.2]
	// while page 2 loads: [post 1.1 post 1.2] placeholder: true
	// page 2: [post 2.1 post 2.2] placeholder: false
}

// The interval function as a method of the query: its State type is
// checked by the compiler (a func(qcache.State[string]) would not compile
// here, where the untyped RefetchIntervalFunc panics at Use). It sees the
// entry's State[Job] also when the observer selects a string from it.
func ExampleQuery_RefetchIntervalFunc() {
	client := qcache.NewClient()
	defer client.Close()
	var calls atomic.Int32
	getJob := qcache.NewQueryFunc(client, qcache.Key{"jobs"}, func(ctx context.Context, id string) (Job, error) {
		if n := calls.Add(1); n < 3 {
			return Job{Status: "running", Progress: 30 * int(n)}, nil
		}
		return Job{Status: "done", Progress: 100}, nil
	})

	status := qcache.UseSelect(getJob, context.Background(), "build-1", func(j Job) string { return j.Status },
		getJob.RefetchIntervalFunc(func(s qcache.State[Job]) time.Duration {
			if s.Data.Status == "done" {
				return 0 // stop polling
			}
			return 10 * time.Millisecond
		}))
	defer status.Close()
	for s := range status.Changes() {
		if s.Data == "done" {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
	fmt.Println("fetches:", calls.Load())
	// Output:
	// fetches: 3
}

// A push that renames an item patches every cached list that holds it
// (setQueriesData); All lists what is cached.
func ExampleQuery_UpdateWhere() {
	client := qcache.NewClient()
	defer client.Close()
	type Item struct {
		ID   int
		Name string
	}
	listPage := qcache.NewQueryFunc(client, qcache.Key{"items"}, func(ctx context.Context, page int) ([]Item, error) {
		return nil, nil
	}, qcache.StaleTime(time.Minute))
	listPage.SetData(1, []Item{{1, "one"}, {7, "seven"}})
	listPage.SetData(2, []Item{{2, "two"}})
	listPage.SetData(3, []Item{{7, "seven"}, {3, "three"}})

	// The push: item 7 is now "SEVEN".
	holds7 := func(_ int, s qcache.State[[]Item]) bool {
		return slices.ContainsFunc(s.Data, func(it Item) bool { return it.ID == 7 })
	}
	n := listPage.UpdateWhere(holds7, func(old []Item) []Item {
		items := slices.Clone(old) // old is shared with the cache: change a copy
		for i := range items {
			if items[i].ID == 7 {
				items[i].Name = "SEVEN"
			}
		}
		return items
	})
	fmt.Println("lists patched:", n)

	pages := maps.Collect(listPage.All())
	for _, page := range slices.Sorted(maps.Keys(pages)) {
		fmt.Println(page, pages[page].Data)
	}
	// Output:
	// lists patched: 2
	// 1 [{1 one} {7 SEVEN}]
	// 2 [{2 two}]
	// 3 [{7 SEVEN} {3 three}]
}
