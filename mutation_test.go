package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type mutTodo struct {
	ID    int    `json:"id"`
	Title string `json:"title"`
	Done  bool   `json:"done"`
}

type mutValidated struct {
	Name string `json:"name"`
}

func (v mutValidated) Validate() error {
	if v.Name == "" {
		return errors.New("name is empty")
	}
	return nil
}

// todoServer is an upstream holding todos: GET /todos/{id} reads one, PATCH
// /todos/{id} replaces it (through patch, which may fail it), and every hit
// is counted per method.
type todoServer struct {
	t     *testing.T
	mu    sync.Mutex
	todos map[int]mutTodo
	gets  atomic.Int64
	// patch, when set, answers PATCH instead of the default (store and echo).
	patch func(w http.ResponseWriter, r *http.Request, id int, t mutTodo) bool
	srv   *httptest.Server
}

func newTodoServer(t *testing.T) *todoServer {
	s := &todoServer{t: t, todos: map[int]mutTodo{1: {ID: 1, Title: "buy milk"}, 2: {ID: 2, Title: "walk dog"}}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *todoServer) serve(w http.ResponseWriter, r *http.Request) {
	var id int
	if _, err := fmt.Sscanf(r.URL.Path, "/todos/%d", &id); err != nil {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.gets.Add(1)
		s.mu.Lock()
		t, ok := s.todos[id]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(t)
	case http.MethodPatch:
		var t mutTodo
		if err := json.NewDecoder(r.Body).Decode(&t); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if s.patch != nil && s.patch(w, r, id, t) {
			return
		}
		t.ID = id
		s.mu.Lock()
		s.todos[id] = t
		s.mu.Unlock()
		json.NewEncoder(w).Encode(t)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

func (s *todoServer) client(t *testing.T) *Client {
	c := NewClient(WithBaseURL(s.srv.URL))
	t.Cleanup(func() { c.Close() })
	return c
}

// collect records the distinct data values an observer delivers, and signals
// on seen when one equal to want arrives.
type collector[T comparable] struct {
	mu     sync.Mutex
	values []T
	done   chan struct{}
}

func collect[T comparable](o *Observer[T], want T) (c *collector[T], seen <-chan struct{}) {
	c = &collector[T]{done: make(chan struct{})}
	ch := make(chan struct{})
	if s := <-o.Changes(); s.HasData { // the current state, before anything changes it
		c.values = append(c.values, s.Data)
	}
	go func() {
		defer close(c.done)
		signalled := false
		for s := range o.Changes() {
			if !s.HasData {
				continue
			}
			c.mu.Lock()
			if n := len(c.values); n == 0 || c.values[n-1] != s.Data {
				c.values = append(c.values, s.Data)
			}
			c.mu.Unlock()
			if s.Data == want && !signalled {
				signalled = true
				close(ch)
			}
		}
	}()
	return c, ch
}

func (c *collector[T]) list() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.values)
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMutationSendsJSONAndDecodes(t *testing.T) {
	type params struct {
		ID     int  `path:"id"`
		Notify bool `query:"notify"`
	}
	type in struct {
		Title string `json:"title"`
	}
	var got struct {
		method, path, query, ctype, accept, header string
		body                                       []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.query = r.Method, r.URL.EscapedPath(), r.URL.RawQuery
		got.ctype, got.accept, got.header = r.Header.Get("Content-Type"), r.Header.Get("Accept"), r.Header.Get("X-Ep")
		got.body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":7,"title":"new","done":true}`)
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL + "/api/"))
	defer c.Close()

	m := NewMutation[params, in, mutTodo](c, Endpoint{Method: "put", URL: "/todos/$id", Header: http.Header{"X-Ep": {"yes"}}})
	r, err := m.Do(t.Context(), params{ID: 7, Notify: true}, in{Title: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (mutTodo{ID: 7, Title: "new", Done: true}); r != want {
		t.Errorf("result = %+v, want %+v", r, want)
	}
	if got.method != "PUT" || got.path != "/api/todos/7" || got.query != "notify=true" {
		t.Errorf("request = %s %s?%s, want PUT /api/todos/7?notify=true", got.method, got.path, got.query)
	}
	if got.ctype != "application/json" || got.accept != "application/json" || got.header != "yes" {
		t.Errorf("headers: Content-Type %q, Accept %q, X-Ep %q", got.ctype, got.accept, got.header)
	}
	if string(got.body) != `{"title":"new"}` {
		t.Errorf("body = %s", got.body)
	}
	if k := m.Key(params{ID: 7, Notify: true}); !slices.Equal(k, Key{"todos", "7", "?notify=true"}) {
		t.Errorf("Key = %q", k)
	}

	// Method "" means POST; path values are escaped.
	post := NewMutation[string, in, mutTodo](c, Endpoint{URL: "/todos/$id"})
	if _, err := post.Do(t.Context(), "../admin", in{Title: "x"}); err != nil {
		t.Fatal(err)
	}
	if got.method != "POST" || got.path != "/api/todos/..%2Fadmin" {
		t.Errorf("request = %s %s, want POST /api/todos/..%%2Fadmin", got.method, got.path)
	}
}

func TestMutationEmptyAnswerGivesZero(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusOK} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
		}))
		c := NewClient(WithBaseURL(srv.URL))
		m := NewMutation[int, struct{}, *mutTodo](c, Endpoint{Method: "DELETE", URL: "/todos/$id"})
		r, err := m.Do(t.Context(), 1, struct{}{})
		if err != nil || r != nil {
			t.Errorf("status %d: Do = %v, %v; want nil, nil", status, r, err)
		}
		c.Close()
		srv.Close()
	}
}

func TestMutationErrors(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/422":
			http.Error(w, `{"error":"title required"}`, http.StatusUnprocessableEntity)
		case "/500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/badjson":
			io.WriteString(w, `{"name":`)
		case "/invalid":
			io.WriteString(w, `{"name":""}`)
		case "/ok":
			io.WriteString(w, `{"name":"ann"}`)
		}
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	m := NewMutation[string, map[string]string, mutValidated](c, Endpoint{URL: "/$path"})

	for _, tc := range []struct {
		path   string
		status int
	}{{"422", 422}, {"500", 500}} {
		hits.Store(0)
		_, err := m.Do(t.Context(), tc.path, nil)
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != tc.status || he.Method != "POST" || !strings.HasSuffix(he.URL, "/"+tc.path) {
			t.Errorf("%s: err = %v, want *HTTPError %d", tc.path, err, tc.status)
		}
		if n := hits.Load(); n != 1 {
			t.Errorf("%s: %d requests, want 1 (no retries by default)", tc.path, n)
		}
	}
	if _, err := m.Do(t.Context(), "422", nil); err != nil && !strings.Contains(string(func() []byte {
		var he *HTTPError
		errors.As(err, &he)
		return he.Body
	}()), "title required") {
		t.Errorf("HTTPError.Body does not hold the answer: %v", err)
	}
	for _, path := range []string{"badjson", "invalid"} {
		_, err := m.Do(t.Context(), path, nil)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want *DecodeError", path, err)
		}
	}
	if r, err := m.Do(t.Context(), "ok", nil); err != nil || r.Name != "ann" {
		t.Errorf("ok: Do = %+v, %v", r, err)
	}

	// A body that cannot be encoded fails before anything is sent or run.
	called := false
	bad := NewMutation[string, any, mutValidated](c, Endpoint{URL: "/$path"},
		MutationOnMutate(func(context.Context, string, any) (func(), error) { called = true; return nil, nil }))
	hits.Store(0)
	if _, err := bad.Do(t.Context(), "ok", func() {}); err == nil || called || hits.Load() != 0 {
		t.Errorf("unencodable body: err %v, hook called %v, %d requests", err, called, hits.Load())
	}
	// So does a p that cannot be bound.
	if _, err := m.Do(t.Context(), "", nil); err == nil || !strings.Contains(err.Error(), "empty value") {
		t.Errorf("empty path value: err = %v", err)
	}
}

func TestMutationRetry(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		switch {
		case r.URL.Path == "/bad":
			http.Error(w, "no", http.StatusBadRequest)
		case n < 3:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			io.WriteString(w, `"ok"`)
		}
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	m := NewMutation[string, int, string](c, Endpoint{URL: "/$p"}, MutationRetry(2),
		MutationRetryDelay(func(int, error) time.Duration { return time.Millisecond }))
	if r, err := m.Do(t.Context(), "x", 1); err != nil || r != "ok" || hits.Load() != 3 {
		t.Errorf("Do = %q, %v after %d requests; want ok after 3", r, err, hits.Load())
	}
	hits.Store(0)
	if _, err := m.Do(t.Context(), "bad", 1); err == nil || hits.Load() != 1 {
		t.Errorf("400: err %v after %d requests; want an error after 1", err, hits.Load())
	}
	if got := c.Stats().Retries; got != 2 {
		t.Errorf("Stats.Retries = %d, want 2", got)
	}
}

func TestMutationInvalidates(t *testing.T) {
	s := newTodoServer(t)
	c := s.client(t)
	todo := NewQuery[int, mutTodo](c, Endpoint{URL: "/todos/$id"}, StaleTime(Forever))
	edit := NewMutation[int, mutTodo, mutTodo](c, Endpoint{Method: "PATCH", URL: "/todos/$id"},
		MutationInvalidates(Filter{Key: Key{"todos"}}))

	// Todo 1 is observed; todo 2 is cached but unobserved.
	o := todo.Use(t.Context(), 1)
	defer o.Close()
	waitFor(t, "the observer's first fetch", func() bool { return o.State().HasData })
	if _, err := todo.Get(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	gets := s.gets.Load()

	r, err := edit.Do(t.Context(), 1, mutTodo{Title: "buy oat milk"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Title != "buy oat milk" {
		t.Errorf("result = %+v", r)
	}
	// The observed entry was refetched before Do returned.
	if got := s.gets.Load() - gets; got != 1 {
		t.Errorf("%d refetches, want 1 (the observed entry only)", got)
	}
	if st := o.State(); st.Data.Title != "buy oat milk" || st.IsInvalidated || st.IsFetching() {
		t.Errorf("observed state after Do = %+v", st)
	}
	// The unobserved one is marked and refetches on its next Get.
	if st := todo.State(2); !st.IsInvalidated || !st.IsStale || st.Data.Title != "walk dog" {
		t.Errorf("unobserved state after Do = %+v", st)
	}
	if _, err := todo.Get(t.Context(), 2); err != nil || s.gets.Load()-gets != 2 {
		t.Errorf("Get of the invalidated entry: err %v, %d fetches", err, s.gets.Load()-gets)
	}
}

func TestMutationOptimisticRollback(t *testing.T) {
	s := newTodoServer(t)
	c := s.client(t)
	todo := NewQuery[int, mutTodo](c, Endpoint{URL: "/todos/$id"}, StaleTime(Forever))
	o := todo.Use(t.Context(), 1)
	waitFor(t, "the observer's first fetch", func() bool { return o.State().HasData })
	old := o.State().Data
	optimistic := mutTodo{ID: 1, Title: "buy milk", Done: true}
	col, seen := collect(o, optimistic)

	s.patch = func(w http.ResponseWriter, r *http.Request, id int, t mutTodo) bool {
		select { // fail only once the observer has shown the optimistic value
		case <-seen:
		case <-r.Context().Done():
		}
		http.Error(w, "database down", http.StatusInternalServerError)
		return true
	}
	var rolledBack atomic.Bool
	edit := NewMutation[int, mutTodo, mutTodo](c, Endpoint{Method: "PATCH", URL: "/todos/$id"},
		MutationInvalidates(Filter{Key: Key{"todos"}}),
		MutationOnMutate(func(ctx context.Context, id int, t mutTodo) (func(), error) {
			rb := OptimisticUpdate(todo, id, func(mutTodo, bool) mutTodo { return t })
			return func() { rolledBack.Store(true); rb() }, nil
		}))
	gets := s.gets.Load()
	_, err := edit.Do(t.Context(), 1, optimistic)
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 500 {
		t.Fatalf("Do err = %v, want a 500", err)
	}
	if !rolledBack.Load() {
		t.Error("rollback did not run")
	}
	if d, _ := todo.Peek(1); d != old {
		t.Errorf("data after rollback = %+v, want %+v", d, old)
	}
	if got := s.gets.Load() - gets; got != 1 {
		t.Errorf("%d refetches after the failure, want 1 (Invalidates runs on failure too)", got)
	}
	o.Close()
	<-col.done
	if got, want := col.list(), []mutTodo{old, optimistic, old}; !slices.Equal(got, want) {
		t.Errorf("observer saw %+v, want %+v", got, want)
	}
}

func TestMutationOptimisticSticks(t *testing.T) {
	s := newTodoServer(t)
	c := s.client(t)
	todo := NewQuery[int, mutTodo](c, Endpoint{URL: "/todos/$id"}, StaleTime(Forever))
	o := todo.Use(t.Context(), 1)
	waitFor(t, "the observer's first fetch", func() bool { return o.State().HasData })
	old := o.State().Data
	optimistic := mutTodo{ID: 1, Title: "BUY MILK"}
	truth := mutTodo{ID: 1, Title: "buy milk!"} // the server has the last word
	col, seen := collect(o, optimistic)
	s.patch = func(w http.ResponseWriter, r *http.Request, id int, _ mutTodo) bool {
		<-seen
		s.mu.Lock()
		s.todos[id] = truth
		s.mu.Unlock()
		json.NewEncoder(w).Encode(truth)
		return true
	}
	edit := NewMutation[int, mutTodo, mutTodo](c, Endpoint{Method: "PATCH", URL: "/todos/$id"},
		MutationInvalidates(Filter{Key: Key{"todos", "1"}, Exact: true}),
		MutationOnMutate(func(ctx context.Context, id int, t mutTodo) (func(), error) {
			return OptimisticUpdate(todo, id, func(mutTodo, bool) mutTodo { return t }), nil
		}))
	r, err := edit.Do(t.Context(), 1, optimistic)
	if err != nil || r != truth {
		t.Fatalf("Do = %+v, %v", r, err)
	}
	if st := o.State(); st.Data != truth || st.IsInvalidated {
		t.Errorf("state after Do = %+v, want the server's %+v", st, truth)
	}
	o.Close()
	<-col.done
	if got, want := col.list(), []mutTodo{old, optimistic, truth}; !slices.Equal(got, want) {
		t.Errorf("observer saw %+v, want %+v", got, want)
	}
}

func TestOptimisticUpdateRollback(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"n"}, func(context.Context, int) (int, error) { return 0, errors.New("no") }, StaleTime(Forever))

	// Restores old data.
	q.SetData(1, 10)
	rb := OptimisticUpdate(q, 1, func(old int, ok bool) int { return old + 1 })
	if v, _ := q.Peek(1); v != 11 {
		t.Fatalf("optimistic value %d, want 11", v)
	}
	rb()
	rb() // a second call does nothing
	if v, ok := q.Peek(1); v != 10 || !ok {
		t.Errorf("after rollback %d, %v; want 10", v, ok)
	}

	// Does not overwrite newer data.
	rb = OptimisticUpdate(q, 1, func(old int, ok bool) int { return 20 })
	q.SetData(1, 30) // a push from the server
	rb()
	if v, _ := q.Peek(1); v != 30 {
		t.Errorf("rollback overwrote newer data: %d, want 30", v)
	}

	// Removes data that was not there.
	rb = OptimisticUpdate(q, 2, func(old int, ok bool) int {
		if ok {
			t.Error("ok for a missing entry")
		}
		return 5
	})
	rb()
	if _, ok := q.Peek(2); ok {
		t.Error("rollback kept data that was not there before")
	}
}

func TestMutationHooks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusConflict)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, `{"name":%q}`, r.URL.Path[1:]+":"+string(b))
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	q := NewQueryFunc(c, Key{"things"}, func(context.Context, string) (string, error) { return "fetched", nil })

	var events []string
	rec := func(format string, args ...any) { events = append(events, fmt.Sprintf(format, args...)) }
	mutateErr := error(nil)
	m := NewMutation[string, int, mutValidated](c, Endpoint{URL: "/$p"},
		MutationInvalidates(Filter{Key: Key{"things"}, Refetch: RefetchAll}),
		MutationOnMutate(func(ctx context.Context, p string, b int) (func(), error) {
			rec("mutate1 %s %d", p, b)
			return func() { rec("rollback1") }, nil
		}),
		MutationOnMutate(func(ctx context.Context, p string, b int) (func(), error) {
			rec("mutate2 %s %d", p, b)
			return func() { rec("rollback2") }, mutateErr
		}),
		MutationOnSuccess(func(ctx context.Context, r mutValidated, p string, b int) { rec("success %s %s %d", r.Name, p, b) }),
		MutationOnError(func(ctx context.Context, err error, p string, b int) {
			var he *HTTPError
			if errors.As(err, &he) {
				rec("error %d %s %d", he.StatusCode, p, b)
			} else {
				rec("error %v", err)
			}
		}),
		MutationOnSettled(func(ctx context.Context, r mutValidated, err error, p string, b int) {
			st := q.State("x")
			rec("settled %q %v %s %d (query invalidated %v, data %q)", r.Name, err != nil, p, b, st.IsInvalidated, st.Data)
		}),
	)
	q.SetData("x", "set")

	check := func(name string, want ...string) {
		t.Helper()
		if !slices.Equal(events, want) {
			t.Errorf("%s: events\n%s\nwant\n%s", name, strings.Join(events, "\n"), strings.Join(want, "\n"))
		}
		events = nil
	}
	if _, err := m.Do(t.Context(), "ok", 1); err != nil {
		t.Fatal(err)
	}
	check("success",
		"mutate1 ok 1", "mutate2 ok 1", `success ok:1 ok 1`,
		`settled "ok:1" false ok 1 (query invalidated false, data "fetched")`)

	q.SetData("x", "set")
	if _, err := m.Do(t.Context(), "fail", 2); err == nil {
		t.Fatal("no error")
	}
	check("failure",
		"mutate1 fail 2", "mutate2 fail 2", "rollback2", "rollback1", "error 409 fail 2",
		`settled "" true fail 2 (query invalidated false, data "fetched")`)

	mutateErr = errors.New("offline draft")
	if _, err := m.Do(t.Context(), "ok", 3); err == nil || !strings.Contains(err.Error(), "offline draft") {
		t.Fatalf("err = %v", err)
	}
	check("OnMutate error",
		"mutate1 ok 3", "mutate2 ok 3", "rollback2", "rollback1",
		"error qcache: POST /$p: OnMutate: offline draft",
		`settled "" true ok 3 (query invalidated false, data "fetched")`)
}

func TestMutationHookOfWrongTypesPanics(t *testing.T) {
	c := NewClient(WithBaseURL("http://example.invalid"))
	defer c.Close()
	for _, tc := range []struct {
		opt  MutationOption
		want string
	}{
		{MutationOnMutate(func(context.Context, string, int) (func(), error) { return nil, nil }),
			"MutationOnMutate takes func(context.Context, string, int) (func(), error); this mutation needs func(context.Context, int, qcache.mutTodo) (func(), error)"},
		{MutationOnSuccess(func(context.Context, string, int, mutTodo) {}),
			"MutationOnSuccess takes func(context.Context, string, int, qcache.mutTodo); this mutation needs func(context.Context, qcache.mutValidated, int, qcache.mutTodo)"},
		{MutationOnError(func(context.Context, error, int, *mutTodo) {}), "MutationOnError takes"},
		{MutationOnSettled(func(context.Context, mutTodo, error, int, mutTodo) {}), "MutationOnSettled takes"},
		// The deprecated names are the same options.
		{OnMutate(func(context.Context, string, int) (func(), error) { return nil, nil }), "MutationOnMutate takes"},
		{OnSuccess(func(context.Context, string, int, mutTodo) {}), "MutationOnSuccess takes"},
		{OnError(func(context.Context, error, int, *mutTodo) {}), "MutationOnError takes"},
		{OnSettled(func(context.Context, mutTodo, error, int, mutTodo) {}), "MutationOnSettled takes"},
	} {
		func() {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "PATCH /todos/$id") {
					t.Errorf("panic %q, want it to contain %q", msg, tc.want)
				}
			}()
			NewMutation[int, mutTodo, mutValidated](c, Endpoint{Method: "PATCH", URL: "/todos/$id"}, tc.opt)
		}()
	}
	// Nil hooks are ignored.
	NewMutation[int, mutTodo, mutTodo](c, Endpoint{URL: "/todos/$id"},
		MutationOnMutate[int, mutTodo](nil), MutationOnSuccess[int, mutTodo, mutTodo](nil),
		MutationOnError[int, mutTodo](nil), MutationOnSettled[int, mutTodo, mutTodo](nil))
}

func TestNewMutationPanicsOnBadEndpoint(t *testing.T) {
	c := NewClient(WithBaseURL("http://example.invalid"))
	defer c.Close()
	noBase := NewClient()
	defer noBase.Close()
	for name, f := range map[string]func(){
		"unbound variable":  func() { NewMutation[struct{ ID int }, int, int](c, Endpoint{URL: "/todos/$todoId"}) },
		"relative, no base": func() { NewMutation[int, int, int](noBase, Endpoint{URL: "/todos/$id"}) },
		"nil client":        func() { NewMutation[int, int, int](nil, Endpoint{URL: "/todos/$id"}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// serialServer answers POST /{key} after release says so, records the order
// of the bodies it got, and fails the test when two requests on one key
// overlap.
type serialServer struct {
	t        *testing.T
	mu       sync.Mutex
	inflight map[string]int
	maxPar   int // most requests in flight at once, all keys
	total    int
	order    []string
	arrived  chan string
	gates    map[string]chan struct{}
}

// gate returns the channel that lets the request with body answer.
func (s *serialServer) gate(body string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gates[body] == nil {
		s.gates[body] = make(chan struct{})
	}
	return s.gates[body]
}

// let lets the request with body answer.
func (s *serialServer) let(body string) { close(s.gate(body)) }

func newSerialServer(t *testing.T) (*serialServer, *Client) {
	s := &serialServer{t: t, inflight: map[string]int{}, arrived: make(chan string, 100), gates: map[string]chan struct{}{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body string
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		key := r.Method + " " + r.URL.Path
		s.inflight[key]++
		s.total++
		s.maxPar = max(s.maxPar, s.total)
		if s.inflight[key] > 1 {
			t.Errorf("%s: %d requests in flight at once", key, s.inflight[key])
		}
		s.order = append(s.order, body)
		s.mu.Unlock()
		s.arrived <- body
		select {
		case <-s.gate(body):
		case <-r.Context().Done():
		}
		s.mu.Lock()
		s.inflight[key]--
		s.total--
		s.mu.Unlock()
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	c := NewClient(WithBaseURL(srv.URL))
	t.Cleanup(func() { c.Close() })
	return s, c
}

// queued returns the number of calls holding or waiting for the queues of c.
func queued(c *Client) int {
	mutationQueues.mu.Lock()
	defer mutationQueues.mu.Unlock()
	n := 0
	for id, q := range mutationQueues.m {
		if id.c == c {
			n += q.calls
		}
	}
	return n
}

func TestMutationSerial(t *testing.T) {
	s, c := newSerialServer(t)
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k/items"}, MutationSerial())
	other := NewMutation[string, string, string](c, Endpoint{Method: "PUT", URL: "/$k/items"}) // the same key, not serial

	const n = 5
	var wg sync.WaitGroup
	results := make([]string, n)
	for i := range n {
		wg.Go(func() {
			r, err := m.Do(t.Context(), "a", fmt.Sprint(i))
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
		waitFor(t, "the call to queue", func() bool { return queued(c) == i+1 })
	}
	if got := <-s.arrived; got != "0" {
		t.Fatalf("first request %q, want 0", got)
	}
	// Another key of the same mutation runs beside them, and so does another
	// mutation on the same key.
	var wg2 sync.WaitGroup
	wg2.Go(func() { m.Do(t.Context(), "b", "b") })
	wg2.Go(func() { other.Do(t.Context(), "a", "other") })
	<-s.arrived
	<-s.arrived
	s.let("b")
	s.let("other")
	wg2.Wait()
	for i := range n {
		s.let(fmt.Sprint(i))
		if i < n-1 {
			if got := <-s.arrived; got != fmt.Sprint(i+1) {
				t.Fatalf("request %d: %q, want %d", i+1, got, i+1)
			}
		}
	}
	wg.Wait()
	for i, r := range results {
		if r != fmt.Sprint(i) {
			t.Errorf("result %d = %q", i, r)
		}
	}
	if want := []string{"0", "b", "other", "1", "2", "3", "4"}; !slices.Equal(sortMiddle(s.order), want) {
		t.Errorf("server order %q, want %q", s.order, want)
	}
	if q := queued(c); q != 0 {
		t.Errorf("%d calls left in the queues", q)
	}
}

// sortMiddle sorts order[1:3], which arrive in either order.
func sortMiddle(order []string) []string {
	o := slices.Clone(order)
	if len(o) >= 3 {
		slices.Sort(o[1:3])
	}
	return o
}

func TestMutationScope(t *testing.T) {
	s, c := newSerialServer(t)
	add := NewMutation[string, string, string](c, Endpoint{URL: "/$k/add"}, MutationScope("list"))
	del := NewMutation[string, string, string](c, Endpoint{Method: "DELETE", URL: "/$k/del"}, MutationScope("list"))

	var wg sync.WaitGroup
	wg.Go(func() { add.Do(t.Context(), "x", "add x") })
	waitFor(t, "the first call", func() bool { return queued(c) == 1 })
	<-s.arrived
	wg.Go(func() { del.Do(t.Context(), "y", "del y") }) // another mutation, another key: same scope
	waitFor(t, "the second call to queue", func() bool { return queued(c) == 2 })
	wg.Go(func() { add.Do(t.Context(), "z", "add z") })
	waitFor(t, "the third call to queue", func() bool { return queued(c) == 3 })
	s.let("add x")
	s.let("del y")
	s.let("add z")
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := []string{"add x", "del y", "add z"}; !slices.Equal(s.order, want) || s.maxPar != 1 {
		t.Errorf("order %q with up to %d in flight; want %q one at a time", s.order, s.maxPar, want)
	}
}

func TestMutationScopePerKey(t *testing.T) {
	s, c := newSerialServer(t)
	a := NewMutation[string, string, string](c, Endpoint{URL: "/$k"}, MutationScope("todos"), MutationSerial())
	b := NewMutation[string, string, string](c, Endpoint{Method: "PUT", URL: "/$k"}, MutationScope("todos"), MutationSerial())
	var wg sync.WaitGroup
	wg.Go(func() { a.Do(t.Context(), "1", "a1") })
	<-s.arrived
	wg.Go(func() { b.Do(t.Context(), "2", "b2") }) // another key: not queued behind a1
	<-s.arrived
	wg.Go(func() { b.Do(t.Context(), "1", "b1") }) // same key and scope: waits
	waitFor(t, "b1 to queue", func() bool { return queued(c) == 3 })
	s.let("b2")
	s.let("a1")
	if got := <-s.arrived; got != "b1" {
		t.Errorf("got %q, want b1", got)
	}
	s.let("b1")
	wg.Wait()
}

func TestMutationQueueCancel(t *testing.T) {
	s, c := newSerialServer(t)
	var hooks atomic.Int64
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k"}, MutationSerial(),
		MutationOnSettled(func(context.Context, string, error, string, string) { hooks.Add(1) }))
	var wg sync.WaitGroup
	wg.Go(func() { m.Do(t.Context(), "k", "first") })
	<-s.arrived
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := m.Do(ctx, "k", "cancelled")
		errc <- err
	}()
	waitFor(t, "the second call to queue", func() bool { return queued(c) == 2 })
	wg.Go(func() { m.Do(t.Context(), "k", "third") })
	waitFor(t, "the third call to queue", func() bool { return queued(c) == 3 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	s.let("first")
	if got := <-s.arrived; got != "third" {
		t.Errorf("next request %q, want third", got)
	}
	s.let("third")
	wg.Wait()
	if n := hooks.Load(); n != 2 {
		t.Errorf("OnSettled ran %d times, want 2 (not for the call that never started)", n)
	}
	if q := queued(c); q != 0 {
		t.Errorf("%d calls left in the queues", q)
	}
}

func TestMutationClosed(t *testing.T) {
	s, c := newSerialServer(t)
	var rolledBack atomic.Bool
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k"}, MutationSerial(),
		MutationOnMutate(func(context.Context, string, string) (func(), error) {
			return func() { rolledBack.Store(true) }, nil
		}))
	errs := make(chan error, 2)
	go func() { _, err := m.Do(t.Context(), "k", "in flight"); errs <- err }()
	<-s.arrived
	go func() { _, err := m.Do(t.Context(), "k", "queued"); errs <- err }()
	waitFor(t, "the second call to queue", func() bool { return queued(c) == 2 })
	c.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("err = %v, want ErrClosed", err)
		}
	}
	if !rolledBack.Load() {
		t.Error("the cancelled call was not rolled back")
	}
	if _, err := m.Do(t.Context(), "k", "after"); err != ErrClosed {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !reflect.DeepEqual(s.order, []string{"in flight"}) {
		t.Errorf("server got %q", s.order)
	}
}

func TestMutationContextCancel(t *testing.T) {
	s, c := newSerialServer(t)
	var events []string
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k"},
		MutationOnMutate(func(context.Context, string, string) (func(), error) {
			return func() { events = append(events, "rollback") }, nil
		}),
		MutationOnError(func(_ context.Context, err error, _ string, _ string) {
			events = append(events, fmt.Sprintf("error canceled=%v", errors.Is(err, context.Canceled)))
		}))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := m.Do(ctx, "k", "slow"); errc <- err }()
	<-s.arrived
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if want := []string{"rollback", "error canceled=true"}; !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}

	// A deadline reached while offline: the request is never sent.
	c.SetOnline(false)
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Do(ctx, "k", "offline"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("offline: err = %v, want DeadlineExceeded", err)
	}
	s.mu.Lock()
	if len(s.order) != 1 {
		t.Errorf("requests sent: %q", s.order)
	}
	s.mu.Unlock()
	// Back online, a waiting call goes on.
	errc = make(chan error, 1)
	go func() { _, err := m.Do(t.Context(), "k", "later"); errc <- err }()
	c.SetOnline(true)
	if got := <-s.arrived; got != "later" {
		t.Errorf("got %q", got)
	}
	s.let("later")
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestMutationDeadContext(t *testing.T) {
	s, c := newSerialServer(t)
	called := false
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k"},
		MutationOnSettled(func(context.Context, string, error, string, string) { called = true }))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := m.Do(ctx, "k", "x"); !errors.Is(err, context.Canceled) || called {
		t.Errorf("err %v, hook called %v; want context.Canceled and no hook", err, called)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) != 0 {
		t.Errorf("sent %q", s.order)
	}
}

func TestDeprecatedMutationOptionsMatchTheirNewNames(t *testing.T) {
	f := Filter{Key: Key{"todos"}, Exact: true}
	var old, cur mutationConfig
	Invalidates(f)(&old)
	Serial()(&old)
	MutationInvalidates(f)(&cur)
	MutationSerial()(&cur)
	if !reflect.DeepEqual(old, cur) {
		t.Errorf("Invalidates+Serial give %+v, MutationInvalidates+MutationSerial %+v", old, cur)
	}
}
