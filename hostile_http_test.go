package qcache

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
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
			t.Errorf("value %q was sent, and the server routed it to %q", v, got)
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
	// The fetch's error names its key, which holds the value once more.
	assert.Less(t, len(err.Error()), len(huge)+1024, "the URL is not printed whole")
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
