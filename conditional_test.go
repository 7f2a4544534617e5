package qcache

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type condItem struct {
	Name string `json:"name"`
}

// condServer serves /items/{id} with an ETag, a Last-Modified, both or
// neither, answers 304 when a validator matches, and records what each
// request asked with.
type condServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     string
	etag     string
	modified string
	asked    []string // If-None-Match|If-Modified-Since of each request
}

func newCondServer(t *testing.T) *condServer {
	s := &condServer{body: `{"name":"one"}`}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
		s.asked = append(s.asked, inm+"|"+ims)
		if s.etag != "" {
			w.Header().Set("ETag", s.etag)
		}
		if s.modified != "" {
			w.Header().Set("Last-Modified", s.modified)
		}
		if (inm != "" && inm == s.etag) || (inm == "" && ims != "" && ims == s.modified) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *condServer) set(f func(s *condServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *condServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

func TestConditionalRequests(t *testing.T) {
	for _, tc := range []struct {
		name, etag, modified, want string
	}{
		{"etag", `"v1"`, "", `"v1"|`},
		{"last-modified", "", "Wed, 21 Oct 2026 07:28:00 GMT", "|Wed, 21 Oct 2026 07:28:00 GMT"},
		{"both", `"v1"`, "Wed, 21 Oct 2026 07:28:00 GMT", `"v1"|Wed, 21 Oct 2026 07:28:00 GMT`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newCondServer(t)
			srv.set(func(s *condServer) { s.etag, s.modified = tc.etag, tc.modified })
			c := NewClient(WithBaseURL(srv.URL))
			defer c.Close()
			q := NewQuery[string, *condItem](c, Endpoint{URL: "/items/$id"})
			ctx := context.Background()
			first, err := q.Get(ctx, "1")
			require.NoError(t, err)
			at := q.State("1").DataUpdatedAt
			time.Sleep(time.Millisecond) // DataUpdatedAt must move on the real clock
			second, err := q.Fetch(ctx, "1")
			require.NoError(t, err)
			assert.Same(t, first, second, "a 304 keeps the data held, without decoding")
			s := q.State("1")
			assert.True(t, s.DataUpdatedAt.After(at), "a 304 makes the data current")
			assert.Equal(t, StatusSuccess, s.Status)
			assert.Equal(t, []string{"|", tc.want}, srv.requests())
			assert.Equal(t, uint64(1), q.Stats().NotModified)
			assert.Equal(t, uint64(1), c.Stats().NotModified)

			// A changed resource: a 200 with new validators.
			srv.set(func(s *condServer) { s.body, s.etag = `{"name":"two"}`, tc.etag+"x" })
			third, err := q.Fetch(ctx, "1")
			require.NoError(t, err)
			if tc.etag != "" {
				assert.Equal(t, "two", third.Name)
			}
		})
	}
}

func TestIdenticalBodyKeepsTheSameValue(t *testing.T) {
	srv := newCondServer(t) // no validators at all
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	q := NewQuery[string, *condItem](c, Endpoint{URL: "/items/$id"})
	ctx := context.Background()
	first, err := q.Get(ctx, "1")
	require.NoError(t, err)
	second, err := q.Fetch(ctx, "1")
	require.NoError(t, err)
	assert.Same(t, first, second, "a byte-identical body keeps the same T")
	assert.Equal(t, uint64(0), q.Stats().NotModified, "that is no 304")
	srv.set(func(s *condServer) { s.body = `{"name":"two"}` })
	third, err := q.Fetch(ctx, "1")
	require.NoError(t, err)
	assert.NotSame(t, first, third)
	assert.Equal(t, "two", third.Name)
}

func TestSetDataDropsTheValidators(t *testing.T) {
	srv := newCondServer(t)
	srv.set(func(s *condServer) { s.etag = `"v1"` })
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	q := NewQuery[string, *condItem](c, Endpoint{URL: "/items/$id"})
	ctx := context.Background()
	_, err := q.Get(ctx, "1")
	require.NoError(t, err)
	q.SetData("1", &condItem{Name: "mine"})
	v, err := q.Fetch(ctx, "1")
	require.NoError(t, err)
	assert.Equal(t, "one", v.Name, "data the server did not send is not revalidated against it")
	assert.Equal(t, []string{"|", "|"}, srv.requests())
}

func TestUnaskedNotModifiedIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	q := NewQuery[string, string](c, Endpoint{URL: "/items/$id"}, Retry(0))
	_, err := q.Get(context.Background(), "1")
	var he *HTTPError
	require.ErrorAs(t, err, &he, "a 304 to a request that sent no validator has no data to keep")
	assert.Equal(t, 304, he.StatusCode)
}

// BenchmarkConditionalPoll refetches 1,000 entries whose upstream answers
// 304, against the same with a 200 and a 10 KiB JSON body, byte-identical
// to the last one (hashed, not decoded) or changed (decoded): the CPU a poll
// costs when nothing changed. Server and client share the process.
func BenchmarkConditionalPoll(b *testing.B) {
	big := `{"name":"` + strings.Repeat("x", 10<<10) + `"}`
	var n atomic.Int64
	for _, mode := range []string{"304", "200-10KiB-same", "200-10KiB-changed"} {
		b.Run(mode, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if mode == "304" {
					w.Header().Set("ETag", `"same"`)
					if r.Header.Get("If-None-Match") == `"same"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				}
				if mode == "200-10KiB-changed" {
					fmt.Fprintf(w, `{"name":"%d%s"}`, n.Add(1), big[10:len(big)-2])
					return
				}
				fmt.Fprint(w, big)
			}))
			defer srv.Close()
			c := NewClient(WithBaseURL(srv.URL))
			defer c.Close()
			q := NewQuery[int, condItem](c, Endpoint{URL: "/items/$id"})
			ctx := context.Background()
			for i := range 1000 {
				if _, err := q.Get(ctx, i); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, err := q.Fetch(ctx, i%1000); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// A 304, or a body byte-identical to the last one, is no change of data:
// an observer that waits for data changes is not woken, even for a T that
// == cannot compare.
func TestUnchangedBodyWakesNoDataObserver(t *testing.T) {
	for _, withETag := range []bool{false, true} {
		t.Run(fmt.Sprint("etag=", withETag), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if withETag {
					w.Header().Set("ETag", `"same"`)
					if r.Header.Get("If-None-Match") == `"same"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				}
				fmt.Fprint(w, `["a","b"]`)
			}))
			defer srv.Close()
			c := NewClient(WithBaseURL(srv.URL))
			defer c.Close()
			q := NewQuery[string, []string](c, Endpoint{URL: "/lists/$id"})
			ctx := context.Background()
			_, err := q.Get(ctx, "1")
			require.NoError(t, err)
			o := q.Use(ctx, "1", NotifyOn(DataChanged), Enabled(false))
			defer o.Close()
			first := <-o.Changes()
			assert.Equal(t, []string{"a", "b"}, first.Data)
			for range 3 {
				_, err := q.Fetch(ctx, "1")
				require.NoError(t, err)
			}
			select {
			case s := <-o.Changes():
				require.FailNowf(t, "woken by a fetch that changed nothing", "%+v", s)
			default:
			}
			q.SetData("1", []string{"c"})
			assert.Equal(t, []string{"c"}, (<-o.Changes()).Data, "a real change wakes it")
		})
	}
}
