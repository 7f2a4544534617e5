package qcachetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcachetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answer is what a client got for one request.
type answer struct {
	status int
	ctype  string
	length int64
	body   string
}

func get(t *testing.T, c *http.Client, method, url, body string) (answer, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	require.NoError(t, err)
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, string(b)}, err
}

func TestUpstreamScripts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replies []qcachetest.Reply
		want    []answer
	}{
		{
			name:    "one reply repeats",
			replies: []qcachetest.Reply{{Body: User{ID: "1", Name: "Ada"}}},
			want: []answer{
				{200, "application/json", 23, `{"id":"1","name":"Ada"}`},
				{200, "application/json", 23, `{"id":"1","name":"Ada"}`},
			},
		},
		{
			name: "in order, then the last repeats",
			replies: []qcachetest.Reply{
				{Status: 503, Header: http.Header{"Retry-After": {"2"}}},
				{Body: "one"},
				{Status: 201, Body: []byte("two"), Header: http.Header{"content-type": {"text/plain"}}},
			},
			want: []answer{
				{503, "", 0, ""},
				{200, "application/json", 5, `"one"`},
				{201, "text/plain", 3, "two"},
				{201, "text/plain", 3, "two"},
				{201, "text/plain", 3, "two"},
			},
		},
		{
			name: "bodies",
			replies: []qcachetest.Reply{
				{Body: json.RawMessage(`[1, 2]`)},
				{Body: []int{1, 2}},
				{Body: 42},
				{Body: nil, Status: 204},
				{Body: []byte{}},
			},
			want: []answer{
				{200, "text/plain; charset=utf-8", 6, `[1, 2]`},
				{200, "application/json", 5, `[1,2]`},
				{200, "application/json", 2, `42`},
				{204, "", 0, ""},
				{200, "", 0, ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var up qcachetest.Upstream
			up.Script("/things/{id}", tc.replies...)
			for i, want := range tc.want {
				got, err := get(t, up.Client(), "GET", "http://api.test/things/1", "")
				require.NoError(t, err, "request %d", i+1)
				assert.Equal(t, want, got, "request %d", i+1)
			}
			assert.Equal(t, len(tc.want), up.Count("/things/1"))
		})
	}
}

// TestUpstreamHeaders: scripted headers reach the client, Retry-After is
// honoured by qcache to the virtual second, and a Content-Length longer
// than the body cuts it (a transport error, retried).
func TestUpstreamHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var up qcachetest.Upstream
		up.Script("GET /users/{id}",
			qcachetest.Reply{Status: 429, Header: http.Header{"Retry-After": {"7"}, "X-Why": {"busy"}}},
			qcachetest.Reply{Body: User{ID: "1", Name: "Ada"}, Header: http.Header{"Content-Length": {"100"}}},
			qcachetest.Reply{Body: User{ID: "1", Name: "Ada"}},
		)
		c := qcache.NewClient(qcache.WithBaseURL("http://api.test"), qcache.WithHTTPClient(up.Client()))
		defer c.Close()
		q := qcache.NewQuery[string, User](c, qcache.Endpoint{URL: "/users/$id"},
			qcache.RetryDelay(func(int, error) time.Duration { return 3 * time.Second }))
		start := time.Now()
		u, err := q.Fetch(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "Ada", u.Name)
		reqs := up.Requests("/users/1")
		require.Len(t, reqs, 3)
		assert.Equal(t, 7*time.Second, reqs[1].Time.Sub(start), "Retry-After: 7")
		assert.Equal(t, 10*time.Second, reqs[2].Time.Sub(start), "the cut body was retried after RetryDelay")

		// Without retries, each failure shows as it is.
		up.Script("GET /users/{id}",
			qcachetest.Reply{Status: 429, Header: http.Header{"Retry-After": {"7"}, "X-Why": {"busy"}}},
			qcachetest.Reply{Body: User{ID: "1"}, Header: http.Header{"Content-Length": {"100"}}},
		)
		q0 := qcache.NewQuery[string, User](c, qcache.Endpoint{URL: "/users/$id"}, qcache.Retry(0), qcache.KeyPrefix("no-retry"))
		_, err = q0.Fetch(t.Context(), "1")
		var he *qcache.HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, 429, he.StatusCode)
		assert.Equal(t, "busy", he.Header.Get("X-Why"))
		_, err = q0.Fetch(t.Context(), "1")
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		var de *qcache.DecodeError
		assert.False(t, errors.As(err, &de), "a cut body is no *DecodeError: %v", err)
	})
}

// TestUpstreamLatencyAndReset: latency passes in virtual time and is cut
// short by the request's end; Reset is a transport error.
func TestUpstreamLatencyAndReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var up qcachetest.Upstream
		up.Script("/slow", qcachetest.Reply{Body: "ok", Latency: 3 * time.Second})
		up.Script("/reset",
			qcachetest.Reply{Reset: true, Latency: time.Second},
			qcachetest.Reply{Body: "back"})
		c := up.Client()
		start := time.Now()
		got, err := get(t, c, "GET", "http://api.test/slow", "")
		require.NoError(t, err)
		assert.Equal(t, `"ok"`, got.body)
		assert.Equal(t, 3*time.Second, time.Since(start))

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://api.test/slow", nil)
		start = time.Now()
		_, err = c.Do(req)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(start))
		synctest.Wait() // the handler stopped waiting at once
		assert.Equal(t, time.Second, time.Since(start))

		start = time.Now()
		_, err = get(t, c, "GET", "http://api.test/reset", "")
		assert.ErrorIs(t, err, http.ErrAbortHandler)
		assert.Equal(t, time.Second, time.Since(start))
		got, err = get(t, c, "GET", "http://api.test/reset", "")
		require.NoError(t, err)
		assert.Equal(t, `"back"`, got.body)

		// qcache retries a reset as any transport error.
		up.Script("/reset", qcachetest.Reply{Reset: true}, qcachetest.Reply{Body: "back"})
		qc := qcache.NewClient(qcache.WithBaseURL("http://api.test"), qcache.WithHTTPClient(c))
		defer qc.Close()
		q := qcache.NewQuery[struct{}, string](qc, qcache.Endpoint{URL: "/reset"})
		v, err := q.Get(t.Context(), struct{}{})
		require.NoError(t, err)
		assert.Equal(t, "back", v)
		assert.EqualValues(t, 1, qc.Stats().Retries)
	})
}

// TestUpstreamRecordsRequests: every request is recorded, matched or not,
// with what a test wants to assert on.
func TestUpstreamRecordsRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var up qcachetest.Upstream
		up.Script("GET /users/{id}", qcachetest.Reply{Body: User{ID: "1"}})
		up.Script("PUT /users/{id}", qcachetest.Reply{Body: User{ID: "1", Name: "Bob"}})
		up.Script("GET /users/me", qcachetest.Reply{Status: 403})
		c := qcache.NewClient(qcache.WithBaseURL("http://api.test/v1"), qcache.WithHTTPClient(up.Client()),
			qcache.WithHeader("X-Api-Key", "k"))
		defer c.Close()
		type page struct {
			ID   string `path:"id"`
			Page int    `query:"page"`
		}
		q := qcache.NewQuery[page, User](c, qcache.Endpoint{URL: "/users/$id"}, qcache.Retry(0))
		m := qcache.NewMutation[string, User, User](c, qcache.Endpoint{Method: "PUT", URL: "/users/$id"})

		_, err := q.Get(t.Context(), page{"1", 2})
		require.Error(t, err, "no pattern has the /v1 prefix: 404")
		up.Script("GET /v1/users/{id}", qcachetest.Reply{Body: User{ID: "1"}})
		time.Sleep(time.Second)
		_, err = q.Fetch(t.Context(), page{"1", 2})
		require.NoError(t, err)
		time.Sleep(time.Second)
		_, err = m.Do(t.Context(), "1", User{ID: "1", Name: "Bob"})
		require.Error(t, err, "PUT /v1/users/1 matches nothing: 404 (or 405)")
		_, err = get(t, up.Client(), "PUT", "http://api.test/users/1", `{"name":"Bob"}`)
		require.NoError(t, err)
		_, err = get(t, up.Client(), "GET", "http://api.test/users/me", "")
		require.NoError(t, err)

		all := up.Requests("")
		require.Len(t, all, 5)
		r := all[0]
		assert.Equal(t, "GET", r.Method)
		assert.Equal(t, "/v1/users/1", r.Path)
		assert.Equal(t, "2", r.Query.Get("page"))
		assert.Equal(t, "k", r.Header.Get("X-Api-Key"))
		assert.Equal(t, "application/json", r.Header.Get("Accept"))
		assert.Empty(t, r.Body)
		assert.Equal(t, "", r.Pattern, "unmatched")
		assert.Equal(t, start, r.Time)

		r = all[1]
		assert.Equal(t, "GET /v1/users/{id}", r.Pattern)
		assert.Equal(t, time.Second, r.Time.Sub(start))

		r = all[2]
		assert.Equal(t, "PUT", r.Method)
		assert.JSONEq(t, `{"id":"1","name":"Bob"}`, string(r.Body))
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		assert.Equal(t, 2*time.Second, r.Time.Sub(start))

		assert.Equal(t, `{"name":"Bob"}`, string(all[3].Body))
		assert.Equal(t, "PUT /users/{id}", all[3].Pattern)
		assert.Equal(t, "GET /users/me", all[4].Pattern, "the most specific pattern answers")

		assert.Equal(t, 3, up.Count("/v1/users/1"), "by path")
		assert.Equal(t, 1, up.Count("GET /v1/users/{id}"), "by pattern")
		assert.Equal(t, 1, up.Count("PUT /users/{id}"))
		assert.Equal(t, 1, up.Count("/users/me"))
		assert.Equal(t, 1, up.Count("GET /users/me"))
		assert.Equal(t, 0, up.Count("/nowhere"))
		assert.Len(t, up.Requests("/v1/users/1"), 3)
		assert.Empty(t, up.Requests("/nowhere"))
	})
}

func TestUpstreamZeroValueAnswers404(t *testing.T) {
	var up qcachetest.Upstream
	got, err := get(t, up.Client(), "GET", "http://api.test/x?y=1", "")
	require.NoError(t, err)
	assert.Equal(t, 404, got.status)
	require.Equal(t, 1, up.Count("/x"))
	assert.Equal(t, "1", up.Requests("/x")[0].Query.Get("y"))
	assert.Equal(t, 1, up.Count(""))

	up.Script("/x", qcachetest.Reply{})
	got, err = get(t, up.Client(), "GET", "http://api.test/x", "")
	require.NoError(t, err)
	assert.Equal(t, 200, got.status)
	assert.Equal(t, 2, up.Count("/x"), "a path that is also a pattern counts each request once")
	assert.Equal(t, "/x", up.Requests("/x")[1].Pattern)
}

func TestUpstreamScriptFunc(t *testing.T) {
	var up qcachetest.Upstream
	up.ScriptFunc("POST /echo/{word}", func(n int, r *http.Request) qcachetest.Reply {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			panic(err)
		}
		return qcachetest.Reply{Status: 200 + n, Body: map[string]string{"word": r.PathValue("word"), "body": string(b)}}
	})
	for n := 1; n <= 3; n++ {
		got, err := get(t, up.Client(), "POST", "http://api.test/echo/hi", fmt.Sprint("b", n))
		require.NoError(t, err)
		assert.Equal(t, 200+n, got.status)
		assert.JSONEq(t, fmt.Sprintf(`{"word":"hi","body":"b%d"}`, n), got.body)
	}
	assert.Equal(t, "b2", string(up.Requests("/echo/hi")[1].Body), "recorded, and still readable by the func")

	// Scripting again starts over; a body that cannot be encoded is a
	// transport error for the client.
	up.ScriptFunc("POST /echo/{word}", func(n int, r *http.Request) qcachetest.Reply {
		if n == 1 {
			return qcachetest.Reply{Body: make(chan int)}
		}
		return qcachetest.Reply{Body: n}
	})
	_, err := get(t, up.Client(), "POST", "http://api.test/echo/hi", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "encoding a reply body")
	got, err := get(t, up.Client(), "POST", "http://api.test/echo/hi", "x")
	require.NoError(t, err)
	assert.Equal(t, "2", got.body)

	up.Script("POST /echo/{word}", qcachetest.Reply{Body: "scripted"})
	got, err = get(t, up.Client(), "POST", "http://api.test/echo/hi", "x")
	require.NoError(t, err)
	assert.Equal(t, `"scripted"`, got.body)
}

func TestUpstreamScriptPanicsOnMistakes(t *testing.T) {
	var up qcachetest.Upstream
	assert.PanicsWithValue(t, `qcachetest: Script "/a" without replies`, func() { up.Script("/a") })
	assert.Panics(t, func() { up.Script("/a", qcachetest.Reply{Body: func() {}}) }, "not JSON")
	assert.Panics(t, func() { up.Script("GET", qcachetest.Reply{}) }, "malformed pattern")
	assert.Panics(t, func() { up.ScriptFunc("/a", nil) })
	up.Script("/x/{a}", qcachetest.Reply{})
	assert.Panics(t, func() { up.Script("/x/{b}", qcachetest.Reply{}) }, "conflicting patterns")
	// After all that, the upstream still works.
	got, err := get(t, up.Client(), "GET", "http://api.test/x/1", "")
	require.NoError(t, err)
	assert.Equal(t, 200, got.status)
	got, err = get(t, up.Client(), "GET", "http://api.test/a", "")
	require.NoError(t, err)
	assert.Equal(t, 404, got.status)
}

// TestUpstreamBehindARealServer: the same scripts work behind
// httptest.NewServer, on the real clock.
func TestUpstreamBehindARealServer(t *testing.T) {
	var up qcachetest.Upstream
	up.Script("GET /users/{id}",
		qcachetest.Reply{Reset: true},
		qcachetest.Reply{Status: 500, Body: "oops"},
		qcachetest.Reply{Body: User{ID: "1", Name: "Ada"}, Latency: 10 * time.Millisecond},
	)
	srv := httptest.NewServer(&up)
	defer srv.Close()
	c := srv.Client()
	_, err := get(t, c, "GET", srv.URL+"/users/1", "")
	assert.Error(t, err, "reset")
	got, err := get(t, c, "GET", srv.URL+"/users/1", "")
	require.NoError(t, err)
	assert.Equal(t, answer{500, "application/json", 6, `"oops"`}, got)
	start := time.Now()
	got, err = get(t, c, "GET", srv.URL+"/users/1", "")
	require.NoError(t, err)
	assert.Equal(t, answer{200, "application/json", 23, `{"id":"1","name":"Ada"}`}, got)
	assert.GreaterOrEqual(t, time.Since(start), 10*time.Millisecond)
	assert.Equal(t, 3, up.Count("/users/1"))
	srv.CloseClientConnections()
}

// TestUpstreamUnderConcurrency: scripting, serving and reading the record
// at once, under -race.
func TestUpstreamUnderConcurrency(t *testing.T) {
	var up qcachetest.Upstream
	up.Script("/n/{i}", qcachetest.Reply{Body: 0})
	c := up.Client()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				url := fmt.Sprintf("http://api.test/n/%d", i)
				_, err := get(t, c, "GET", url, "")
				assert.NoError(t, err)
				if j%5 == 0 {
					up.Script(fmt.Sprintf("/n/%d", i), qcachetest.Reply{Body: j})
				}
				up.Count("")
				up.Requests(fmt.Sprintf("/n/%d", i))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 160, up.Count(""))
	assert.Equal(t, 20, up.Count("/n/3"))
}
