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
	"testing"

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
