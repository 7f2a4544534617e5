package qcache

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// headerServer accepts WebSocket handshakes at /ws and remembers the
// headers and URL of each.
type headerServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

// newHeaderServer starts one; with redirect set, it answers /ws with a
// redirect there (307) and accepts on every other path.
func newHeaderServer(t *testing.T, tls bool, redirect string) *headerServer {
	s := &headerServer{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirect != "" && r.URL.Path == "/ws" {
			http.Redirect(w, r, redirect, http.StatusTemporaryRedirect)
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, &http.Request{Header: r.Header.Clone(), URL: r.URL, Host: r.Host})
		s.mu.Unlock()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		wsReadUntilDone(r.Context(), c)
	})
	if tls {
		s.Server = httptest.NewTLSServer(h)
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *headerServer) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.seen...)
}

func (s *headerServer) port() string {
	u, _ := url.Parse(s.URL)
	return u.Port()
}

// TestWSHandshakeRedirectKeepsCredentialsInTheOrigin: the handshake follows
// redirects, but one that leaves the origin (scheme, host or port) drops
// every credential: Authorization (set or from user info), cookies (set or
// from a jar), configured headers and Referer. net/http alone forwards
// X-Api-Key everywhere, and Authorization and cookies to another port of
// the same host.
func TestWSHandshakeRedirectKeepsCredentialsInTheOrigin(t *testing.T) {
	const (
		bearer = "Bearer ws-s3cret"
		cookie = "session=ws-c00kie"
		apiKey = "ws-api-k3y"
	)
	target := newHeaderServer(t, false, "")
	for _, tc := range []struct {
		name, to   string // where the origin redirects /ws
		keepsCreds bool
	}{
		{"same origin", "/here", true},
		{"other port", "http://127.0.0.1:" + target.port() + "/ws", false},
		{"other host", "http://localhost:" + target.port() + "/ws", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := newHeaderServer(t, false, tc.to)
			dest := target
			if tc.keepsCreds {
				dest = origin
			}
			before := len(dest.requests())

			jar, err := cookiejar.New(nil)
			require.NoError(t, err)
			originURL, _ := url.Parse(origin.URL)
			jar.SetCookies(originURL, []*http.Cookie{{Name: "jar", Value: "ws-jar-c00kie"}})
			c := NewClient()
			defer c.Close()
			wsURL := "ws://alice:pw-userinfo@" + strings.TrimPrefix(origin.URL, "http://") + "/ws"
			for _, withUser := range []bool{false, true} {
				u := "ws" + strings.TrimPrefix(origin.URL, "http") + "/ws"
				hdr := http.Header{"Authorization": {bearer}, "Cookie": {cookie}, "X-Api-Key": {apiKey}}
				if withUser {
					u = wsURL
					hdr.Del("Authorization")
				}
				s := c.SubscribeWS(t.Context(), u, func(context.Context, []byte) error { return nil },
					append(wsFast, WSDialOptions(&websocket.DialOptions{HTTPHeader: hdr, HTTPClient: &http.Client{Jar: jar}}))...)
				require.Eventually(t, s.Connected, 5*time.Second, time.Millisecond, "connected through the redirect")
				require.NoError(t, s.Close())
			}

			reqs := dest.requests()[before:]
			require.Len(t, reqs, 2)
			for i, r := range reqs {
				got := r.Header
				if tc.keepsCreds {
					assert.NotEmpty(t, got.Get("Authorization"), "request %d", i)
					assert.Contains(t, got.Get("Cookie"), "ws-c00kie", "request %d", i)
					assert.Contains(t, got.Get("Cookie"), "ws-jar-c00kie", "request %d", i)
					assert.Equal(t, apiKey, got.Get("X-Api-Key"), "request %d", i)
					continue
				}
				for _, name := range []string{"Authorization", "Cookie", "X-Api-Key", "Referer"} {
					assert.Empty(t, got.Values(name), "request %d carried %s to %s", i, name, tc.to)
				}
				assert.NotEmpty(t, got.Get("Sec-WebSocket-Key"), "the handshake itself is intact")
			}
		})
	}
}

// TestWSUsesTheClientsConfiguration: a relative URL is resolved against
// WithBaseURL (http → ws, https → wss); the handshake carries WithHeader's
// headers, goes through the request editors (which may change its headers
// and URL) and WithHTTPClient's transport.
func TestWSUsesTheClientsConfiguration(t *testing.T) {
	noop := func(context.Context, []byte) error { return nil }
	t.Run("http", func(t *testing.T) {
		srv := newHeaderServer(t, false, "")
		tr := &countingTransport{}
		c := NewClient(WithBaseURL(srv.URL+"/"), WithHeader("X-Api-Key", "k1"), WithHTTPClient(&http.Client{Transport: tr}),
			WithRequestEditor(func(r *http.Request) error {
				assert.Equal(t, "http", r.URL.Scheme, "editors see the http form of the URL, as for queries")
				r.Header.Set("Authorization", "Bearer from-editor")
				r.URL.RawQuery = "token=t1"
				return nil
			}))
		defer c.Close()
		s := c.SubscribeWS(t.Context(), "/ws", noop, wsFast...)
		defer s.Close()
		require.Eventually(t, s.Connected, 5*time.Second, time.Millisecond, "connected to the relative URL; errors: %v", s.Err())
		reqs := srv.requests()
		require.Len(t, reqs, 1)
		assert.Equal(t, "k1", reqs[0].Header.Get("X-Api-Key"))
		assert.Equal(t, "Bearer from-editor", reqs[0].Header.Get("Authorization"))
		assert.Equal(t, "/ws", reqs[0].URL.Path)
		assert.Equal(t, "token=t1", reqs[0].URL.RawQuery)
		assert.Equal(t, int32(1), tr.n.Load(), "the handshake went through WithHTTPClient's transport")
		assert.NoError(t, s.Err())
	})
	t.Run("https", func(t *testing.T) {
		srv := newHeaderServer(t, true, "")
		c := NewClient(WithBaseURL(srv.URL), WithHTTPClient(srv.Client())) // trusts the test certificate
		defer c.Close()
		s := c.SubscribeWS(t.Context(), "/ws", noop, wsFast...)
		defer s.Close()
		require.Eventually(t, s.Connected, 5*time.Second, time.Millisecond, "connected over wss")
	})
	t.Run("dial options win", func(t *testing.T) {
		srv := newHeaderServer(t, false, "")
		tr := &countingTransport{}
		c := NewClient(WithHeader("X-Api-Key", "client"), WithHTTPClient(&http.Client{Transport: tr}))
		defer c.Close()
		s := c.SubscribeWS(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", noop, append(wsFast,
			WSDialOptions(&websocket.DialOptions{HTTPHeader: http.Header{"X-Api-Key": {"dial"}}, HTTPClient: &http.Client{}}))...)
		defer s.Close()
		require.Eventually(t, s.Connected, 5*time.Second, time.Millisecond)
		assert.Equal(t, []string{"dial"}, srv.requests()[0].Header.Values("X-Api-Key"))
		assert.Zero(t, tr.n.Load(), "WSDialOptions' HTTP client replaces the client's")
	})
}

// TestWSUndialableURLEndsAtOnce: a URL that cannot be dialled at all ends
// the stream at once with an error that says why, instead of retrying it
// for ever; the error carries no user info.
func TestWSUndialableURLEndsAtOnce(t *testing.T) {
	noop := func(context.Context, []byte) error { return nil }
	plain := NewClient()
	defer plain.Close()
	based := NewClient(WithBaseURL("http://127.0.0.1:1/api"))
	defer based.Close()
	for _, tc := range []struct {
		c        *Client
		url      string
		contains string
	}{
		{plain, "", "relative URL and the client has no WithBaseURL"},
		{plain, "/ws", "relative URL and the client has no WithBaseURL"},
		{plain, "example.com/ws", "relative URL and the client has no WithBaseURL"},
		{based, "//other.example/ws", "no scheme"},
		{plain, "ftp://alice:pw-s3cret@example.com/ws", `scheme "ftp"`},
		{based, "mailto:ws@example.com", `scheme "mailto"`},
		{plain, "ws:///ws", "no host"},
		{plain, "ws://alice:pw-s3cret@%zz/ws", "invalid URL escape"},
		{plain, "ws://[::1/ws", "missing ']'"},
		{based, "ws\x7f://x", "invalid"},
	} {
		var log wsErrorLog
		s := tc.c.SubscribeWS(t.Context(), tc.url, noop, WSOnError(log.add))
		select {
		case <-s.Done():
		default:
			require.FailNowf(t, "the stream has not ended", "%q: the stream has not ended", tc.url)
		}
		err := s.Err()
		require.ErrorIs(t, err, ErrWSBadURL, "%q", tc.url)
		assert.ErrorContains(t, err, tc.contains, "%q", tc.url)
		assert.NotContains(t, err.Error(), "pw-s3cret", "%q", tc.url)
		assert.False(t, s.Connected())
		assert.NoError(t, s.Close())
		assert.Equal(t, WSStats{}, s.Stats())
		assert.Empty(t, log.all(), "the stream never ran")
	}

	closed := NewClient()
	closed.Close()
	assert.ErrorIs(t, closed.SubscribeWS(t.Context(), "ws://127.0.0.1:1/ws", noop).Err(), ErrClosed)
}
