package qcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of issue 20, "Hostile networks", for HTTP: what an upstream, a
// network or a caller's input can do to a fetch.

// ---------- dot segments and empty path values ----------

// dotValues are path values that are "." or ".." in some escaping: a server
// that parses URLs the WHATWG way (Node's new URL) resolves them as a step.
var dotValues = []string{
	".", "..",
	"%2E", "%2e", "%2E%2E", "%2e%2E", "%2e%2e", ".%2E", "%2e.", ".%2e",
	"%252E", "%252E%252e", "%25252e", ".%252E",
}

// checkRefused asserts err is a refusal of a path value before any request.
func checkRefused(t *testing.T, err error, what, v string) {
	t.Helper()
	require.Error(t, err, "%s %q must be refused", what, v)
	var re *RequestError
	assert.ErrorAs(t, err, &re, "%s %q", what, v)
	assert.ErrorIs(t, err, ErrInvalidPathValue, "%s %q", what, v)
}

func TestDotAndEmptyPathValuesAreRefusedBeforeAnyRequest(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `"ok"`) })
	c := newHTTPClient(t, a)
	q := NewQuery[string, string](c, Endpoint{URL: "/users/$userId/profile"}, Retry(3))
	m := NewMutation[string, string, string](c, Endpoint{Method: "PUT", URL: "/users/$userId/profile"}, MutationRetry(3))
	ctx := context.Background()
	for _, v := range append([]string{""}, dotValues...) {
		_, err := q.Get(ctx, v)
		checkRefused(t, err, "Get", v)
		_, err = q.Fetch(ctx, v)
		checkRefused(t, err, "Fetch", v)
		_, err = m.Do(ctx, v, "body")
		checkRefused(t, err, "Do", v)
	}

	// Two variables in one segment that only together spell a dot segment.
	type pair struct {
		A string `path:"a"`
		B string `path:"b"`
	}
	q2 := NewQuery[pair, string](c, Endpoint{URL: "/x/{a}{b}/y"})
	for _, p := range []pair{{".", "."}, {"%2", "E"}, {"%252", "E%252E"}} {
		_, err := q2.Fetch(ctx, p)
		checkRefused(t, err, "Fetch", p.A+"+"+p.B)
	}
	assert.Zero(t, a.hits.Load(), "no request was sent")

	// Values that merely look like dots are sent, one segment each.
	for _, v := range []string{"...", ".a", "a.", "..%2F", "%2E%2E%2F", "%2E%2E.", "．．"} {
		_, err := q.Fetch(ctx, v)
		require.NoError(t, err, "value %q", v)
		raw := a.lastRaw.Load().(string)
		seg := strings.TrimSuffix(strings.TrimPrefix(raw, "/v1/users/"), "/profile")
		back, err := url.PathUnescape(seg)
		require.NoError(t, err)
		assert.Equal(t, v, back, "value %q sent as %q", v, raw)
	}
}

// startNodeServer runs testdata/whatwg_server.js and returns its base URL.
// It skips the test when node is not on PATH.
func startNodeServer(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skipf("skipped: node is not on PATH (%v); this test needs a WHATWG URL parser to route on", err)
	}
	cmd := exec.Command(node, "testdata/whatwg_server.js")
	stdin, err := cmd.StdinPipe() // the server exits when it closes
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "node did not print its port")
	return "http://127.0.0.1:" + strings.TrimSpace(line)
}

// TestDotPathValuesNeverReachAWHATWGServer runs against a real Node server
// that routes on new URL(req.url).pathname, as Express and most Node
// frameworks do: there "/api/users/%2E%2E/profile" is "/api/profile".
func TestDotPathValuesNeverReachAWHATWGServer(t *testing.T) {
	base := startNodeServer(t)
	c := NewClient(WithBaseURL(base + "/api/"))
	defer c.Close()
	q := NewQuery[string, string](c, Endpoint{URL: "/users/$id/profile"}, Retry(0))
	ctx := context.Background()

	got, err := q.Fetch(ctx, "42")
	require.NoError(t, err)
	require.Equal(t, "/api/users/42/profile", got, "the server reports the pathname it routes on")

	for _, v := range dotValues {
		got, err := q.Fetch(ctx, v)
		if err == nil {
			assert.Failf(t, "a bad path value was sent", "value %q was sent, and the server routed it to %q", v, got)
			continue
		}
		checkRefused(t, err, "Fetch", v)
	}
	// Whatever is sent stays one segment for this parser too.
	for _, v := range []string{"../admin", "..%2F", "%2E%2E%2F", "...", "..;", "a/b", "．．", "?x=1", "#f", "a b", `\..\x`, "%", "%zz"} {
		got, err := q.Fetch(ctx, v)
		require.NoError(t, err, "value %q", v)
		seg, ok := strings.CutPrefix(got, "/api/users/")
		require.True(t, ok, "value %q: pathname %q", v, got)
		seg, ok = strings.CutSuffix(seg, "/profile")
		require.True(t, ok, "value %q: pathname %q", v, got)
		assert.NotContains(t, seg, "/", "value %q: pathname %q", v, got)
		back, err := url.PathUnescape(seg)
		require.NoError(t, err, "value %q: pathname %q", v, got)
		assert.Equal(t, v, back, "value %q: pathname %q", v, got)
	}
}

// ---------- bodies over WithMaxResponseBytes ----------

func TestResponseTooLargeIsMatchable(t *testing.T) {
	big := `"` + strings.Repeat("x", 2000) + `"`
	for _, chunked := range []bool{false, true} {
		a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			}
			io.WriteString(w, big)
		})
		c := newHTTPClient(t, a, WithMaxResponseBytes(1000))
		q := NewQuery[struct{}, string](c, Endpoint{URL: "/big"}, Retry(3))
		_, err := q.Fetch(context.Background(), struct{}{})
		require.ErrorIs(t, err, ErrResponseTooLarge, "chunked %v", chunked)
		assert.EqualValues(t, 1, a.hits.Load(), "not retried")
		require.ErrorIs(t, q.State(struct{}{}).Err, ErrResponseTooLarge)

		m := NewMutation[struct{}, string, string](c, Endpoint{URL: "/big"}, MutationRetry(3))
		_, err = m.Do(context.Background(), struct{}{}, "x")
		require.ErrorIs(t, err, ErrResponseTooLarge, "chunked %v", chunked)
		assert.EqualValues(t, 2, a.hits.Load(), "not retried")
	}
}

// ---------- what an HTTPError prints ----------

// TestHTTPErrorMessageHoldsNoCredentialBody: a 401 body such as "invalid
// API key: SECRET" must not reach err.Error() (and so the logs) for 401, 403
// and 407; Body keeps it for code that wants it.
func TestHTTPErrorMessageHoldsNoCredentialBody(t *testing.T) {
	const secret = "k-5ecret-echoed"
	var status atomic.Int32
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, "invalid API key: "+secret)
	})
	c := newHTTPClient(t, a)
	q := NewQuery[string, string](c, Endpoint{URL: "/users/$id"}, Retry(0))
	m := NewMutation[string, string, string](c, Endpoint{URL: "/users/$id"})
	for _, code := range []int{401, 403, 407, 400, 404, 500} {
		status.Store(int32(code))
		_, qerr := q.Fetch(context.Background(), "1")
		_, merr := m.Do(context.Background(), "1", "x")
		for _, err := range []error{qerr, merr} {
			var he *HTTPError
			require.ErrorAs(t, err, &he, "status %d", code)
			assert.Equal(t, code, he.StatusCode)
			assert.Contains(t, string(he.Body), secret, "Body keeps the excerpt")
			if code == 401 || code == 403 || code == 407 {
				assert.NotContains(t, err.Error(), secret, "status %d", code)
				assert.NotContains(t, fmt.Sprintf("%v %+v", err, err), secret, "status %d", code)
			} else {
				assert.Contains(t, err.Error(), secret, "status %d: other answers show the start of the body", code)
			}
			assert.Equal(t, 1, strings.Count(err.Error(), a.URL), "status %d: the URL once in %q", code, err)
		}
	}
}

// TestHTTPErrorMessageIsShort: a 2 MiB path value makes a 2 MiB URL; the
// error prints it cut at 512 bytes.
func TestHTTPErrorMessageIsShort(t *testing.T) {
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusNotFound) })
	huge := strings.Repeat("a", 2<<20)
	// Go's server refuses a 2 MiB request line with 431: an HTTPError too.
	c := newHTTPClient(t, a)
	m := NewMutation[string, string, string](c, Endpoint{URL: "/users/$id"})
	_, err := m.Do(context.Background(), huge, "x")
	var he *HTTPError
	require.ErrorAs(t, err, &he)
	assert.Greater(t, len(he.URL), 2<<20, "the field keeps the whole URL")
	assert.LessOrEqual(t, len(he.Error()), 1024, "HTTPError.Error")
	assert.LessOrEqual(t, len(err.Error()), 1024, "Do's error")

	q := NewQuery[string, string](c, Endpoint{URL: "/users/$id"}, Retry(0))
	_, err = q.Fetch(context.Background(), huge)
	require.ErrorAs(t, err, &he)
	assert.LessOrEqual(t, len(he.Error()), 1024, "HTTPError.Error")
	// The fetch's error names its key, cut as the URL is.
	assert.LessOrEqual(t, len(err.Error()), 2048, "Fetch's error")
	st := q.State(huge)
	require.Error(t, st.Err)
	assert.LessOrEqual(t, len(st.Err.Error()), 2048, "the entry's error")
}

func TestHTTPErrorCarriesRetryAfter(t *testing.T) {
	var retryAfter atomic.Value
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if v := retryAfter.Load().(string); v != "" {
			w.Header().Set("Retry-After", v)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	c := newHTTPClient(t, a)
	q := NewQuery[string, string](c, Endpoint{URL: "/users/$id"}, Retry(0))
	m := NewMutation[string, string, string](c, Endpoint{URL: "/users/$id"})
	for header, want := range map[string]time.Duration{
		"7":                             7 * time.Second,
		"0":                             0,
		"":                              0,
		"soon":                          0,
		"-3":                            0,
		"Wed, 21 Oct 2015 07:28:00 GMT": 0, // in the past
	} {
		retryAfter.Store(header)
		_, qerr := q.Fetch(context.Background(), "1")
		_, merr := m.Do(context.Background(), "1", "x")
		for _, err := range []error{qerr, merr} {
			var he *HTTPError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, want, he.RetryAfter, "Retry-After %q", header)
		}
	}
}

// ---------- credentials on redirects ----------

// hops is a set of loopback servers whose every path either redirects to
// a URL set by the test or answers; each request's headers are recorded by
// path (paths are unique across the servers).
type hops struct {
	mu    sync.Mutex
	route map[string]string      // path → where it redirects
	got   map[string]http.Header // path → headers received
}

func newHops() *hops {
	return &hops{route: map[string]string{}, got: map[string]http.Header{}}
}

func (h *hops) server(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.got[r.URL.Path] = r.Header.Clone()
		to, ok := h.route[r.URL.Path]
		h.mu.Unlock()
		if ok {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		io.WriteString(w, `"ok"`)
	}))
	t.Cleanup(s.Close)
	return s
}

func (h *hops) headers(path string) http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[path]
}

const secQuery = "q-5ecret-in-query"

// TestRedirectAcrossOriginsDropsEveryCredential: a redirect that leaves the
// origin (scheme, host or port) must not carry Authorization, cookies, the
// headers set by WithHeader, Endpoint.Header or a request editor, user
// info, nor Referer, which net/http fills with the previous URL, query
// string (and its credentials) included. Once a chain has left the origin
// it stays stripped, even when it comes back.
func TestRedirectAcrossOriginsDropsEveryCredential(t *testing.T) {
	h := newHops()
	a := h.server(t)                                                       // 127.0.0.1:pa
	other := strings.Replace(h.server(t).URL, "127.0.0.1", "localhost", 1) // another host
	port := h.server(t).URL                                                // the same host, another port
	const pw = "pw-5ecret-userinfo"
	withUser := strings.Replace(a.URL, "http://", "http://alice:"+pw+"@", 1)
	h.route["/host/start"] = other + "/host/end"
	h.route["/port/start"] = port + "/port/end"
	h.route["/back/start"] = other + "/back/away"
	h.route["/back/away"] = a.URL + "/back/end"
	h.route["/user/start"] = other + "/user/end"
	h.route["/same/start"] = a.URL + "/same/end"

	opts := append(secCredentialOptions(), WithHeader("Cookie", "session=c-5ecret-cookie"))
	c := NewClient(opts...)
	defer c.Close()
	cu := NewClient(WithHeader("X-Api-Key", secAPIKey), WithBaseURL(withUser)) // user info goes in the base URL
	defer cu.Close()
	fetch := func(base, path string) {
		t.Helper()
		c := c
		if base == withUser {
			c, base = cu, ""
		}
		q := NewQuery[struct{}, string](c, Endpoint{
			URL:    base + path + "?api_key=" + secQuery,
			Header: http.Header{"X-Tenant-Token": {secTenant}},
		}, Retry(0))
		v, err := q.Fetch(context.Background(), struct{}{})
		require.NoError(t, err, path)
		require.Equal(t, "ok", v, path)
	}
	secrets := []string{secAPIKey, secBearer, secSig, secTenant, secQuery, "c-5ecret-cookie", pw, "alice"}
	clean := func(path string) {
		t.Helper()
		hdr := h.headers(path)
		require.NotNil(t, hdr, "%s was reached", path)
		assert.Empty(t, hdr.Get("Referer"), "%s got a Referer", path)
		assert.Empty(t, hdr.Get("Authorization"), "%s got Authorization", path)
		assert.Empty(t, hdr.Get("Cookie"), "%s got a cookie", path)
		for k, vs := range hdr {
			for _, s := range secrets {
				assert.NotContains(t, strings.Join(vs, " "), s, "%s got a secret in %s", path, k)
			}
		}
	}

	fetch(a.URL, "/host/start")
	clean("/host/end")
	fetch(a.URL, "/port/start")
	clean("/port/end")
	fetch(a.URL, "/back/start")
	clean("/back/away")
	clean("/back/end")
	fetch(withUser, "/user/start")
	clean("/user/end")
	assert.True(t, strings.HasPrefix(h.headers("/user/start").Get("Authorization"), "Basic "), "A itself got the user info")

	// A redirect within the origin keeps them all: the test sees real headers.
	fetch(a.URL, "/same/start")
	end := h.headers("/same/end")
	assert.Equal(t, secAPIKey, end.Get("X-Api-Key"))
	assert.Equal(t, "Bearer "+secBearer, end.Get("Authorization"))
	assert.Equal(t, secTenant, end.Get("X-Tenant-Token"))
	assert.Contains(t, end.Get("Referer"), secQuery, "net/http sets Referer within the origin")
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"http://api.test/a", "http://api.test/b?x=1", true},
		{"http://api.test/a", "http://API.test/b", true},
		{"HTTP://api.test/a", "http://api.test/b", true},
		{"http://api.test/a", "http://api.test:80/b", true},
		{"https://api.test/a", "https://api.test:443/b", true},
		{"http://u:p@api.test/a", "http://api.test/b", true},
		{"http://[::1]:8080/a", "http://[::1]:8080/b", true},
		{"http://api.test/a", "https://api.test/a", false},
		{"http://api.test/a", "http://api.test:8080/a", false},
		{"http://api.test:8080/a", "http://api.test:8081/a", false},
		{"https://api.test/a", "https://api.test:80/a", false},
		{"http://api.test/a", "http://evil.test/a", false},
		{"http://api.test/a", "http://api.test.evil.test/a", false},
		{"http://api.test/a", "http://sub.api.test/a", false},
		{"http://127.0.0.1:1/a", "http://localhost:1/a", false},
		{"http://[::1]:8080/a", "http://[::1]:8081/a", false},
	}
	for _, tt := range tests {
		a, err := url.Parse(tt.a)
		require.NoError(t, err)
		b, err := url.Parse(tt.b)
		require.NoError(t, err)
		assert.Equal(t, tt.same, sameOrigin(a, b), "%s vs %s", tt.a, tt.b)
		assert.Equal(t, tt.same, sameOrigin(b, a), "%s vs %s", tt.b, tt.a)
	}
}

// TestStripCredentialsOnRedirectKeeps: what a caller (the WebSocket
// handshake, say) names in keep survives; the rest and the user info go.
func TestStripCredentialsOnRedirectKeeps(t *testing.T) {
	req := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		require.NoError(t, err)
		return r
	}
	via := []*http.Request{req("http://api.test/a")}
	r := req("http://u:p@api.test:8080/b")
	r.Header = http.Header{
		"Authorization":         {"x"},
		"Referer":               {"http://api.test/a?k=1"},
		"Sec-Websocket-Key":     {"k"},
		"Sec-Websocket-Version": {"13"},
		"X-Api-Key":             {"x"},
	}
	require.True(t, stripCredentialsOnRedirect(r, via, "Sec-WebSocket-Key", "sec-websocket-version"))
	assert.Equal(t, http.Header{"Sec-Websocket-Key": {"k"}, "Sec-Websocket-Version": {"13"}}, r.Header)
	assert.Nil(t, r.URL.User)

	same := req("http://api.test:80/c")
	same.Header = http.Header{"Authorization": {"x"}}
	require.False(t, stripCredentialsOnRedirect(same, via))
	assert.Equal(t, "x", same.Header.Get("Authorization"))
	assert.False(t, stripCredentialsOnRedirect(same, nil), "no chain, nothing to strip")
}

// ---------- network failures while reading a body ----------

// cutBody answers with a raw response on the hijacked connection: headers
// and the start of a body, then the connection ends, closed or reset.
func cutBody(w http.ResponseWriter, head, part string, reset bool) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	io.WriteString(conn, head+part)
	if reset {
		relReset(conn)
		return
	}
	conn.Close()
}

// TestBodyCutOrResetIsATransportError: a connection that ends before the
// body it announced is a network failure, not a body that does not parse:
// it is retried, and its error wraps the cause and is no *DecodeError.
func TestBodyCutOrResetIsATransportError(t *testing.T) {
	const (
		lengthHead  = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
		chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
	)
	tests := []struct {
		name      string
		head      string
		part      string
		reset     bool
		wantCause error // nil: any cause but a *DecodeError
	}{
		{"length cut", lengthHead, `{"id":"1","na`, false, io.ErrUnexpectedEOF},
		{"length cut between values", lengthHead, `{"id":"1"}`, false, io.ErrUnexpectedEOF},
		{"chunked cut", chunkedHead, "d\r\n{\"id\":\"1\",\"na\r\n", false, io.ErrUnexpectedEOF},
		{"chunked cut mid-chunk", chunkedHead, "40\r\n{\"id\":\"1\",\"na", false, io.ErrUnexpectedEOF},
		{"length reset", lengthHead, `{"id":"1","na`, true, nil},
		{"chunked reset", chunkedHead, "d\r\n{\"id\":\"1\",\"na\r\n", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cuts atomic.Int32 // requests still to cut
			a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if cuts.Add(-1) >= 0 {
					cutBody(w, tt.head, tt.part, tt.reset)
					return
				}
				io.WriteString(w, `{"id":"1","name":"whole"}`)
			})
			c := newHTTPClient(t, a)
			q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"}, Retry(2),
				RetryDelay(func(int, error) time.Duration { return 0 }))

			cuts.Store(3) // every attempt is cut
			_, err := q.Fetch(context.Background(), "1")
			require.Error(t, err)
			var de *DecodeError
			assert.False(t, errors.As(err, &de), "a cut body is no *DecodeError: %v", err)
			if tt.wantCause != nil {
				assert.ErrorIs(t, err, tt.wantCause)
			}
			assert.EqualValues(t, 3, a.hits.Load(), "retried")
			assert.Contains(t, err.Error(), "GET "+a.URL+"/v1/users/1")

			cuts.Store(2) // the third attempt gets it whole
			u, err := q.Fetch(context.Background(), "1")
			require.NoError(t, err)
			assert.Equal(t, "whole", u.Name)
			assert.EqualValues(t, 6, a.hits.Load())
		})
	}

	// A body that arrived whole and does not parse is still a *DecodeError,
	// and is not retried.
	a := newAPI(t, func(w http.ResponseWriter, r *http.Request) {
		cutBody(w, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n", `{"id":"1","na`, false)
	})
	c := newHTTPClient(t, a)
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"}, Retry(2),
		RetryDelay(func(int, error) time.Duration { return 0 }))
	_, err := q.Fetch(context.Background(), "1")
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	assert.EqualValues(t, 1, a.hits.Load(), "not retried")
}

// pipeUpstream is an upstream for tests inside a synctest bubble, where a
// real socket would not do: a goroutine blocked on one is not durably
// blocked, so the bubble's clock would not move. Its client dials net.Pipe
// connections, each of which carries one request, read and handed to serve
// on a goroutine of its own; serve writes a raw response (or part of one)
// and returns, and the connection is then closed, unless serve blocks
// reading it, which ends when the client gives up on the request.
type pipeUpstream struct {
	tr        *http.Transport
	client    *http.Client
	reqs      atomic.Int32
	wg        sync.WaitGroup
	onRequest func(*http.Request) // if set, told of each request before serve
}

func newPipeUpstream(serve func(n int, conn net.Conn)) *pipeUpstream {
	up := &pipeUpstream{}
	up.tr = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			client, server := net.Pipe()
			up.wg.Go(func() {
				defer server.Close()
				req, err := http.ReadRequest(bufio.NewReader(server))
				if err != nil {
					return
				}
				if up.onRequest != nil {
					up.onRequest(req)
				}
				serve(int(up.reqs.Add(1)), server)
			})
			return client, nil
		},
		DisableKeepAlives: true,
	}
	up.client = &http.Client{Transport: up.tr}
	return up
}

// close ends the upstream's connections and waits for its goroutines.
func (up *pipeUpstream) close() {
	up.tr.CloseIdleConnections()
	up.wg.Wait()
}

const pipeOK = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n"

// stall blocks until the client closes conn.
func stall(conn net.Conn) { io.Copy(io.Discard, conn) }

// TestTimeoutMidBodyIsATransportError: the attempt's Timeout firing while
// the body is read is a timeout (errors.Is context.DeadlineExceeded) and is
// retried, not a *DecodeError.
func TestTimeoutMidBodyIsATransportError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stalls atomic.Int32
		up := newPipeUpstream(func(n int, conn net.Conn) {
			if stalls.Add(-1) >= 0 {
				io.WriteString(conn, pipeOK+`{"id":"1","na`)
				stall(conn)
				return
			}
			io.WriteString(conn, pipeOK+`{"id":"1","name":"whole"}`)
		})
		defer up.close()
		c := NewClient(WithBaseURL("http://upstream.test"), WithHTTPClient(up.client))
		defer c.Close()
		q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"}, Timeout(5*time.Second), Retry(2))
		start := time.Now()

		stalls.Store(3)
		_, err := q.Fetch(t.Context(), "1")
		require.Error(t, err)
		var de *DecodeError
		assert.False(t, errors.As(err, &de), "a timeout mid-body is no *DecodeError: %v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.EqualValues(t, 3, up.reqs.Load(), "retried")
		// Three attempts of 5 s, with 1 s and 2 s between them.
		assert.Equal(t, 18*time.Second, time.Since(start))

		stalls.Store(2)
		start = time.Now()
		u, err := q.Fetch(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "whole", u.Name)
		assert.EqualValues(t, 6, up.reqs.Load())
		assert.Equal(t, 13*time.Second, time.Since(start))
	})
}

// ---------- the default attempt timeout ----------

// TestAttemptsTimeOutAfter30sByDefault: an upstream that never sends its
// headers, behind a client without a timeout of its own (as
// http.DefaultClient is), must not hold an observed entry in Fetching
// forever: each attempt gives up after 30 s unless Timeout says otherwise,
// and Timeout(0) means no limit.
func TestAttemptsTimeOutAfter30sByDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		starts := map[string][]time.Duration{}
		up := newPipeUpstream(func(n int, conn net.Conn) {
			stall(conn) // never a header
		})
		up.onRequest = func(r *http.Request) {
			mu.Lock()
			starts[r.URL.Path] = append(starts[r.URL.Path], time.Since(start))
			mu.Unlock()
		}
		defer up.close()
		c := NewClient(WithBaseURL("http://upstream.test"), WithHTTPClient(up.client))
		defer c.Close()
		byDefault := NewQuery[string, user](c, Endpoint{URL: "/default/$id"})
		short := NewQuery[string, user](c, Endpoint{URL: "/short/$id"}, Timeout(2*time.Second))
		none := NewQuery[string, user](c, Endpoint{URL: "/none/$id"}, Timeout(0))
		ctx := t.Context()
		obs := []*Observer[user]{byDefault.Use(ctx, "1"), short.Use(ctx, "1"), none.Use(ctx, "1")}
		defer func() {
			for _, o := range obs {
				o.Close()
			}
		}()

		time.Sleep(time.Hour)
		synctest.Wait()
		for i, o := range obs[:2] {
			s := o.State()
			assert.Equal(t, FetchIdle, s.FetchStatus, "observer %d", i)
			assert.Equal(t, StatusError, s.Status, "observer %d", i)
			assert.ErrorIs(t, s.Err, context.DeadlineExceeded, "observer %d", i)
		}
		assert.Equal(t, Fetching, obs[2].State().FetchStatus, "Timeout(0): no limit")
		mu.Lock()
		defer mu.Unlock()
		// Four attempts, 1 s, 2 s and 4 s apart after each timeout.
		assert.Equal(t, secs(0, 31, 63, 97), starts["/default/1"])
		assert.Equal(t, secs(0, 3, 7, 13), starts["/short/1"])
		assert.Equal(t, secs(0), starts["/none/1"])
	})
}
