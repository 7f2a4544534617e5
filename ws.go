package qcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/qcache-go/qcache/internal/backoff"
	"github.com/qcache-go/qcache/internal/wait"
)

// ErrWSNotConnected is returned by WSStream.Send while the stream has no
// link (before the first connect, between a drop and the reconnect, and
// after the end).
var ErrWSNotConnected = errors.New("qcache: websocket not connected")

// ErrWSBadURL is the error (wrapped, with the reason) that WSStream.Err
// returns when SubscribeWS was given a URL that cannot be dialled at all:
// unparsable, without a host, with a scheme other than ws, wss, http or
// https, or relative on a client without WithBaseURL.
var ErrWSBadURL = errors.New("qcache: websocket: bad URL")

// MessageHandler handles one WebSocket message (text or binary): typically
// it decodes msg and calls Query.SetData or Client.Invalidate. The stream
// calls it on one goroutine, in the order messages arrive, with a ctx that
// ends with the stream. msg is the handler's to keep.
//
// An error, or a panic, is reported to WSOnError and counted in
// Stats().Errors; the stream goes on with the next message. While the
// handler runs no other message is read, nor any pong: a handler that
// blocks for longer than the ping timeout gets the link dropped.
type MessageHandler func(ctx context.Context, msg []byte) error

// WSStats are counters of a stream since it was made.
type WSStats struct {
	Connects uint64 `json:"connects"` // links established, the first one included
	Messages uint64 `json:"messages"` // messages read and handed to the handler, whatever it answered
	Errors   uint64 `json:"errors"`   // errors reported to WSOnError: dials, drops, OnConnect, bad messages
}

// WSStream is a WebSocket subscription made by Client.SubscribeWS: one
// goroutine that keeps a link to the server up, reconnecting with backoff,
// and hands every message to a MessageHandler. It is safe for concurrent
// use. It ends on Close, when the context given to SubscribeWS ends, or on
// Client.Close.
type WSStream struct {
	c      *Client
	target *url.URL // resolved, ws or wss
	url    string   // target without user info, for errors and logs
	err    error    // why the stream never started
	h      MessageHandler
	cfg    wsConfig

	ctx    context.Context // ends the stream
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup // link watchers and resyncs, waited for before done closes

	conn atomic.Pointer[websocket.Conn] // the link, nil while down

	connects, messages, errs atomic.Uint64

	wasUp bool // a link got past OnConnect before; only the stream goroutine uses it

	mu              sync.Mutex
	resyncRunning   bool
	resyncPending   bool
	lastResync      time.Time // start of the last refetching resync
	resyncScheduled bool      // one waits for the end of the WSResyncMinInterval window
	closeErr        error
}

// SubscribeWS starts a stream: it dials url (ws, wss, http or https),
// calls WSOnConnect, then reads messages and hands each to h. When the link
// drops (close frame, reset, an unanswered ping, a message over
// WSReadLimit, a failed OnConnect) it reconnects after an exponential,
// jittered delay within WSReconnect's bounds, and after every reconnect it
// invalidates the WSResync filter in the background, because messages were
// missed while the link was down. Refused handshakes are retried the same
// way, honouring Retry-After up to the upper bound.
//
// The stream is the client's: a relative url ("/events") is joined to
// WithBaseURL, as endpoints are (http becomes ws, https wss); the handshake
// carries WithHeader's headers, then WSDialOptions' (which win for the same
// name), goes through WithRequestEditor's editors before every dial (they
// see the http or https form of the URL and may change its headers and URL;
// an editor's error fails that dial, which is retried like a refused one),
// and uses WithHTTPClient's client, unless WSDialOptions sets one.
//
// The handshake follows redirects. One that leaves the URL's origin
// (scheme, host or port) drops every credential: Authorization, cookies,
// configured headers, user info and Referer (net/http alone forwards most
// of them).
//
// SubscribeWS returns at once, without waiting for the first connect. The
// stream ends, with a close frame (StatusNormalClosure), on Close, when ctx
// ends, or on Client.Close; tie it to an observer by giving both the same
// ctx. A url that cannot be dialled at all (see ErrWSBadURL) is not
// retried: the stream returned has already ended, and its Err says why. On
// a closed client the stream returned has ended too, and Err is ErrClosed.
// SubscribeWS panics on a nil handler.
func (c *Client) SubscribeWS(ctx context.Context, url string, h MessageHandler, opts ...WSOption) *WSStream {
	if h == nil {
		panic("qcache: SubscribeWS: nil MessageHandler")
	}
	cfg := defaultWSConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.pingTimeout == 0 {
		cfg.pingTimeout = cfg.pingInterval
	}
	if cfg.stableAfter == 0 {
		cfg.stableAfter = cfg.maxDelay
	}
	if ctx == nil {
		ctx = context.Background()
	}
	s := &WSStream{c: c, h: h, cfg: cfg, done: make(chan struct{})}
	s.target, s.err = c.wsTarget(url)
	if s.target != nil {
		s.url = safeURL(s.target)
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if s.err == nil && c.closed.Load() {
		s.err = ErrClosed
	}
	if s.err != nil {
		s.cancel()
		close(s.done)
		return s
	}
	stop := context.AfterFunc(c.ctx, s.cancel)
	if !c.goroutine(func() {
		defer close(s.done)
		defer stop()
		defer s.cancel()
		c.trackStream(s) // for package inspect (introspect.go)
		defer c.untrackStream(s)
		s.run()
	}) {
		stop()
		s.cancel()
		s.err = ErrClosed
		close(s.done)
	}
	return s
}

// wsTarget resolves the url given to SubscribeWS: relative ones against
// the base URL, http(s) to ws(s). Its errors carry no user info.
func (c *Client) wsTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() quotes the whole URL, user info included
		}
		return nil, fmt.Errorf("%w: cannot parse it: %w", ErrWSBadURL, err)
	}
	if u.Scheme == "" && u.Host == "" && u.User == nil {
		base := c.cfg.baseURL
		if base == nil {
			return nil, fmt.Errorf("%w %q: relative URL and the client has no WithBaseURL", ErrWSBadURL, raw)
		}
		ref := u.String()
		if !strings.HasPrefix(ref, "/") {
			ref = "/" + ref
		}
		if u, err = url.Parse(strings.TrimSuffix(base.String(), "/") + ref); err != nil {
			return nil, fmt.Errorf("%w: cannot join %q to the base URL", ErrWSBadURL, ref)
		}
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "http":
		u.Scheme = "ws"
	case "wss", "https":
		u.Scheme = "wss"
	case "":
		return nil, fmt.Errorf("%w %q: no scheme", ErrWSBadURL, safeURL(u))
	default:
		return nil, fmt.Errorf("%w %q: scheme %q is not ws, wss, http or https", ErrWSBadURL, safeURL(u), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w %q: no host", ErrWSBadURL, safeURL(u))
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// Err returns why the stream never started: an error wrapping ErrWSBadURL
// for a url that cannot be dialled, or ErrClosed for a closed client. It
// returns nil for every stream that started, whatever happened to it
// since: those report to WSOnError.
func (s *WSStream) Err() error { return s.err }

// Send writes msg to the server as one text message. It returns
// ErrWSNotConnected while the link is down: Send does not queue messages
// for the next link (resubscribe in WSOnConnect instead). ctx bounds the
// write; a write cut short by ctx drops the link.
func (s *WSStream) Send(ctx context.Context, msg []byte) error {
	conn := s.conn.Load()
	if conn == nil {
		return ErrWSNotConnected
	}
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("qcache: websocket %s: send: %w", s.url, err)
	}
	return nil
}

// Connected reports whether the stream has a link now. It turns true before
// WSOnConnect is called, so that OnConnect can Send.
func (s *WSStream) Connected() bool { return s.conn.Load() != nil }

// Stats returns the stream's counters.
func (s *WSStream) Stats() WSStats {
	return WSStats{Connects: s.connects.Load(), Messages: s.messages.Load(), Errors: s.errs.Load()}
}

// Close ends the stream: it sends a close frame (StatusNormalClosure) on the
// link, if one is up, and waits for the server's answer and for the
// stream's goroutines to return. A live server answers at once; for a peer
// that died silently since the last ping, Close waits out coder/websocket's
// bound of 5 seconds. It returns the error
// of that close handshake, if any. Close may be called more than once, but
// not from the handler, OnConnect or OnError, which would wait for
// themselves: cancel the stream's context there instead.
func (s *WSStream) Close() error {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// Done returns a channel that is closed once the stream has ended and its
// goroutines have returned.
func (s *WSStream) Done() <-chan struct{} { return s.done }

// run is the stream's goroutine: dial, serve the link, wait, again.
func (s *WSStream) run() {
	defer s.wg.Wait()
	failures := 0
	for s.ctx.Err() == nil {
		conn, cancelDial, retryAfter, err := s.dial()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.report(err)
			if !wait.Sleep(s.ctx, s.delay(failures, retryAfter)) {
				return
			}
			failures++
			continue
		}
		if s.connects.Add(1) == 1 {
			s.c.cfg.logger.DebugContext(s.ctx, "qcache: websocket connected", "url", s.url)
		} else {
			s.c.cfg.logger.InfoContext(s.ctx, "qcache: websocket reconnected", "url", s.url)
		}
		if h := s.c.cfg.hooks.WSConnected; h != nil {
			s.c.callHook("WSConnected", func() { h(s.url) })
		}
		healthy, err := s.serve(conn)
		cancelDial()
		if h := s.c.cfg.hooks.WSDropped; h != nil {
			dropErr := err
			if s.ctx.Err() != nil {
				dropErr = nil // closed on purpose
			}
			s.c.callHook("WSDropped", func() { h(s.url, dropErr) })
		}
		if s.ctx.Err() != nil {
			return
		}
		s.c.cfg.logger.WarnContext(s.ctx, "qcache: websocket link dropped", "url", s.url, "err", err)
		if err != nil {
			s.report(err)
		}
		if healthy {
			failures = 0
		}
		if !wait.Sleep(s.ctx, s.delay(failures, 0)) {
			return
		}
		failures++
	}
}

// dial makes one handshake, bounded by WSDialTimeout and the stream's
// context. The returned function releases the handshake's context once the
// link is over.
func (s *WSStream) dial() (_ *websocket.Conn, release context.CancelFunc, retryAfter time.Duration, _ error) {
	// The stream's end must cut the handshake short but not the link once it
	// is up: the link ends with a close frame instead.
	ctx, cancelCause := context.WithCancelCause(context.WithoutCancel(s.ctx))
	cancel := func() { cancelCause(nil) }
	stop := context.AfterFunc(s.ctx, cancel)
	timedOut := fmt.Errorf("handshake took longer than %v: %w", s.cfg.dialTimeout, context.DeadlineExceeded)
	t := time.AfterFunc(s.cfg.dialTimeout, func() { cancelCause(timedOut) })
	conn, resp, err := s.handshake(ctx)
	stop()
	t.Stop()
	if err != nil {
		var ue *url.Error
		switch {
		case context.Cause(ctx) == timedOut:
			err = timedOut
		case errors.As(err, &ue):
			// Its text quotes the URL, which request editors may have
			// given a token.
			err = fmt.Errorf("handshake: %w", ue.Err)
		}
		cancel()
		if resp != nil {
			// The rule of fetch retries: the server's wait, at most the
			// longest delay (a reconnect waits that rather than give up).
			retryAfter, _, _ = backoff.RetryAfterWithin(resp.Header, time.Now(), s.cfg.maxDelay)
		}
		return nil, nil, retryAfter, fmt.Errorf("qcache: websocket %s: %w", s.url, err)
	}
	return conn, cancel, 0, nil
}

// handshake dials the stream's URL with the client's headers, request
// editors and HTTP client, and WSDialOptions.
func (s *WSStream) handshake(ctx context.Context) (*websocket.Conn, *http.Response, error) {
	var opts websocket.DialOptions
	if s.cfg.dial != nil {
		opts = *s.cfg.dial
	}
	u := *s.target
	u.Scheme = httpScheme(u.Scheme)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	for k, vs := range s.c.cfg.header {
		req.Header[k] = slices.Clone(vs)
	}
	for k, vs := range opts.HTTPHeader {
		req.Header[k] = slices.Clone(vs)
	}
	for _, edit := range s.c.cfg.editors {
		if err := edit(req); err != nil {
			return nil, nil, fmt.Errorf("request editor: %w", err)
		}
	}
	opts.HTTPHeader = req.Header
	hc := opts.HTTPClient
	if hc == nil {
		hc = s.c.cfg.httpClient
	}
	opts.HTTPClient = wsOriginClient(hc, req.URL)
	return websocket.Dial(ctx, req.URL.String(), &opts)
}

// wsOriginClient returns a copy of hc for handshakes with origin (the URL
// dialled): a redirect that leaves the origin (scheme, host or port; ws and
// http count as one scheme, as do wss and https) drops every credential:
// Authorization, cookies (set as a header or from hc's Jar), every
// configured header, user info and Referer. Only the headers of the
// handshake itself go on. Once a redirect has left the origin, the later
// hops of the chain get no credentials either, even back at the origin.
// hc's own CheckRedirect, if any, runs after the stripping; without one,
// at most 10 redirects are followed.
//
// net/http alone drops only Authorization and cookies, and only when the
// host name changes: another port of the same host gets them, and every
// other header goes everywhere.
func wsOriginClient(hc *http.Client, origin *url.URL) *http.Client {
	c := *hc
	c.CheckRedirect = guardRedirects(hc.CheckRedirect, wsHandshakeHeaders...)
	if hc.Jar != nil {
		c.Jar = originJar{hc.Jar, origin}
	}
	return &c
}

// wsHandshakeHeaders are the headers a handshake needs, which a redirect
// out of the origin keeps.
var wsHandshakeHeaders = []string{
	"Connection", "Upgrade", "User-Agent",
	"Sec-WebSocket-Key", "Sec-WebSocket-Version",
	"Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol",
}

// originJar hands out a jar's cookies to the origin only (a jar, following
// RFC 6265, would give them to every port of the host).
type originJar struct {
	http.CookieJar
	origin *url.URL
}

func (j originJar) Cookies(u *url.URL) []*http.Cookie {
	if !sameOrigin(u, j.origin) {
		return nil
	}
	return j.CookieJar.Cookies(u)
}

// delay is the wait before reconnect attempt failures+1: exponential from
// min, jittered, within [min, max], and not below a Retry-After that fits.
func (s *WSStream) delay(failures int, retryAfter time.Duration) time.Duration {
	lo, hi := s.cfg.minDelay, s.cfg.maxDelay
	d := backoff.Jittered(backoff.Exponential(failures+1, lo, hi))
	d = min(max(d, lo), hi)
	if retryAfter > d {
		d = min(retryAfter, hi)
	}
	return d
}

// serve runs one link: OnConnect, the resync, then the read loop until the
// link drops or the stream ends. healthy reports whether the link stayed
// up for WSStableAfter, which resets the backoff.
func (s *WSStream) serve(conn *websocket.Conn) (healthy bool, err error) {
	conn.SetReadLimit(s.cfg.readLimit)
	up := time.Now()
	linkDone := make(chan struct{})
	watchDone := make(chan struct{})
	var reason error // set by the watcher before watchDone closes
	s.wg.Add(1)
	go runOwned(func() { // a goroutine that runs callbacks (predicates, OnError)
		defer s.wg.Done()
		defer close(watchDone)
		reason = s.watch(conn, linkDone)
	})
	s.conn.Store(conn)
	defer func() {
		s.conn.Store(nil)
		close(linkDone)
		<-watchDone
		conn.CloseNow()
		if reason != nil {
			err = reason
		}
		healthy = time.Since(up) >= s.cfg.stableAfter
	}()

	if f := s.cfg.onConnect; f != nil {
		if err := s.callOnConnect(f); err != nil {
			return false, err
		}
	}
	if s.wasUp {
		s.resync()
	}
	s.wasUp = true

	// Reads take a context without Done: coder/websocket would otherwise
	// arm a timer per frame (7 allocations a message). The link ends through
	// watch instead.
	readCtx := context.Background()
	var buf bytes.Buffer // reused; each message gets its own exact copy
	for {
		msg, err := readMessage(readCtx, conn, &buf)
		if err != nil {
			return healthy, s.linkError(err)
		}
		s.messages.Add(1)
		err = s.handle(msg)
		if h := s.c.cfg.hooks.WSMessage; h != nil {
			s.c.callHook("WSMessage", func() { h(s.url, len(msg), err) })
		}
		if err != nil && s.ctx.Err() == nil {
			s.report(err)
		}
	}
}

func readMessage(ctx context.Context, conn *websocket.Conn, buf *bytes.Buffer) ([]byte, error) {
	_, r, err := conn.Reader(ctx)
	if err != nil {
		return nil, err
	}
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return bytes.Clone(buf.Bytes()), nil
}

func (s *WSStream) callOnConnect(f func(context.Context, *WSStream) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("qcache: websocket %s: OnConnect panicked: %v", s.url, r)
		}
	}()
	if err := f(s.ctx, s); err != nil {
		return fmt.Errorf("qcache: websocket %s: OnConnect: %w", s.url, err)
	}
	return nil
}

func (s *WSStream) handle(msg []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("qcache: websocket %s: handler panicked: %v", s.url, r)
		}
	}()
	if err := s.h(s.ctx, msg); err != nil {
		return fmt.Errorf("qcache: websocket %s: %w", s.url, err)
	}
	return nil
}

// linkError says why the read loop ended.
func (s *WSStream) linkError(err error) error {
	switch {
	case errors.Is(err, websocket.ErrMessageTooBig):
		return fmt.Errorf("qcache: websocket %s: message over the read limit of %d bytes: %w", s.url, s.cfg.readLimit, err)
	case websocket.CloseStatus(err) != -1:
		return fmt.Errorf("qcache: websocket %s: closed by the server: %w", s.url, err)
	}
	return fmt.Errorf("qcache: websocket %s: link lost: %w", s.url, err)
}

// watch runs beside the read loop of one link: it pings, drops the link
// when a pong does not come (returning why), and closes the link with a
// close frame when the stream ends.
func (s *WSStream) watch(conn *websocket.Conn, linkDone <-chan struct{}) error {
	var tick <-chan struct{}
	if s.cfg.pingInterval > 0 {
		t := wait.NewTicker(s.cfg.pingInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-linkDone:
			return nil
		case <-s.ctx.Done():
			s.closeLink(conn)
			return nil
		case <-tick:
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.pingTimeout)
			err := conn.Ping(ctx)
			cancel()
			if err == nil || errors.Is(err, net.ErrClosed) {
				continue // a closed link is the read loop's to report
			}
			if s.ctx.Err() != nil {
				s.closeLink(conn)
				return nil
			}
			select {
			case <-linkDone:
				return nil
			default:
			}
			conn.CloseNow()
			return fmt.Errorf("qcache: websocket %s: no pong within %v: %w", s.url, s.cfg.pingTimeout, err)
		}
	}
}

// closeLink sends a close frame, waits for the peer's answer and closes the
// connection.
func (s *WSStream) closeLink(conn *websocket.Conn) {
	err := conn.Close(websocket.StatusNormalClosure, "")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.mu.Lock()
		s.closeErr = fmt.Errorf("qcache: websocket %s: close: %w", s.url, err)
		s.mu.Unlock()
	}
}

// resync runs on the stream's goroutine after every reconnect. The first
// time, and when WSResyncMinInterval has passed since the last refetching
// resync, it starts one; otherwise it marks the WSResync filter stale at
// once and schedules one refetching resync for the end of the interval.
func (s *WSStream) resync() {
	s.mu.Lock()
	now := time.Now()
	if s.resyncScheduled || (!s.lastResync.IsZero() && now.Sub(s.lastResync) < s.cfg.resyncMinInterval) {
		schedule := !s.resyncScheduled
		s.resyncScheduled = true
		due := s.lastResync.Add(s.cfg.resyncMinInterval).Sub(now)
		s.mu.Unlock()
		f := s.cfg.resync
		f.Refetch = RefetchNone
		s.invalidateResync(f) // does not wait: nothing to refetch
		if schedule {
			s.wg.Add(1)
			go runOwned(func() { // a goroutine that runs callbacks (predicates, OnError)
				defer s.wg.Done()
				if !wait.Sleep(s.ctx, due) {
					return
				}
				s.mu.Lock()
				s.resyncScheduled = false
				s.mu.Unlock()
				s.refetchResync()
			})
		}
		return
	}
	s.mu.Unlock()
	s.refetchResync()
}

// invalidateResync invalidates f, the WSResync filter, in this client
// only (only it missed messages: the other replicas are not told) and
// waits for the refetches f asks for. It runs on the stream's goroutines,
// so a panicking Predicate or Where is logged instead of ending the
// process.
func (s *WSStream) invalidateResync(f Filter) {
	defer s.c.logFilterPanic(s.ctx, "websocket resync", "url", s.url)
	if err := s.c.invalidateLocal(s.ctx, f); err != nil {
		s.c.cfg.logger.DebugContext(s.ctx, "qcache: websocket resync", "url", s.url, "err", err)
	}
}

// refetchResync invalidates the WSResync filter in the background. Resyncs
// do not pile up: one asked while another runs starts when it returns.
func (s *WSStream) refetchResync() {
	s.mu.Lock()
	s.lastResync = time.Now()
	if s.resyncRunning {
		s.resyncPending = true
		s.mu.Unlock()
		return
	}
	s.resyncRunning = true
	s.mu.Unlock()
	s.wg.Add(1)
	go runOwned(func() { // a goroutine that runs callbacks (predicates, OnError)
		defer s.wg.Done()
		for {
			s.invalidateResync(s.cfg.resync)
			s.mu.Lock()
			if !s.resyncPending || s.ctx.Err() != nil {
				s.resyncRunning, s.resyncPending = false, false
				s.mu.Unlock()
				return
			}
			s.resyncPending = false
			s.mu.Unlock()
		}
	})
}

// report counts err, logs it and hands it to OnError.
func (s *WSStream) report(err error) {
	s.errs.Add(1)
	s.c.cfg.logger.DebugContext(s.ctx, "qcache: websocket", "url", s.url, "err", err)
	f := s.cfg.onError
	if f == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.c.cfg.logger.ErrorContext(s.ctx, "qcache: websocket OnError panicked", "url", s.url, "panic", r)
		}
	}()
	f(err)
}

// ---------- WebSocket options ----------

// WSOption configures a stream in Client.SubscribeWS.
type WSOption func(*wsConfig)

type wsConfig struct {
	minDelay, maxDelay time.Duration
	resync             Filter
	readLimit          int64
	pingInterval       time.Duration
	pingTimeout        time.Duration // 0: the ping interval
	onConnect          func(ctx context.Context, s *WSStream) error
	onError            func(error)
	dial               *websocket.DialOptions
	dialTimeout        time.Duration
	stableAfter        time.Duration // 0: maxDelay; see WSStableAfter
	resyncMinInterval  time.Duration // see WSResyncMinInterval
}

func defaultWSConfig() wsConfig {
	return wsConfig{
		minDelay:     500 * time.Millisecond,
		maxDelay:     30 * time.Second,
		readLimit:    1 << 20,
		pingInterval: 30 * time.Second,
		dialTimeout:  30 * time.Second,

		resyncMinInterval: 30 * time.Second,
	}
}

// WSReconnect sets the bounds of the delay before each reconnect (default
// 500ms and 30s): the delay doubles after every failed attempt, with jitter,
// and stays between min and max. It goes back to min once a link has
// stayed up for WSStableAfter (default max): a link that drops sooner, even
// after delivering messages, counts as a failed attempt. It panics unless
// 0 < min ≤ max.
func WSReconnect(min, max time.Duration) WSOption {
	if min <= 0 || max < min {
		panic(fmt.Sprintf("qcache: WSReconnect(%v, %v): want 0 < min <= max", min, max))
	}
	return func(c *wsConfig) { c.minDelay, c.maxDelay = min, max }
}

// WSResync sets the filter invalidated after every reconnect, because
// messages were missed while the link was down (default Filter{}: every
// entry, refetching the ones with an enabled observer). The first connect
// does not invalidate, and refetching resyncs are rate-limited by
// WSResyncMinInterval. Use Filter{Refetch: RefetchNone, Predicate: ...} to
// narrow or soften it.
func WSResync(f Filter) WSOption { return func(c *wsConfig) { c.resync = f } }

// WSReadLimit bounds the size of one message (default 1 MiB). A larger
// message is refused without being read into memory, reported, and the link
// is re-established. It panics unless n is positive.
func WSReadLimit(n int64) WSOption {
	mustBePositive("WSReadLimit", n)
	return func(c *wsConfig) { c.readLimit = n }
}

// WSOnConnect sets a function called after every connect, first and
// reconnects alike, before any message is read: the place to send subscribe
// messages with s.Send. ctx ends with the stream. An error (or a panic) is
// reported, counted in Stats().Errors, and the link is re-established after
// the backoff delay.
func WSOnConnect(f func(ctx context.Context, s *WSStream) error) WSOption {
	return func(c *wsConfig) { c.onConnect = f }
}

// WSOnError sets a function told of every error of the stream: refused or
// failed dials, dropped links, OnConnect failures and bad messages. It is
// called from the stream's goroutine, one call at a time, and must not block
// for long. It is not told of the stream's own end.
func WSOnError(f func(error)) WSOption { return func(c *wsConfig) { c.onError = f } }

// WSDialOptions sets the options of every dial (HTTP client, headers,
// subprotocols, compression). The stream does not modify o.
func WSDialOptions(o *websocket.DialOptions) WSOption {
	return func(c *wsConfig) { c.dial = o }
}

// WSDialTimeout bounds one handshake, from the TCP dial to the server's
// answer (default 30s): a server that accepts the connection and never
// answers is given up on after d, and dialled again after the backoff delay.
// It panics unless d is positive.
func WSDialTimeout(d time.Duration) WSOption {
	mustBePositiveDuration("WSDialTimeout", d)
	return func(c *wsConfig) { c.dialTimeout = d }
}

// WSPingInterval sets how often the stream pings the server to find a dead
// link that no read would notice (default 30s; 0 turns pinging off). A ping
// not answered within the ping timeout (by default the interval itself)
// drops the link, which is then re-established. It panics on a negative d.
func WSPingInterval(d time.Duration) WSOption {
	nonNegative("WSPingInterval", d)
	return func(c *wsConfig) { c.pingInterval = d }
}

// WSPingTimeout sets how long a ping may wait for its pong before the link
// is dropped (default: the ping interval). It panics unless d is positive.
func WSPingTimeout(d time.Duration) WSOption {
	mustBePositiveDuration("WSPingTimeout", d)
	return func(c *wsConfig) { c.pingTimeout = d }
}

// WSStableAfter sets how long a link must stay up for the reconnect delay
// to go back to WSReconnect's minimum (default: WSReconnect's maximum). A
// link that drops sooner counts as a failed attempt, whatever it
// delivered, so a server that accepts, sends a message and closes is
// dialled ever more slowly instead of in a tight loop. It panics unless d
// is positive.
func WSStableAfter(d time.Duration) WSOption {
	mustBePositiveDuration("WSStableAfter", d)
	return func(c *wsConfig) { c.stableAfter = d }
}

// WSResyncMinInterval sets the least time between two resyncs that
// refetch (default 30s; 0 lets every reconnect refetch). A reconnect
// sooner after the last one invalidates the WSResync filter without
// refetching (Refetch: RefetchNone), so the entries are stale at once, and
// one resync that refetches follows when the interval has passed since the
// last (if the stream still runs). Then a link that flaps costs the
// upstream one refetch per entry per interval, not one per reconnect. It
// panics on a negative d.
func WSResyncMinInterval(d time.Duration) WSOption {
	nonNegative("WSResyncMinInterval", d)
	return func(c *wsConfig) { c.resyncMinInterval = d }
}

// ---------- handlers ----------

// SetDataHandler returns a handler that decodes each message as JSON into a
// T, validates it when T or *T has `Validate() error`, and stores it with
// q.SetData(params(v), v), so that p's observers see it at once. A message
// that does not decode or validate is an error and changes nothing.
// SetDataHandler does not look at a message's type: put it behind Route when
// the socket carries several kinds.
func SetDataHandler[P comparable, T any](q *Query[P, T], params func(T) P) MessageHandler {
	if q == nil || params == nil {
		panic("qcache: SetDataHandler: nil query or params function")
	}
	// validate boxes its argument: ask only types that can answer.
	_, valT := any(*new(T)).(validator)
	_, valPT := any(new(T)).(validator)
	return func(_ context.Context, msg []byte) error {
		var v T
		if err := json.Unmarshal(msg, &v); err != nil {
			return fmt.Errorf("qcache: %s: decode message: %w", q.name, err)
		}
		if valT || valPT {
			if err := validate(&v); err != nil {
				return fmt.Errorf("qcache: %s: validate message: %w", q.name, err)
			}
		}
		e, err := q.lockedEntry(params(v))
		if err != nil {
			return err
		}
		e.setDataLocked(v)
		e.mu.Unlock()
		return nil
	}
}

// InvalidateHandler returns a handler that invalidates the entries
// filter(msg) selects, as Client.Invalidate does, refetching those
// f.Refetch names. It does not wait for the refetches, so that the stream
// reads on; their results land in the entries' State. An error from filter
// is the handler's error.
func InvalidateHandler(c *Client, filter func(msg []byte) (Filter, error)) MessageHandler {
	if c == nil || filter == nil {
		panic("qcache: InvalidateHandler: nil client or filter function")
	}
	return func(ctx context.Context, msg []byte) error {
		f, err := filter(msg)
		if err != nil {
			return fmt.Errorf("qcache: invalidate message: %w", err)
		}
		if c.closed.Load() {
			return ErrClosed
		}
		for _, e := range c.matching(f) {
			e.invalidate(ctx, f.Refetch, wantPin)
		}
		return nil
	}
}

// Route returns a handler that reads the top-level JSON string field of each
// message (`"type"` in {"type":"user",...}) and hands the whole message to
// the handler routes has for its value. A message that is not a JSON
// object, lacks the field, has a non-string value there, or has a value no
// route knows is an error. Route reads only as far as it must: it does not
// check that the rest of the message is valid JSON (the routed handler's
// decoding does). When the field appears twice, the last one counts, as in
// encoding/json. routes is copied.
func Route(field string, routes map[string]MessageHandler) MessageHandler {
	routes = maps.Clone(routes)
	return func(ctx context.Context, msg []byte) error {
		v, err := topLevelString(msg, field)
		if err != nil {
			return fmt.Errorf("qcache: route: %w", err)
		}
		h := routes[string(v)]
		if h == nil {
			if len(v) > 64 {
				v = v[:64]
			}
			return fmt.Errorf("qcache: route: no handler for %s %q", field, v)
		}
		return h(ctx, msg)
	}
}

var errRouteSyntax = errors.New("message is not a JSON object")

// topLevelString returns the unescaped value of the top-level string field
// named field of the JSON object msg. Strings without escapes are returned
// without copying.
func topLevelString(msg []byte, field string) ([]byte, error) {
	i := skipSpace(msg, 0)
	if i >= len(msg) || msg[i] != '{' {
		return nil, errRouteSyntax
	}
	i = skipSpace(msg, i+1)
	var val []byte
	found := false
	if i < len(msg) && msg[i] == '}' {
		return nil, fmt.Errorf("message has no %q field", field)
	}
	for {
		if i >= len(msg) || msg[i] != '"' {
			return nil, errRouteSyntax
		}
		key, esc, j, ok := scanString(msg, i)
		if !ok {
			return nil, errRouteSyntax
		}
		match := string(key) == field
		if esc {
			match = unquote(msg[i:j]) == field
		}
		i = skipSpace(msg, j)
		if i >= len(msg) || msg[i] != ':' {
			return nil, errRouteSyntax
		}
		i = skipSpace(msg, i+1)
		if match {
			if i >= len(msg) || msg[i] != '"' {
				return nil, fmt.Errorf("field %q is not a string", field)
			}
			v, esc, j, ok := scanString(msg, i)
			if !ok {
				return nil, errRouteSyntax
			}
			if esc {
				var s string
				if err := json.Unmarshal(msg[i:j], &s); err != nil {
					return nil, errRouteSyntax
				}
				v = []byte(s)
			}
			val, found, i = v, true, j
		} else if i, ok = skipValue(msg, i); !ok {
			return nil, errRouteSyntax
		}
		i = skipSpace(msg, i)
		if i >= len(msg) {
			return nil, errRouteSyntax
		}
		if msg[i] == '}' {
			break
		}
		if msg[i] != ',' {
			return nil, errRouteSyntax
		}
		i = skipSpace(msg, i+1)
	}
	if !found {
		return nil, fmt.Errorf("message has no %q field", field)
	}
	return val, nil
}

func unquote(quoted []byte) string {
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return "\x00invalid"
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString scans the string starting at b[i] == '"': it returns its raw
// contents, whether they hold escapes, and the index after the closing quote.
func scanString(b []byte, i int) (raw []byte, esc bool, next int, ok bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			esc = true
			j++
		case '"':
			return b[i+1 : j], esc, j + 1, true
		}
	}
	return nil, false, 0, false
}

// skipValue skips the JSON value starting at b[i], checking only its
// brackets and strings.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		_, _, j, ok := scanString(b, i)
		return j, ok
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				_, _, j, ok := scanString(b, i)
				if !ok {
					return 0, false
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	case ',', '}', ']', ':':
		return 0, false
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j, true
		}
		j++
	}
	return j, true
}
