package qcachetest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcachetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTransportAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		method     string
		handler    http.HandlerFunc
		status     string
		header     http.Header
		body       string
		length     int64
		readErr    error
		roundErr   string
		roundErrIs error
	}{
		{
			name:    "body without header",
			handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hi</html>") },
			status:  "200 OK", header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
			body: "<html>hi</html>", length: -1,
		},
		{
			name: "status, headers and a declared length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "4")
				w.Header().Add("X-Multi", "a")
				w.Header().Add("X-Multi", "b")
				w.WriteHeader(http.StatusCreated)
				w.Header().Set("X-After-WriteHeader", "ignored")
				w.WriteHeader(http.StatusTeapot) // superfluous
				io.WriteString(w, "true")
				w.Header().Set("X-Late", "ignored")
			},
			status: "201 Created",
			header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"4"}, "X-Multi": {"a", "b"}},
			body:   "true", length: 4,
		},
		{
			name:    "nothing written",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-A", "1") },
			status:  "200 OK", header: http.Header{"X-A": {"1"}}, length: 0,
		},
		{
			name: "informational status is not delivered",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusAccepted)
			},
			status: "202 Accepted", length: 0,
		},
		{
			name: "204 has no body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
				_, err := w.Write([]byte("x"))
				if !errors.Is(err, http.ErrBodyNotAllowed) {
					panic(fmt.Sprint("Write after 204: ", err))
				}
			},
			status: "204 No Content", length: 0,
		},
		{
			name:    "unknown status",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) },
			status:  "599 status code 599", length: 0,
		},
		{
			name:   "HEAD eats the body",
			method: http.MethodHead,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			},
			status: "200 OK", header: http.Header{"Content-Length": {"5"}, "Content-Type": {"text/plain; charset=utf-8"}},
			length: 5,
		},
		{
			name: "short body fails its last read",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "10")
				io.WriteString(w, "abc")
			},
			status: "200 OK", header: http.Header{"Content-Length": {"10"}, "Content-Type": {"text/plain; charset=utf-8"}},
			body: "abc", length: 10, readErr: io.ErrUnexpectedEOF,
		},
		{
			name: "writes past the declared length fail",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "3")
				io.WriteString(w, "ab")
				if _, err := io.WriteString(w, "cd"); !errors.Is(err, http.ErrContentLength) {
					panic(fmt.Sprint("long write: ", err))
				}
				io.WriteString(w, "c")
			},
			status: "200 OK", header: http.Header{"Content-Length": {"3"}, "Content-Type": {"text/plain; charset=utf-8"}},
			body: "abc", length: 3,
		},
		{
			name: "bad Content-Length is dropped",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "x")
				io.WriteString(w, "ab")
			},
			status: "200 OK", header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, body: "ab", length: -1,
		},
		{
			name:     "panic before the answer",
			handler:  func(w http.ResponseWriter, r *http.Request) { panic("boom") },
			roundErr: "qcachetest: the handler panicked: boom",
		},
		{
			name:     "bad status code panics as in net/http",
			handler:  func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(42) },
			roundErr: "invalid WriteHeader code 42",
		},
		{
			name:       "abort before the answer",
			handler:    func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) },
			roundErr:   "cut the connection",
			roundErrIs: http.ErrAbortHandler,
		},
		{
			name: "panic mid-body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "part")
				panic("boom")
			},
			status: "200 OK", header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
			body: "part", length: -1,
			readErr: errors.New("qcachetest: the handler panicked: boom"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, "http://api.test/x", nil)
			require.NoError(t, err)
			resp, err := qcachetest.Transport(tc.handler).RoundTrip(req)
			if tc.roundErr != "" {
				require.Error(t, err)
				assert.Nil(t, resp)
				assert.Contains(t, err.Error(), tc.roundErr)
				if tc.roundErrIs != nil {
					assert.ErrorIs(t, err, tc.roundErrIs)
				}
				return
			}
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tc.status, resp.Status)
			assert.Equal(t, tc.status[:3], fmt.Sprint(resp.StatusCode))
			assert.Equal(t, "HTTP/1.1", resp.Proto)
			assert.Same(t, req, resp.Request)
			assert.NotEmpty(t, resp.Header.Get("Date"))
			resp.Header.Del("Date")
			if tc.header == nil {
				tc.header = http.Header{}
			}
			assert.Equal(t, tc.header, resp.Header)
			assert.Equal(t, tc.length, resp.ContentLength)
			body, err := io.ReadAll(resp.Body)
			assert.Equal(t, tc.body, string(body))
			switch {
			case tc.readErr == nil:
				assert.NoError(t, err)
			case errors.Is(tc.readErr, io.ErrUnexpectedEOF):
				assert.ErrorIs(t, err, tc.readErr)
			default:
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.readErr.Error())
			}
		})
	}
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closes atomic.Int32
}

func (c *closeCounter) Close() error { c.closes.Add(1); return nil }

// TestTransportLeavesTheRequestAlone: the handler sees a server-side copy
// of the request; the client's request is not modified and its body is
// closed exactly once, also when RoundTrip fails.
func TestTransportLeavesTheRequestAlone(t *testing.T) {
	var seen *http.Request
	var seenBody string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		b, err := io.ReadAll(r.Body)
		if err != nil {
			panic(err)
		}
		seenBody = string(b)
		r.Body.Close()
		r.Header.Set("X-Handler", "changed")
		r.URL.Path = "/changed"
	})
	body := &closeCounter{Reader: strings.NewReader(`{"a":1}`)}
	req, err := http.NewRequest(http.MethodPost, "https://user:pw@api.test:8443/a%2Fb/c?q=1&r=2#frag", body)
	require.NoError(t, err)
	req.ContentLength = 7
	req.Header.Set("Authorization", "Bearer t")
	before := req.Clone(context.Background())

	resp, err := qcachetest.Transport(h).RoundTrip(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	require.NotNil(t, seen)
	assert.Equal(t, http.MethodPost, seen.Method)
	assert.Equal(t, "/a%2Fb/c?q=1&r=2", seen.RequestURI)
	assert.Equal(t, "", seen.URL.Scheme)
	assert.Equal(t, "", seen.URL.Host)
	assert.Nil(t, seen.URL.User)
	assert.Equal(t, "", seen.URL.Fragment)
	assert.Equal(t, "api.test:8443", seen.Host)
	assert.Equal(t, "HTTP/1.1", seen.Proto)
	assert.NotEmpty(t, seen.RemoteAddr)
	require.NotNil(t, seen.TLS)
	assert.Equal(t, "api.test", seen.TLS.ServerName)
	assert.Equal(t, int64(7), seen.ContentLength)
	assert.Equal(t, `{"a":1}`, seenBody)
	assert.Error(t, seen.Context().Err(), "the handler's context ends when it returns")

	assert.Equal(t, before.URL, req.URL)
	assert.Equal(t, before.Header, req.Header)
	assert.Equal(t, before.Host, req.Host)
	assert.Equal(t, "/a%2Fb/c", req.URL.EscapedPath())
	assert.EqualValues(t, 1, body.closes.Load(), "the request body is closed once")

	// Failing round trips close the body too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	body = &closeCounter{Reader: strings.NewReader("x")}
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, "http://api.test/", body)
	require.NoError(t, err)
	_, err = qcachetest.Transport(h).RoundTrip(req)
	assert.ErrorIs(t, err, context.Canceled)
	assert.EqualValues(t, 1, body.closes.Load())

	body = &closeCounter{Reader: strings.NewReader("x")}
	_, err = qcachetest.Transport(h).RoundTrip(&http.Request{Method: "PUT", Body: body})
	assert.Error(t, err, "no URL")
	assert.EqualValues(t, 1, body.closes.Load())

	// A request without a body reaches the handler with http.NoBody.
	seen = nil
	req, err = http.NewRequest("", "http://api.test/", nil)
	require.NoError(t, err)
	resp, err = qcachetest.Transport(h).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.MethodGet, seen.Method)
	assert.Equal(t, http.NoBody, seen.Body)
	assert.Nil(t, seen.TLS)
}

// TestTransportStreamsTheBody: what the handler writes is readable at
// once, whether it flushes or not, in virtual time.
func TestTransportStreamsTheBody(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprint("flush=", flush), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if flush {
						w.(http.Flusher).Flush() // the answer is committed before the first byte
					}
					time.Sleep(time.Second)
					for _, part := range []string{"one,", "two,", "three"} {
						io.WriteString(w, part)
						time.Sleep(time.Second)
					}
				})
				client := &http.Client{Transport: qcachetest.Transport(h)}
				resp, err := client.Get("http://api.test/stream")
				require.NoError(t, err)
				defer resp.Body.Close()
				if flush {
					assert.Zero(t, time.Since(start), "Flush sent the answer")
				} else {
					assert.Equal(t, time.Second, time.Since(start), "the first Write sent the answer")
				}
				buf := make([]byte, 64)
				for i, want := range []string{"one,", "two,", "three"} {
					n, err := resp.Body.Read(buf)
					require.NoError(t, err)
					assert.Equal(t, want, string(buf[:n]))
					assert.Equal(t, time.Duration(i+1)*time.Second, time.Since(start))
				}
				n, err := resp.Body.Read(buf)
				assert.Zero(t, n)
				assert.Equal(t, io.EOF, err)
				assert.Equal(t, 4*time.Second, time.Since(start))
			})
		})
	}
}

// TestTransportHonoursTheRequestContext: a handler that stalls, before or
// in the middle of its answer, is abandoned when the request's context
// ends, and the handler's own context ends with it.
func TestTransportHonoursTheRequestContext(t *testing.T) {
	for _, tc := range []struct {
		name      string
		midBody   bool
		cancel    bool // cancel instead of a deadline
		withCause bool
	}{
		{name: "deadline before the answer"},
		{name: "deadline mid-body", midBody: true},
		{name: "cancel mid-body", midBody: true, cancel: true},
		{name: "deadline with a cause", midBody: true, withCause: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var handlerEnded time.Duration
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tc.midBody {
						io.WriteString(w, "partial")
					}
					<-r.Context().Done()
					handlerEnded = time.Since(start)
					_, err := io.WriteString(w, "late")
					if err == nil {
						panic("a write after the client left succeeded")
					}
				})
				cause := errors.New("attempt timed out")
				var ctx context.Context
				var cancel context.CancelFunc
				switch {
				case tc.cancel:
					ctx, cancel = context.WithCancel(t.Context())
					time.AfterFunc(5*time.Second, cancel)
				case tc.withCause:
					ctx, cancel = context.WithTimeoutCause(t.Context(), 5*time.Second, cause)
				default:
					ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
				}
				defer cancel()
				want := context.DeadlineExceeded
				if tc.cancel {
					want = context.Canceled
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
				resp, err := qcachetest.Transport(h).RoundTrip(req)
				if !tc.midBody {
					assert.ErrorIs(t, err, want)
					assert.Nil(t, resp)
				} else {
					require.NoError(t, err)
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					assert.Equal(t, "partial", string(b))
					assert.ErrorIs(t, err, want)
					if tc.withCause {
						assert.ErrorIs(t, err, cause)
					}
				}
				assert.Equal(t, 5*time.Second, time.Since(start))
				synctest.Wait()
				assert.Equal(t, 5*time.Second, handlerEnded)
			})
		})
	}
}

// TestTransportBodyCloseEndsTheHandler: closing the body before its end is
// a client hanging up: the handler's context ends and its writes fail.
func TestTransportBodyCloseEndsTheHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var writeErr error
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for r.Context().Err() == nil {
				if _, writeErr = io.WriteString(w, "tick "); writeErr != nil {
					return
				}
				time.Sleep(time.Second)
			}
			_, writeErr = io.WriteString(w, "tick ")
		})
		resp, err := qcachetest.Transport(h).RoundTrip(httpGet(t, "http://api.test/ticks"))
		require.NoError(t, err)
		buf := make([]byte, 5)
		_, err = io.ReadFull(resp.Body, buf)
		require.NoError(t, err)
		time.Sleep(2500 * time.Millisecond)
		require.NoError(t, resp.Body.Close())
		time.Sleep(time.Second) // the handler wakes up
		synctest.Wait()
		require.Error(t, writeErr)
		assert.Contains(t, writeErr.Error(), "closed the response body")
		_, err = resp.Body.Read(buf)
		assert.EqualError(t, err, "http: read on closed response body")
	})
}

// TestTransportOutlivesAHandlerThatIgnoresItsContext: RoundTrip gives up
// at the deadline; the handler goes on until it returns.
func TestTransportOutlivesAHandlerThatIgnoresItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var done atomic.Bool
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Hour)
			done.Store(true)
			io.WriteString(w, "too late")
		})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		_, err := (&http.Client{Transport: qcachetest.Transport(h)}).Do(req)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(start))
		assert.False(t, done.Load())
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.True(t, done.Load())
	})
}

// TestTransportTimeoutMidBodyIsRetriedByQcache: a query's Timeout firing
// while the body is read is a transport error, retried, as over a network.
func TestTransportTimeoutMidBodyIsRetriedByQcache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if n.Add(1) < 3 {
				io.WriteString(w, `{"id":"1","na`)
				<-r.Context().Done()
				return
			}
			io.WriteString(w, `{"id":"1","name":"whole"}`)
		})
		c := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
			qcache.WithHTTPClient(&http.Client{Transport: qcachetest.Transport(h)}))
		defer c.Close()
		q := qcache.NewQuery[string, User](c, qcache.Endpoint{URL: "/users/$id"},
			qcache.Timeout(5*time.Second), qcache.Retry(2))
		start := time.Now()
		u, err := q.Fetch(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "whole", u.Name)
		assert.EqualValues(t, 3, n.Load())
		// Two attempts of 5 s, with 1 s and 2 s after them.
		assert.Equal(t, 13*time.Second, time.Since(start))

		n.Store(0)
		q2 := qcache.NewQuery[string, User](c, qcache.Endpoint{URL: "/other/$id"},
			qcache.Timeout(5*time.Second), qcache.Retry(0))
		_, err = q2.Fetch(t.Context(), "1")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var de *qcache.DecodeError
		assert.False(t, errors.As(err, &de), "no *DecodeError: %v", err)
	})
}

// TestTransportUnderConcurrency: many requests at once, on the real clock,
// under -race, leave no goroutine behind (TestMain checks).
func TestTransportUnderConcurrency(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", fmt.Sprint(len(b)))
		for i := 0; i < 3; i++ {
			w.Write(b)
			w.(http.Flusher).Flush()
		}
	})
	client := &http.Client{Transport: qcachetest.Transport(h)}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			body := strings.Repeat("x", i)
			resp, err := client.Post("http://api.test/echo", "text/plain", strings.NewReader(body))
			if !assert.NoError(t, err) {
				return
			}
			defer resp.Body.Close()
			if i%4 == 0 {
				return // closed unread
			}
			b, err := io.ReadAll(resp.Body)
			assert.NoError(t, err)
			assert.Equal(t, strings.Repeat(body, 3), string(b))
			assert.Equal(t, fmt.Sprint(i), resp.Header.Get("X-Len"))
		})
	}
	wg.Wait()
}

// TestTransportFollowsRedirectsThroughTheClient: redirects are http.Client's
// business, and work as with a server.
func TestTransportFollowsRedirectsThroughTheClient(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/old", http.RedirectHandler("/new?x=1", http.StatusFound))
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.RawQuery) })
	client := &http.Client{Transport: qcachetest.Transport(mux)}
	resp, err := client.Get("http://api.test/old")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "x=1", string(b))
	assert.Equal(t, "/new", resp.Request.URL.Path)
	assert.Equal(t, 200, resp.StatusCode)
}

func httpGet(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	return req
}
