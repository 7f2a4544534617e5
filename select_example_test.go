package qcache_test

import (
	"context"
	"fmt"
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
