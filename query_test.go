package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func echoUser(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/users/")
	json.NewEncoder(w).Encode(user{ID: id, Name: "user " + id})
}

func TestGetOverHTTP(t *testing.T) {
	a := newAPI(t, echoUser)
	c := newHTTPClient(t, a, WithHeader("X-Api-Key", "k1"))
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$userId", Header: http.Header{"X-Trace": {"t"}}}, StaleTime(time.Minute))
	u, err := q.Get(context.Background(), "42")
	require.NoError(t, err)
	assert.Equal(t, user{ID: "42", Name: "user 42"}, u)
	assert.Equal(t, "/v1/users/42", a.lastRaw.Load())
	h := a.lastHdr.Load().(http.Header)
	assert.Equal(t, "k1", h.Get("X-Api-Key"))
	assert.Equal(t, "t", h.Get("X-Trace"))
	assert.Equal(t, "application/json", h.Get("Accept"))
	assert.Equal(t, Key{"users", "42"}, q.Key("42"))
	u, _ = q.Get(context.Background(), "42")
	assert.Equal(t, "42", u.ID)
	assert.EqualValues(t, 1, a.hits.Load())
}

func TestStructParamsBindPathAndQuery(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `["ok"]`) })
	c := newHTTPClient(t, a)
	type params struct {
		UserID string `path:"userId"`
		Page   int    `query:"page,omitempty"`
		Sort   string `query:"sort,omitempty"`
	}
	q := NewQuery[params, []string](c, Endpoint{URL: "/users/{userId}/posts"})
	_, err := q.Get(context.Background(), params{UserID: "7", Page: 2, Sort: "new"})
	require.NoError(t, err)
	assert.Equal(t, "/v1/users/7/posts?page=2&sort=new", a.lastRaw.Load())
	assert.Equal(t, Key{"users", "7", "posts", "?page=2&sort=new"}, q.Key(params{UserID: "7", Page: 2, Sort: "new"}))
	assert.Equal(t, Key{"users", "7", "posts"}, q.Key(params{UserID: "7"}))
}

func TestPathValuesCannotEscapeTheirSegment(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `"ok"`) })
	c := newHTTPClient(t, a)
	q := NewQuery[string, string](c, Endpoint{URL: "/users/$userId/profile"})
	hostile := map[string]string{
		"../admin":   "/v1/users/..%2Fadmin/profile",
		"42?x=1":     "/v1/users/42%3Fx=1/profile",
		"42#f":       "/v1/users/42%23f/profile",
		"a/b":        "/v1/users/a%2Fb/profile",
		"a\r\nX: y":  "/v1/users/a%0D%0AX:%20y/profile",
		"@evil.test": "/v1/users/@evil.test/profile",
		"ａｄｍｉｎ":      "/v1/users/%EF%BD%81%EF%BD%84%EF%BD%8D%EF%BD%89%EF%BD%8E/profile",
	}
	for in, want := range hostile {
		_, err := q.Fetch(context.Background(), in)
		require.NoError(t, err, in)
		assert.Equal(t, want, a.lastRaw.Load(), "value %q", in)
	}
	hits := a.hits.Load()
	// Dot segments (in any escaping) and empty values are refused, unsent.
	for _, in := range []string{"", ".", "..", "%2e%2e"} {
		_, err := q.Get(context.Background(), in)
		require.ErrorIs(t, err, ErrInvalidPathValue, "value %q is refused", in)
		assert.Contains(t, err.Error(), "userId")
	}
	assert.Equal(t, hits, a.hits.Load())
}

func TestHTTPErrorKeepsCachedData(t *testing.T) {
	var fail atomic.Bool
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, strings.Repeat("x", 10_000))
			return
		}
		echoUser(w, r)
	})
	base := strings.Replace(a.URL, "http://", "http://alice:secret@", 1)
	c := NewClient(WithBaseURL(base + "/v1"))
	defer c.Close()
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$userId"})
	_, err := q.Get(context.Background(), "1")
	require.NoError(t, err)
	fail.Store(true)
	_, err = q.Get(context.Background(), "1")
	var he *HTTPError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, 404, he.StatusCode)
	assert.Equal(t, "GET", he.Method)
	assert.Len(t, he.Body, 4096, "at most 4 KiB of body")
	assert.Equal(t, a.URL+"/v1/users/1", he.URL, "no user info")
	assert.NotContains(t, err.Error(), "secret")
	assert.NotContains(t, err.Error(), "alice")
	assert.EqualValues(t, 2, a.hits.Load(), "4xx is not retried")
	s := q.State("1")
	assert.Equal(t, "1", s.Data.ID, "the last good data stays")
	assert.Equal(t, StatusError, s.Status)
}

func TestDecodeAndValidateErrors(t *testing.T) {
	var body atomic.Value
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body.Load().(string)) })
	c := newHTTPClient(t, a)
	q := NewQuery[struct{}, user](c, Endpoint{URL: "/me"})
	for _, b := range []string{`{"id":`, `{"name":"no id"}`, `{"id":"1"} trailing`, `[1,2]`} {
		body.Store(b)
		_, err := q.Fetch(context.Background(), struct{}{})
		var de *DecodeError
		require.ErrorAs(t, err, &de, "body %s", b)
		assert.Equal(t, a.URL+"/v1/me", de.URL)
	}
	assert.EqualValues(t, 4, a.hits.Load(), "decode errors are not retried")
	body.Store(`{"id":"1","name":"ok"}`)
	u, err := q.Fetch(context.Background(), struct{}{})
	require.NoError(t, err)
	assert.Equal(t, "ok", u.Name)
}

type pointerValidated struct{ N int }

func (p *pointerValidated) Validate() error {
	if p.N < 0 {
		return errors.New("negative")
	}
	return nil
}

func TestValidateOnPointerReceiver(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"N":-1}`) })
	c := newHTTPClient(t, a)
	q := NewQuery[struct{}, pointerValidated](c, Endpoint{URL: "/n"})
	_, err := q.Get(context.Background(), struct{}{})
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	assert.Contains(t, err.Error(), "negative")
}

func TestBodyOverTheLimitIsRefused(t *testing.T) {
	big := `"` + strings.Repeat("x", 2000) + `"`
	for _, chunked := range []bool{false, true} {
		a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			}
			io.WriteString(w, big)
			if chunked {
				w.(http.Flusher).Flush()
				io.WriteString(w, big) // keeps going past the limit
			}
		})
		c := newHTTPClient(t, a, WithMaxResponseBytes(1000))
		q := NewQuery[struct{}, string](c, Endpoint{URL: "/big"})
		q.SetData(struct{}{}, "cached")
		_, err := q.Fetch(context.Background(), struct{}{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "exceeds 1000 bytes")
		assert.EqualValues(t, 1, a.hits.Load(), "not retried")
		v, _ := q.Peek(struct{}{})
		assert.Equal(t, "cached", v)
	}
}

func TestRequestEditorSignsAndCanRefuse(t *testing.T) {
	a := newAPI(t, echoUser)
	refuse := errors.New("no token")
	var fail atomic.Bool
	c := newHTTPClient(t, a, WithRequestEditor(func(r *http.Request) error {
		if fail.Load() {
			return refuse
		}
		r.Header.Set("Authorization", "Bearer secret-token")
		return nil
	}))
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"})
	_, err := q.Get(context.Background(), "1")
	require.NoError(t, err)
	assert.Equal(t, "Bearer secret-token", a.lastHdr.Load().(http.Header).Get("Authorization"))
	fail.Store(true)
	_, err = q.Get(context.Background(), "1")
	require.ErrorIs(t, err, refuse)
	assert.EqualValues(t, 1, a.hits.Load(), "a refused request is not sent nor retried")
}

func TestNewQueryPanicsOnABadEndpoint(t *testing.T) {
	c := NewClient(WithBaseURL("http://api.test"))
	defer c.Close()
	type params struct{ Name string }
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"unbound variable", func() { NewQuery[params, string](c, Endpoint{URL: "/users/$userId"}) }, "userId"},
		{"scalar for two variables", func() { NewQuery[string, string](c, Endpoint{URL: "/a/$x/b/$y"}) }, "string"},
		{"unclosed brace", func() { NewQuery[string, string](c, Endpoint{URL: "/a/{x"}) }, "{"},
		{"relative without base", func() {
			c2 := NewClient()
			defer c2.Close()
			NewQuery[string, string](c2, Endpoint{URL: "/a/$x"})
		}, "WithBaseURL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				require.NotNil(t, r, "NewQuery must panic")
				assert.Contains(t, fmt.Sprint(r), tc.want)
			}()
			tc.f()
		})
	}
}

func TestTransportErrorsAreRetriedAndClear(t *testing.T) {
	a := newAPI(t, echoUser)
	a.Close() // nothing listens any more
	c := NewClient(WithBaseURL(a.URL))
	defer c.Close()
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"}, Retry(1), RetryDelay(func(int, error) time.Duration { return time.Millisecond }))
	_, err := q.Get(context.Background(), "1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GET "+a.URL+"/users/1")
	assert.Equal(t, 2, q.State("1").FailureCount)
}

func TestLiteralSegments(t *testing.T) {
	tests := []struct {
		tmpl string
		abs  bool
		want []string
	}{
		{"/users/$userId", false, []string{"users"}},
		{"/users/{userId}/posts", false, []string{"users"}},
		{"/v1/users", false, []string{"v1", "users"}},
		{"/files/f$id.json", false, []string{"files"}},
		{"/$x", false, nil},
		{"/search?q=1", false, []string{"search"}},
		{"https://api.test/v2/items/$id", true, []string{"v2", "items"}},
		{"https://api.test", true, nil},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, literalSegments(tt.tmpl, tt.abs), tt.tmpl)
	}
}

// countingTransport counts the requests that go through it.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func TestClientOptionsReachQueries(t *testing.T) {
	a := newAPI(t, echoUser)
	tr := &countingTransport{}
	c := newHTTPClient(t, a,
		WithHTTPClient(&http.Client{Transport: tr}),
		WithQueryDefaults(StaleTime(Forever), KeyPrefix("svc")))
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$userId"})
	ctx := context.Background()
	_, err := q.Get(ctx, "1")
	require.NoError(t, err)
	_, err = q.Get(ctx, "1")
	require.NoError(t, err)
	assert.EqualValues(t, 1, tr.n.Load(), "requests go through WithHTTPClient's client; StaleTime(Forever) from the defaults")
	assert.Equal(t, Key{"svc", "users", "1"}, q.Key("1"), "KeyPrefix from the defaults")

	own := NewQuery[string, user](c, Endpoint{URL: "/users/$userId"}, StaleTime(0), KeyPrefix("own"))
	own.Get(ctx, "1")
	own.Get(ctx, "1")
	assert.EqualValues(t, 3, tr.n.Load(), "a query's own options win over the defaults")
	assert.Equal(t, Key{"own", "users", "1"}, own.Key("1"))
}
