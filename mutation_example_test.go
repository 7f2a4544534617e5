package qcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/qcache-go/qcache"
)

type todoItem struct {
	ID    int    `json:"id"`
	Title string `json:"title"`
	Done  bool   `json:"done"`
}

type todoPatch struct {
	Done bool `json:"done"`
}

// optimisticTodoAPI serves GET and PATCH /todos/{id}; its first PATCH fails with 503.
func optimisticTodoAPI(show func() string) *httptest.Server {
	var mu sync.Mutex
	todo := todoItem{ID: 1, Title: "buy milk"}
	patches := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /todos/1", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(todo)
	})
	mux.HandleFunc("PATCH /todos/1", func(w http.ResponseWriter, r *http.Request) {
		var p todoPatch
		json.NewDecoder(r.Body).Decode(&p)
		fmt.Println("server: PATCH while the cache shows", show())
		mu.Lock()
		defer mu.Unlock()
		if patches++; patches == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		todo.Done = p.Done
		json.NewEncoder(w).Encode(todo)
	})
	return httptest.NewServer(mux)
}

// An optimistic update: the cached todo shows the change before the server
// has answered; when the server fails, the change is rolled back; either way
// the todo is then refetched, so the cache ends with the server's truth.
func ExampleMutation_optimisticUpdate() {
	var todo *qcache.Query[int, todoItem]
	show := func() string {
		t, _ := todo.Peek(1)
		return fmt.Sprintf("%q done=%v", t.Title, t.Done)
	}
	srv := optimisticTodoAPI(show)
	defer srv.Close()
	c := qcache.NewClient(qcache.WithBaseURL(srv.URL))
	defer c.Close()

	todo = qcache.NewQuery[int, todoItem](c, qcache.Endpoint{URL: "/todos/$id"}, qcache.StaleTime(qcache.Forever))
	toggle := qcache.NewMutation[int, todoPatch, todoItem](c,
		qcache.Endpoint{Method: "PATCH", URL: "/todos/$id"},
		qcache.MutationOnMutate(func(ctx context.Context, id int, p todoPatch) (func(), error) {
			rollback := qcache.OptimisticUpdate(todo, id, func(old todoItem, _ bool) todoItem {
				old.Done = p.Done
				return old
			})
			return rollback, nil
		}),
		qcache.MutationOnError(func(ctx context.Context, err error, id int, p todoPatch) {
			fmt.Println("rolled back:", show())
		}),
		qcache.MutationInvalidates(qcache.Filter{Key: qcache.Key{"todos"}, Refetch: qcache.RefetchAll}),
	)

	ctx := context.Background()
	if _, err := todo.Get(ctx, 1); err != nil {
		panic(err)
	}
	fmt.Println("cached:", show())

	_, err := toggle.Do(ctx, 1, todoPatch{Done: true})
	var he *qcache.HTTPError
	if errors.As(err, &he) {
		fmt.Println("first try:", he.StatusCode)
	}

	if _, err := toggle.Do(ctx, 1, todoPatch{Done: true}); err != nil {
		panic(err)
	}
	fmt.Println("second try: ok; cached:", show(), "invalidated:", todo.State(1).IsInvalidated)
	// Output:
	// cached: "buy milk" done=false
	// server: PATCH while the cache shows "buy milk" done=true
	// rolled back: "buy milk" done=false
	// first try: 503
	// server: PATCH while the cache shows "buy milk" done=true
	// second try: ok; cached: "buy milk" done=true invalidated: false
}

// A mutation that invalidates the queries it makes outdated: the observed
// list is refetched before Do returns.
func ExampleInvalidates() {
	var mu sync.Mutex
	titles := []string{"buy milk"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /todos", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(titles)
	})
	mux.HandleFunc("POST /todos", func(w http.ResponseWriter, r *http.Request) {
		var t todoItem
		json.NewDecoder(r.Body).Decode(&t)
		mu.Lock()
		defer mu.Unlock()
		titles = append(titles, t.Title)
		t.ID = len(titles)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(t)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := qcache.NewClient(qcache.WithBaseURL(srv.URL))
	defer c.Close()

	list := qcache.NewQuery[struct{}, []string](c, qcache.Endpoint{URL: "/todos"}, qcache.StaleTime(qcache.Forever))
	add := qcache.NewMutation[struct{}, todoItem, todoItem](c, qcache.Endpoint{URL: "/todos"}, // "" means POST
		qcache.MutationInvalidates(qcache.Filter{Key: qcache.Key{"todos"}}))

	ctx := context.Background()
	o := list.Use(ctx, struct{}{})
	defer o.Close()
	for s := range o.Changes() {
		if s.HasData {
			fmt.Println("before:", s.Data)
			break
		}
	}
	created, err := add.Do(ctx, struct{}{}, todoItem{Title: "walk dog"})
	if err != nil {
		panic(err)
	}
	fmt.Println("created:", created.ID, created.Title)
	fmt.Println("after:", o.State().Data)
	// Output:
	// before: [buy milk]
	// created: 2 walk dog
	// after: [buy milk walk dog]
}
