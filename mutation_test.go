package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
			require.FailNowf(t, "timed out", "timed out waiting for %s", what)
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
	require.NoError(t, err)
	assert.Equal(t, mutTodo{ID: 7, Title: "new", Done: true}, r, "result")
	assert.Equal(t, "PUT", got.method, "request method")
	assert.Equal(t, "/api/todos/7", got.path, "request path")
	assert.Equal(t, "notify=true", got.query, "request query")
	assert.Equal(t, "application/json", got.ctype, "Content-Type")
	assert.Equal(t, "application/json", got.accept, "Accept")
	assert.Equal(t, "yes", got.header, "X-Ep")
	assert.Equal(t, `{"title":"new"}`, string(got.body), "body")
	assert.Equal(t, Key{"todos", "7", "?notify=true"}, m.Key(params{ID: 7, Notify: true}), "Key")

	// Method "" means POST; path values are escaped.
	post := NewMutation[string, in, mutTodo](c, Endpoint{URL: "/todos/$id"})
	_, err = post.Do(t.Context(), "../admin", in{Title: "x"})
	require.NoError(t, err)
	assert.Equal(t, "POST", got.method, "request method")
	assert.Equal(t, "/api/todos/..%2Fadmin", got.path, "request path")
}

func TestMutationEmptyAnswerGivesZero(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusOK} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
		}))
		c := NewClient(WithBaseURL(srv.URL))
		m := NewMutation[int, struct{}, *mutTodo](c, Endpoint{Method: "DELETE", URL: "/todos/$id"})
		r, err := m.Do(t.Context(), 1, struct{}{})
		assert.NoError(t, err, "status %d", status)
		assert.Nil(t, r, "status %d", status)
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
		if assert.ErrorAs(t, err, &he, tc.path) {
			assert.Equal(t, tc.status, he.StatusCode, tc.path)
			assert.Equal(t, "POST", he.Method, tc.path)
			assert.True(t, strings.HasSuffix(he.URL, "/"+tc.path), "%s: URL %s", tc.path, he.URL)
		}
		assert.Equal(t, int64(1), hits.Load(), "%s: requests (no retries by default)", tc.path)
	}
	_, err := m.Do(t.Context(), "422", nil)
	var he *HTTPError
	if assert.ErrorAs(t, err, &he) {
		assert.Contains(t, string(he.Body), "title required", "HTTPError.Body holds the answer")
	}
	for _, path := range []string{"badjson", "invalid"} {
		_, err := m.Do(t.Context(), path, nil)
		var de *DecodeError
		assert.ErrorAs(t, err, &de, path)
	}
	r, err := m.Do(t.Context(), "ok", nil)
	assert.NoError(t, err, "ok")
	assert.Equal(t, "ann", r.Name, "ok")

	// A body that cannot be encoded fails before anything is sent or run.
	called := false
	bad := NewMutation[string, any, mutValidated](c, Endpoint{URL: "/$path"},
		MutationOnMutate(func(context.Context, string, any) (func(), error) { called = true; return nil, nil }))
	hits.Store(0)
	_, err = bad.Do(t.Context(), "ok", func() {})
	assert.Error(t, err, "unencodable body")
	assert.False(t, called, "unencodable body: hook called")
	assert.Zero(t, hits.Load(), "unencodable body: requests")
	// So does a p that cannot be bound.
	_, err = m.Do(t.Context(), "", nil)
	assert.ErrorContains(t, err, "empty value", "empty path value")
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
	r, err := m.Do(t.Context(), "x", 1)
	assert.NoError(t, err)
	assert.Equal(t, "ok", r)
	assert.Equal(t, int64(3), hits.Load(), "requests: ok after 3")
	hits.Store(0)
	_, err = m.Do(t.Context(), "bad", 1)
	assert.Error(t, err, "400")
	assert.Equal(t, int64(1), hits.Load(), "400: an error after 1 request")
	assert.Equal(t, uint64(2), c.Stats().Retries, "Stats.Retries")
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
	_, err := todo.Get(t.Context(), 2)
	require.NoError(t, err)
	gets := s.gets.Load()

	r, err := edit.Do(t.Context(), 1, mutTodo{Title: "buy oat milk"})
	require.NoError(t, err)
	assert.Equal(t, "buy oat milk", r.Title, "result = %+v", r)
	// The observed entry was refetched before Do returned.
	assert.Equal(t, int64(1), s.gets.Load()-gets, "refetches (the observed entry only)")
	st := o.State()
	assert.Equal(t, "buy oat milk", st.Data.Title, "observed state after Do = %+v", st)
	assert.False(t, st.IsInvalidated, "observed state after Do = %+v", st)
	assert.False(t, st.IsFetching(), "observed state after Do = %+v", st)
	// The unobserved one is marked and refetches on its next Get.
	st = todo.State(2)
	assert.True(t, st.IsInvalidated, "unobserved state after Do = %+v", st)
	assert.True(t, st.IsStale, "unobserved state after Do = %+v", st)
	assert.Equal(t, "walk dog", st.Data.Title, "unobserved state after Do = %+v", st)
	_, err = todo.Get(t.Context(), 2)
	assert.NoError(t, err, "Get of the invalidated entry")
	assert.Equal(t, int64(2), s.gets.Load()-gets, "fetches after Get of the invalidated entry")
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
	require.ErrorAs(t, err, &he, "want a 500")
	require.Equal(t, 500, he.StatusCode, "Do err = %v", err)
	assert.True(t, rolledBack.Load(), "rollback did not run")
	d, _ := todo.Peek(1)
	assert.Equal(t, old, d, "data after rollback")
	assert.Equal(t, int64(1), s.gets.Load()-gets, "refetches after the failure (Invalidates runs on failure too)")
	o.Close()
	<-col.done
	assert.Equal(t, []mutTodo{old, optimistic, old}, col.list(), "observer saw")
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
	require.NoError(t, err)
	require.Equal(t, truth, r, "Do")
	st := o.State()
	assert.Equal(t, truth, st.Data, "state after Do = %+v, want the server's", st)
	assert.False(t, st.IsInvalidated, "state after Do = %+v", st)
	o.Close()
	<-col.done
	assert.Equal(t, []mutTodo{old, optimistic, truth}, col.list(), "observer saw")
}

func TestOptimisticUpdateRollback(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"n"}, func(context.Context, int) (int, error) { return 0, errors.New("no") }, StaleTime(Forever))

	// Restores old data.
	q.SetData(1, 10)
	rb := OptimisticUpdate(q, 1, func(old int, ok bool) int { return old + 1 })
	v, _ := q.Peek(1)
	require.Equal(t, 11, v, "optimistic value")
	rb()
	rb() // a second call does nothing
	v, ok := q.Peek(1)
	assert.True(t, ok, "after rollback")
	assert.Equal(t, 10, v, "after rollback")

	// Does not overwrite newer data.
	rb = OptimisticUpdate(q, 1, func(old int, ok bool) int { return 20 })
	q.SetData(1, 30) // a push from the server
	rb()
	v, _ = q.Peek(1)
	assert.Equal(t, 30, v, "rollback overwrote newer data")

	// Removes data that was not there.
	rb = OptimisticUpdate(q, 2, func(old int, ok bool) int {
		assert.False(t, ok, "ok for a missing entry")
		return 5
	})
	rb()
	_, ok = q.Peek(2)
	assert.False(t, ok, "rollback kept data that was not there before")
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
		assert.Equal(t, want, events, "%s: events\n%s", name, strings.Join(events, "\n"))
		events = nil
	}
	_, err := m.Do(t.Context(), "ok", 1)
	require.NoError(t, err)
	check("success",
		"mutate1 ok 1", "mutate2 ok 1", `success ok:1 ok 1`,
		`settled "ok:1" false ok 1 (query invalidated false, data "fetched")`)

	q.SetData("x", "set")
	_, err = m.Do(t.Context(), "fail", 2)
	require.Error(t, err)
	check("failure",
		"mutate1 fail 2", "mutate2 fail 2", "rollback2", "rollback1", "error 409 fail 2",
		`settled "" true fail 2 (query invalidated false, data "fetched")`)

	mutateErr = errors.New("offline draft")
	_, err = m.Do(t.Context(), "ok", 3)
	require.ErrorContains(t, err, "offline draft")
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
				assert.Contains(t, msg, tc.want, "panic")
				assert.Contains(t, msg, "PATCH /todos/$id", "panic")
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
		assert.Panics(t, f, name)
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
		assert.LessOrEqual(t, s.inflight[key], 1, "%s: requests in flight at once", key)
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
			assert.NoError(t, err) // not require: this is not the test's goroutine
			results[i] = r
		})
		waitFor(t, "the call to queue", func() bool { return queued(c) == i+1 })
	}
	require.Equal(t, "0", <-s.arrived, "first request")
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
			require.Equal(t, fmt.Sprint(i+1), <-s.arrived, "request %d", i+1)
		}
	}
	wg.Wait()
	for i, r := range results {
		assert.Equal(t, fmt.Sprint(i), r, "result %d", i)
	}
	assert.Equal(t, []string{"0", "b", "other", "1", "2", "3", "4"}, sortMiddle(s.order), "server order %q", s.order)
	assert.Zero(t, queued(c), "calls left in the queues")
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
	assert.Equal(t, []string{"add x", "del y", "add z"}, s.order, "order")
	assert.Equal(t, 1, s.maxPar, "requests in flight at once")
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
	assert.Equal(t, "b1", <-s.arrived)
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
	assert.ErrorIs(t, <-errc, context.Canceled)
	s.let("first")
	assert.Equal(t, "third", <-s.arrived, "next request")
	s.let("third")
	wg.Wait()
	assert.Equal(t, int64(2), hooks.Load(), "OnSettled runs (not for the call that never started)")
	assert.Zero(t, queued(c), "calls left in the queues")
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
		assert.ErrorIs(t, <-errs, ErrClosed)
	}
	assert.True(t, rolledBack.Load(), "the cancelled call was not rolled back")
	_, err := m.Do(t.Context(), "k", "after")
	assert.Same(t, ErrClosed, err, "Do after Close: %v", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Equal(t, []string{"in flight"}, s.order, "server got")
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
	assert.ErrorIs(t, <-errc, context.Canceled)
	assert.Equal(t, []string{"rollback", "error canceled=true"}, events)

	// A deadline reached while offline: the request is never sent.
	c.SetOnline(false)
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := m.Do(ctx, "k", "offline")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "offline")
	s.mu.Lock()
	assert.Len(t, s.order, 1, "requests sent")
	s.mu.Unlock()
	// Back online, a waiting call goes on.
	errc = make(chan error, 1)
	go func() { _, err := m.Do(t.Context(), "k", "later"); errc <- err }()
	c.SetOnline(true)
	assert.Equal(t, "later", <-s.arrived)
	s.let("later")
	assert.NoError(t, <-errc)
}

func TestMutationDeadContext(t *testing.T) {
	s, c := newSerialServer(t)
	called := false
	m := NewMutation[string, string, string](c, Endpoint{URL: "/$k"},
		MutationOnSettled(func(context.Context, string, error, string, string) { called = true }))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := m.Do(ctx, "k", "x")
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, called, "hook called")
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Empty(t, s.order, "sent")
}

func TestDeprecatedMutationOptionsMatchTheirNewNames(t *testing.T) {
	f := Filter{Key: Key{"todos"}, Exact: true}
	var old, cur mutationConfig
	Invalidates(f)(&old)
	Serial()(&old)
	MutationInvalidates(f)(&cur)
	MutationSerial()(&cur)
	assert.Equal(t, old, cur, "Invalidates+Serial against MutationInvalidates+MutationSerial")
}

// TestMutationTimeout: MutationTimeout bounds each attempt, the attempt
// that runs out fails with context.DeadlineExceeded, and it is retried only
// as MutationRetry allows.
func TestMutationTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stalls atomic.Int32
		up := newPipeUpstream(func(n int, conn net.Conn) {
			if stalls.Add(-1) >= 0 {
				stall(conn) // never an answer
				return
			}
			io.WriteString(conn, pipeOK+`{"id":"1","name":"whole"}`)
		})
		up.onRequest = func(r *http.Request) { io.Copy(io.Discard, r.Body) }
		defer up.close()
		c := NewClient(WithBaseURL("http://upstream.test"), WithHTTPClient(up.client))
		defer c.Close()
		once := NewMutation[string, user, user](c, Endpoint{Method: "PUT", URL: "/once/$id"}, MutationTimeout(5*time.Second))
		retried := NewMutation[string, user, user](c, Endpoint{Method: "PUT", URL: "/retried/$id"},
			MutationTimeout(5*time.Second), MutationRetry(1),
			MutationRetryDelay(func(int, error) time.Duration { return time.Second }))

		stalls.Store(1)
		start := time.Now()
		_, err := once.Do(t.Context(), "1", user{ID: "1"})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 5*time.Second, time.Since(start), "one attempt of 5 s")
		assert.EqualValues(t, 1, up.reqs.Load(), "not retried without MutationRetry")

		stalls.Store(1)
		start = time.Now()
		u, err := retried.Do(t.Context(), "1", user{ID: "1"})
		require.NoError(t, err)
		assert.Equal(t, "whole", u.Name)
		assert.Equal(t, 6*time.Second, time.Since(start), "an attempt of 5 s, a delay of 1 s, an answer")
		assert.EqualValues(t, 3, up.reqs.Load())

		stalls.Store(2)
		start = time.Now()
		_, err = retried.Do(t.Context(), "1", user{ID: "1"})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 11*time.Second, time.Since(start), "two attempts of 5 s and the delay between them")
		assert.EqualValues(t, 5, up.reqs.Load())
	})
	assert.Panics(t, func() { MutationTimeout(-time.Second) })
}
