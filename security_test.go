package qcache

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bounds of the security suite.
const (
	secFailFast   = 2 * time.Second // a refused oversize body fails within this
	secServerSees = 2 * time.Second // and the server sees its connection closed within this
	secBodyLimit  = 64 << 10        // WithMaxResponseBytes of the oversize tests
)

// ---------- path values stay in their segment, on their host ----------

// TestPathValuesStayInTheirSegmentOnTheWire extends
// TestPathValuesCannotEscapeTheirSegment (which pins the exact escaping of a
// few values) with the Unicode and encoding tricks it lacks, checked as a
// property of what the server receives: one segment, the value back after
// one unescape, nothing reaching another host.
func TestPathValuesStayInTheirSegmentOnTheWire(t *testing.T) {
	var evilHits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits.Add(1) }))
	defer evil.Close()
	evilHost := strings.TrimPrefix(evil.URL, "http://")

	var mu sync.Mutex
	var got []string // raw request URIs
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.RequestURI)
		mu.Unlock()
		io.WriteString(w, `"ok"`)
	}))
	defer srv.Close()

	c := NewClient(WithBaseURL(srv.URL + "/v1/"))
	defer c.Close()
	rel := NewQuery[string, string](c, Endpoint{URL: "/users/$userId/profile"}, Retry(0))
	abs := NewQuery[string, string](c, Endpoint{URL: srv.URL + "/$first/x"}, Retry(0))

	hostile := []string{
		"．．",            // fullwidth full stops U+FF0E
		"．．／admin",      // … and fullwidth solidus U+FF0F
		"..∕admin",      // division slash U+2215
		"..⁄admin",      // fraction slash U+2044
		"a\u2024\u2024", // one dot leader U+2024
		"%2e%2E/",       // encoded dots, mixed case
		"%2F..%2F",      // encoded slashes
		"..;/admin",     // Tomcat-style path parameter
		"\\..\\admin",   // backslashes
		"...",
		"a\x00b",                         // NUL
		"a\tb c",                         // tab and space
		"a\rb\nc\r\n\r\nGET /x HTTP/1.1", // request splitting
		"%0d%0aX-Injected: 1",            // encoded CRLF stays literal
		"?admin=1",
		"#frag",
		"a?b#c/d",
		"//" + evilHost + "/x",
		"http://" + evilHost + "/x",
		"@" + evilHost,
		"user:pass@" + evilHost,
		"\u202e..\u202c",  // bidi override
		"\ufeff..",        // BOM
		"a\u0000\u200b..", // zero width space
		"\xff\xfe..",      // invalid UTF-8
		"ｈｔｔｐ：／／evil",     // fullwidth scheme
	}
	for _, v := range hostile {
		for i, q := range []*Query[string, string]{rel, abs} {
			_, err := q.Fetch(context.Background(), v)
			require.NoError(t, err, "value %q", v)
			mu.Lock()
			raw := got[len(got)-1]
			mu.Unlock()
			prefix, suffix := "/v1/users/", "/profile"
			if i == 1 {
				prefix, suffix = "/", "/x"
			}
			require.True(t, strings.HasPrefix(raw, prefix) && strings.HasSuffix(raw, suffix),
				"value %q: request URI %q", v, raw)
			seg := strings.TrimSuffix(strings.TrimPrefix(raw, prefix), suffix)
			assert.NotContains(t, seg, "/", "value %q: segment %q", v, seg)
			assert.False(t, strings.ContainsAny(seg, "?#\\ \t\r\n\x00"), "value %q: raw special byte in %q", v, seg)
			for j := 0; j < len(seg); j++ {
				if seg[j] < 0x21 || seg[j] >= 0x7f {
					assert.Failf(t, "raw byte in a key segment", "value %q: raw byte %#x in segment %q", v, seg[j], seg)
					break
				}
			}
			assert.NotContains(t, []string{".", ".."}, seg, "value %q", v)
			back, err := url.PathUnescape(seg)
			assert.NoError(t, err)
			assert.Equal(t, v, back, "the segment unescapes to the value")
			assert.Len(t, q.Key(v), map[int]int{0: 3, 1: 2}[i], "key of %q: %q", v, q.Key(v))
		}
	}
	// Dot segments in any escaping are refused before any request
	// (TestDotAndEmptyPathValuesAreRefusedBeforeAnyRequest has more).
	mu.Lock()
	sent := len(got)
	mu.Unlock()
	for _, v := range []string{".", ".%2e", "%252e%252e"} {
		for _, q := range []*Query[string, string]{rel, abs} {
			_, err := q.Fetch(context.Background(), v)
			require.ErrorIs(t, err, ErrInvalidPathValue, "value %q", v)
		}
	}
	mu.Lock()
	assert.Len(t, got, sent, "a refused value sends no request")
	mu.Unlock()
	assert.Zero(t, evilHits.Load(), "no value reached another host")
}

// ---------- credentials ----------

// redirectPair is server A, which redirects every request to server B on
// another host name (localhost instead of 127.0.0.1), recording the headers
// each received.
type redirectPair struct {
	a, b       *httptest.Server
	mu         sync.Mutex
	aHdr, bHdr []http.Header
	bURL       string // B under the other host name
}

func newRedirectPair(t *testing.T) *redirectPair {
	p := &redirectPair{}
	p.b = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.bHdr = append(p.bHdr, r.Header.Clone())
		p.mu.Unlock()
		io.WriteString(w, `{"id":"b","name":"from b"}`)
	}))
	t.Cleanup(p.b.Close)
	p.bURL = strings.Replace(p.b.URL, "127.0.0.1", "localhost", 1)
	p.a = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.aHdr = append(p.aHdr, r.Header.Clone())
		p.mu.Unlock()
		if rest, ok := strings.CutPrefix(r.URL.Path, "/same"); ok {
			http.Redirect(w, r, rest, http.StatusFound) // same host: credentials stay
			return
		}
		if strings.HasPrefix(r.URL.Path, "/stay") {
			io.WriteString(w, `{"id":"a","name":"from a"}`)
			return
		}
		http.Redirect(w, r, p.bURL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(p.a.Close)
	return p
}

// TestCredentialsStayOnTheirHostAfterARedirect: a redirect to another host
// must not carry what WithHeader, an Endpoint header or a request editor
// added. net/http itself drops Authorization (and cookies) on such a
// redirect but forwards every other header.
func TestCredentialsStayOnTheirHostAfterARedirect(t *testing.T) {
	p := newRedirectPair(t)
	c := NewClient(append(secCredentialOptions(), WithBaseURL(p.a.URL))...)
	defer c.Close()
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$id", Header: http.Header{"X-Tenant-Token": {secTenant}}}, Retry(0))

	u, err := q.Get(context.Background(), "1")
	require.NoError(t, err)
	require.Equal(t, "b", u.ID, "the redirect was followed")

	// A same-host redirect keeps them: the test sees the real headers.
	same := NewQuery[string, user](c, Endpoint{URL: "/same/stay/$id", Header: http.Header{"X-Tenant-Token": {secTenant}}}, Retry(0))
	u, err = same.Get(context.Background(), "2")
	require.NoError(t, err)
	require.Equal(t, "a", u.ID)

	p.mu.Lock()
	defer p.mu.Unlock()
	require.Len(t, p.aHdr, 3)
	for i, h := range p.aHdr {
		assert.Equal(t, secAPIKey, h.Get("X-Api-Key"), "A request %d", i)
		assert.Equal(t, "Bearer "+secBearer, h.Get("Authorization"), "A request %d", i)
		assert.Equal(t, secTenant, h.Get("X-Tenant-Token"), "A request %d", i)
	}
	require.Len(t, p.bHdr, 1)
	h := p.bHdr[0]
	assert.Empty(t, h.Get("Authorization"), "B got the Authorization header")
	assert.Empty(t, h.Get("X-Api-Key"), "B got the WithHeader X-Api-Key")
	assert.Empty(t, h.Get("X-Tenant-Token"), "B got the Endpoint header")
	assert.Empty(t, h.Get("X-Signature"), "B got the request editor's header")
	for k, vs := range h {
		for _, v := range vs {
			for _, s := range []string{secAPIKey, secBearer, secSig, secTenant} {
				assert.NotContains(t, v, s, "B got a secret in %s", k)
			}
		}
	}
}

// TestCredentialsNeverInErrors runs every kind of failure with credentials
// in headers, in a request editor and in the base URL's user info, and
// checks the errors and a Debug-level log.
func TestCredentialsNeverInErrors(t *testing.T) {
	var kind atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch kind.Load().(string) {
		case "404":
			http.Error(w, "no such thing", http.StatusNotFound)
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		case "junk":
			io.WriteString(w, `{"id":`)
		case "invalid":
			io.WriteString(w, `{"name":"no id"}`)
		case "big":
			io.WriteString(w, `"`+strings.Repeat("x", 2*secBodyLimit)+`"`)
		case "reset":
			hj, _ := w.(http.Hijacker)
			conn, _, err := hj.Hijack()
			if err == nil {
				relReset(conn)
			}
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}
	}))
	defer srv.Close()
	const pw = "pw-5ecret-userinfo"
	base := strings.Replace(srv.URL, "http://", "http://alice:"+pw+"@", 1)
	logs := &secretLog{secrets: []string{secAPIKey, secBearer, secSig, pw, "alice"}}
	var refuse atomic.Bool
	opts := append(secCredentialOptions(), WithBaseURL(base), WithLogger(logs.logger()), WithMaxResponseBytes(secBodyLimit),
		WithRequestEditor(func(r *http.Request) error {
			if refuse.Load() {
				return errors.New("refusing to sign")
			}
			return nil
		}))
	c := NewClient(opts...)
	defer c.Close()
	q := NewQuery[string, user](c, Endpoint{URL: "/users/$id"}, Retry(1),
		RetryDelay(func(int, error) time.Duration { return time.Millisecond }), Timeout(100*time.Millisecond))
	for _, k := range []string{"404", "500", "junk", "invalid", "big", "reset", "slow", "refuse"} {
		kind.Store(k)
		refuse.Store(k == "refuse")
		_, err := q.Fetch(context.Background(), k)
		require.Error(t, err, k)
		for _, s := range logs.secrets {
			assert.NotContains(t, err.Error(), s, "%s: error %v", k, err)
			assert.NotContains(t, fmt.Sprintf("%+v %#v", err, err), s, "%s: formatted error", k)
		}
		var he *HTTPError
		if errors.As(err, &he) {
			for name, vs := range he.Header {
				for _, s := range logs.secrets {
					assert.NotContains(t, strings.Join(vs, " "), s, "%s: response header %s", k, name)
				}
			}
		}
		st := q.State(k)
		require.Error(t, st.Err)
		assert.Equal(t, err.Error(), st.Err.Error())
	}
	// A stream's URL with user info is redacted too.
	var wsErrs wsErrorLog
	s := c.SubscribeWS(context.Background(), strings.Replace(base, "http", "ws", 1)+"/ws",
		func(context.Context, []byte) error { return nil }, WSReconnect(time.Millisecond, 10*time.Millisecond), WSOnError(wsErrs.add))
	wsWaitFor(t, 5*time.Second, "a refused handshake", func() bool { return len(wsErrs.all()) > 0 })
	s.Close()
	for _, err := range wsErrs.all() {
		for _, sec := range logs.secrets {
			assert.NotContains(t, err.Error(), sec)
		}
	}
	c.Close()
	n, leaks := logs.result()
	assert.Positive(t, n, "the Debug log saw the failures")
	assert.Empty(t, leaks, "secrets in the log")
}

// ---------- oversize bodies ----------

// TestEndlessBodyIsNotReadWhole: a server streaming a body without end, with
// and without a (lying) Content-Length, and a gzip bomb: the fetch fails
// fast and the server sees its connection closed.
func TestEndlessBodyIsNotReadWhole(t *testing.T) {
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write([]byte(`"`))
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	for range 64 { // 4 MiB of JSON string, a few KiB compressed
		zw.Write(chunk)
	}
	zw.Write([]byte(`"`))
	zw.Close()

	for _, mode := range []string{"chunked", "content-length", "gzip"} {
		t.Run(mode, func(t *testing.T) {
			var written atomic.Int64
			ended := make(chan error, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if mode == "gzip" {
					w.Header().Set("Content-Encoding", "gzip")
					n, _ := w.Write(bomb.Bytes())
					written.Add(int64(n))
					ended <- nil
					return
				}
				if mode == "content-length" {
					w.Header().Set("Content-Length", fmt.Sprint(int64(1)<<40))
				}
				buf := bytes.Repeat([]byte(" "), 32<<10)
				w.Write([]byte(`"`))
				for {
					n, err := w.Write(buf)
					written.Add(int64(n))
					if err == nil {
						err = http.NewResponseController(w).Flush()
					}
					if err != nil {
						ended <- err
						return
					}
				}
			}))
			defer srv.Close()
			c := NewClient(WithBaseURL(srv.URL), WithMaxResponseBytes(secBodyLimit))
			defer c.Close()
			q := NewQuery[struct{}, string](c, Endpoint{URL: "/stream"})
			q.SetData(struct{}{}, "cached")
			start := time.Now()
			_, err := q.Fetch(context.Background(), struct{}{})
			took := time.Since(start)
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("exceeds %d bytes", secBodyLimit))
			assert.Less(t, took, secFailFast, "the fetch failed fast")
			select {
			case err := <-ended:
				if mode != "gzip" {
					assert.Error(t, err, "the server's write failed: the connection was closed")
				}
			case <-time.After(secServerSees):
				require.FailNowf(t, "the server still streams", "after %v the server still streams (%d bytes written)", secServerSees, written.Load())
			}
			v, _ := q.Peek(struct{}{})
			assert.Equal(t, "cached", v, "the data stays")
			t.Logf("%s: failed after %v; server wrote %d bytes", mode, took.Round(time.Millisecond), written.Load())
		})
	}
}

// ---------- hostile decoded values ----------

type panicsInUnmarshal struct{ V string }

func (p *panicsInUnmarshal) UnmarshalJSON(b []byte) error {
	if bytes.Contains(b, []byte("boom")) {
		panic("unmarshal boom")
	}
	return json.Unmarshal(b, &p.V)
}

type panicsInValidate struct{ V string }

func (p panicsInValidate) Validate() error {
	if p.V == "boom" {
		panic("validate boom")
	}
	return nil
}

type panicsInPtrValidate struct{ V []int }

func (p *panicsInPtrValidate) Validate() error {
	_ = p.V[len(p.V)] // index out of range when V comes from the body
	return nil
}

// TestDecodedBodyCannotPanicTheClient: a T whose UnmarshalJSON or Validate
// panics turns into an error (not retried), over HTTP and over a WebSocket
// handler; the cached data stays and the process lives.
func TestDecodedBodyCannotPanicTheClient(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/ptr":
			io.WriteString(w, `{"V":[1,2,3]}`)
		case "/v":
			io.WriteString(w, `{"V":"boom"}`)
		default:
			io.WriteString(w, `"boom"`)
		}
	}))
	defer srv.Close()
	c := NewClient(WithBaseURL(srv.URL))
	defer c.Close()
	ctx := context.Background()
	fast := RetryDelay(func(int, error) time.Duration { return time.Millisecond })

	check := func(name string, get func() error, peek func() bool) {
		t.Helper()
		before := hits.Load()
		err := get()
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "panicked", name)
		assert.EqualValues(t, 1, hits.Load()-before, "%s: a panic is not retried", name)
		assert.True(t, peek(), "%s: the cached data stays", name)
	}
	q1 := NewQuery[struct{}, panicsInUnmarshal](c, Endpoint{URL: "/u"}, fast)
	q1.SetData(struct{}{}, panicsInUnmarshal{"cached"})
	check("UnmarshalJSON", func() error { _, err := q1.Fetch(ctx, struct{}{}); return err },
		func() bool { v, _ := q1.Peek(struct{}{}); return v.V == "cached" })
	q2 := NewQuery[struct{}, panicsInValidate](c, Endpoint{URL: "/v"}, fast)
	q2.SetData(struct{}{}, panicsInValidate{"cached"})
	check("Validate", func() error { _, err := q2.Fetch(ctx, struct{}{}); return err },
		func() bool { v, _ := q2.Peek(struct{}{}); return v.V == "cached" })
	q3 := NewQuery[struct{}, panicsInPtrValidate](c, Endpoint{URL: "/ptr"}, fast)
	q3.SetData(struct{}{}, panicsInPtrValidate{[]int{7}})
	check("pointer Validate", func() error { _, err := q3.Fetch(ctx, struct{}{}); return err },
		func() bool { v, _ := q3.Peek(struct{}{}); return len(v.V) == 1 })
	o := q2.Use(ctx, struct{}{}, RefetchOnMount(Always))
	defer o.Close()
	wsWaitState(t, o, "the observer's failed fetch", func(s State[panicsInValidate]) bool { return s.Status == StatusError })

	// The same types through the WebSocket handler: an error, not a crash.
	for name, h := range map[string]MessageHandler{
		"UnmarshalJSON": SetDataHandler(q1, func(panicsInUnmarshal) struct{} { return struct{}{} }),
		"Validate":      SetDataHandler(q2, func(panicsInValidate) struct{} { return struct{}{} }),
		"ptr Validate":  SetDataHandler(q3, func(panicsInPtrValidate) struct{} { return struct{}{} }),
	} {
		s := &WSStream{c: c, url: "ws://x", h: Route("t", map[string]MessageHandler{"x": h}), ctx: ctx}
		for _, msg := range []string{`{"t":"x","V":"boom"}`, `"boom"`, `{"t":"x","V":[1]}`} {
			func() {
				defer func() {
					if r := recover(); r != nil {
						require.FailNowf(t, "panicked through the stream", "%s: %s panicked through the stream: %v", name, msg, r)
					}
				}()
				s.handle([]byte(msg))
			}()
		}
	}
}
