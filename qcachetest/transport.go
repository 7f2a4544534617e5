package qcachetest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Transport returns an http.RoundTripper that answers every request by
// calling h in the same process, without a socket, so that code using
// qcache.NewQuery can be tested inside a testing/synctest bubble, where an
// httptest.Server cannot run (a goroutine blocked on a socket is not durably
// blocked, so the bubble's clock would never move). Use it as
//
//	qcache.WithHTTPClient(&http.Client{Transport: qcachetest.Transport(h)})
//
// Each request runs h on a goroutine of its own, started by RoundTrip (so
// inside a bubble when RoundTrip is called in one), with a server-side copy
// of the request: RequestURI, Host and RemoteAddr set, the URL reduced to
// path and query, and a context that ends when the client's request context
// ends, when the client closes the response body, or when h returns, as with
// net/http.
//
// RoundTrip returns as soon as h has committed its answer (by writing its
// first byte, calling Flush, or returning; WriteHeader alone does not, as
// with net/http), or with the request context's error if that ends first.
// The body is streamed: what h writes can be read at once, with or without
// a Flush, and a read waiting for more fails with the context's error when
// the request context ends (an attempt's Timeout mid-body, say).
// Response.ContentLength is known when h set a Content-Length header or
// returned without writing a body; a Content-Length longer than what h wrote
// makes the last read fail with io.ErrUnexpectedEOF, as a cut connection
// would. A panic in h is recovered and becomes the error of RoundTrip or of
// the body's last read (panic(http.ErrAbortHandler) is how a handler cuts
// the connection on purpose); the test binary lives.
//
// Transport does not modify the request and always closes its body. It does
// not follow redirects (http.Client does), and does not support trailers,
// Hijack or protocol upgrades. The one goroutine it starts per request ends
// when the handler returns, so a handler that ignores its request's context
// and never returns keeps it.
func Transport(h http.Handler) http.RoundTripper { return transport{h} }

type transport struct{ h http.Handler }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		closeRequestBody(req)
		return nil, errors.New("qcachetest: request without a URL")
	}
	ctx := req.Context()
	if ctx.Err() != nil {
		closeRequestBody(req)
		return nil, ctxError(ctx)
	}
	hctx, cancel := context.WithCancel(ctx)
	ex := &exchange{
		ctx:       ctx,
		cancel:    cancel,
		req:       req,
		header:    http.Header{},
		declared:  -1,
		committed: make(chan struct{}),
		wake:      make(chan struct{}, 1),
	}
	go ex.serve(t.h, ex.serverRequest(hctx))
	select {
	case <-ex.committed:
		return ex.response()
	case <-ctx.Done():
		ex.abandon()
		return nil, ctxError(ctx)
	}
}

// closeRequestBody closes req's body, as a RoundTripper must, even when it
// fails.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// ctxError is the error of an ended context: its Err, wrapping its cause
// too when one was given (context.WithTimeoutCause and the like).
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

var (
	errBodyClosed = errors.New("qcachetest: the client closed the response body")
	errReadClosed = errors.New("http: read on closed response body")
)

// exchange is one request and its answer: the handler writes the answer
// through responseWriter, the client reads it through responseBody.
type exchange struct {
	ctx     context.Context    // the client's request context
	cancel  context.CancelFunc // ends the handler's context
	req     *http.Request      // the client's request, never modified
	header  http.Header        // the handler's, until the answer is committed
	reqOnce sync.Once          // closes req.Body

	mu        sync.Mutex
	status    int         // set by WriteHeader or the commit; 0 before
	sent      http.Header // the header as of WriteHeader or the commit
	answered  bool        // committed: RoundTrip may return the answer
	declared  int64       // the committed Content-Length, or -1
	length    int64       // Response.ContentLength
	written   int64       // body bytes the handler wrote
	buf       []byte      // written and not read yet
	done      bool        // the handler returned
	err       error       // why the body or the answer failed (panic, short body)
	closed    bool        // the client closed the body or gave up
	committed chan struct{}
	wake      chan struct{} // a token after every change the reader may wait for
}

// serverRequest is the request as a net/http server would hand it to its
// handler.
func (ex *exchange) serverRequest(ctx context.Context) *http.Request {
	req := ex.req
	r := req.Clone(ctx)
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	r.RequestURI = req.URL.RequestURI()
	r.URL.Scheme, r.URL.Host, r.URL.User = "", "", nil
	r.URL.Fragment, r.URL.RawFragment = "", ""
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.RemoteAddr = "192.0.2.1:1234"
	r.GetBody = nil
	r.Close = false
	if req.URL.Scheme == "https" {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true, ServerName: host}
	}
	if req.Body == nil || req.Body == http.NoBody {
		r.Body, r.ContentLength = http.NoBody, 0
	} else {
		r.Body = requestBody{ex}
		if r.ContentLength == 0 {
			r.ContentLength = -1
		}
	}
	return r
}

// serve runs the handler and settles the exchange when it returns.
func (ex *exchange) serve(h http.Handler, r *http.Request) {
	defer func() {
		var err error
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				err = fmt.Errorf("qcachetest: the handler cut the connection: %w", http.ErrAbortHandler)
			} else {
				err = fmt.Errorf("qcachetest: the handler panicked: %v\n%s", v, debug.Stack())
			}
		}
		ex.cancel() // as net/http does when ServeHTTP returns
		ex.closeRequestBody()
		ex.finish(err)
	}()
	h.ServeHTTP(responseWriter{ex}, r)
}

func (ex *exchange) closeRequestBody() {
	ex.reqOnce.Do(func() { closeRequestBody(ex.req) })
}

// finish ends the exchange when the handler has returned, having panicked
// with err when err is not nil.
func (ex *exchange) finish(err error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.done = true
	if err == nil && ex.declared >= 0 && ex.written < ex.declared && ex.bodyAllowedLocked() && ex.req.Method != http.MethodHead {
		err = io.ErrUnexpectedEOF
	}
	ex.err = err
	if !ex.answered {
		if err != nil {
			close(ex.committed) // unanswered: RoundTrip returns err
		} else {
			ex.commitLocked(nil)
		}
	}
	ex.signal()
}

// abandon ends the exchange for the client, which gave up before the
// answer was committed.
func (ex *exchange) abandon() {
	ex.mu.Lock()
	ex.closed, ex.buf = true, nil
	ex.mu.Unlock()
	ex.cancel()
	ex.closeRequestBody()
}

// signal wakes the reader, if it waits.
func (ex *exchange) signal() {
	select {
	case ex.wake <- struct{}{}:
	default:
	}
}

// commitLocked fixes the status and the header of the answer, as
// WriteHeader left them (200 and the header as it is now if it was not
// called), and lets RoundTrip return. first is the first chunk of the body,
// for sniffing its Content-Type when the header has none.
func (ex *exchange) commitLocked(first []byte) {
	if ex.answered {
		return
	}
	ex.answered = true
	if ex.status == 0 {
		ex.status, ex.sent = http.StatusOK, ex.header.Clone()
	}
	h := ex.sent
	if _, ok := h["Content-Type"]; !ok && len(first) > 0 && ex.bodyAllowedLocked() {
		h.Set("Content-Type", http.DetectContentType(first))
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	ex.declared = -1
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			ex.declared = n
		} else {
			h.Del("Content-Length")
		}
	}
	ex.length = ex.declared
	switch {
	case !ex.bodyAllowedLocked() && ex.req.Method != http.MethodHead:
		ex.length = 0
	case ex.length < 0 && ex.done:
		ex.length = 0 // the handler returned without writing
	}
	close(ex.committed)
}

// bodyAllowedLocked reports whether the committed answer may have a body.
func (ex *exchange) bodyAllowedLocked() bool {
	switch {
	case ex.status >= 100 && ex.status <= 199, ex.status == http.StatusNoContent, ex.status == http.StatusNotModified:
		return false
	}
	return true
}

// response is the answer RoundTrip returns, once committed.
func (ex *exchange) response() (*http.Response, error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if !ex.answered {
		return nil, ex.err
	}
	text := http.StatusText(ex.status)
	if text == "" {
		text = "status code " + strconv.Itoa(ex.status)
	}
	resp := &http.Response{
		Status:        strconv.Itoa(ex.status) + " " + text,
		StatusCode:    ex.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        ex.sent,
		ContentLength: ex.length,
		Request:       ex.req,
	}
	if ex.length < 0 {
		resp.TransferEncoding = []string{"chunked"}
	}
	if ex.req.Method == http.MethodHead || !ex.bodyAllowedLocked() {
		resp.Body = http.NoBody
		ex.closed = true // nothing will read: the handler's writes are dropped
	} else {
		resp.Body = responseBody{ex}
	}
	return resp, nil
}

// responseWriter is the handler's side of an exchange.
type responseWriter struct{ ex *exchange }

// Header returns the header the answer will carry; changes after the
// answer is committed have no effect, as with net/http.
func (w responseWriter) Header() http.Header { return w.ex.header }

func (w responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http does
	}
	ex := w.ex
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.status != 0 || code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return // superfluous, or informational (not delivered)
	}
	ex.status, ex.sent = code, ex.header.Clone() // sent with the first byte, a Flush, or the return
}

func (w responseWriter) Write(p []byte) (int, error) {
	ex := w.ex
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if !ex.answered && len(p) > 0 {
		ex.commitLocked(p)
	}
	switch {
	case !ex.bodyAllowedLocked():
		return 0, http.ErrBodyNotAllowed
	case ex.req.Method == http.MethodHead:
		return len(p), nil // eaten, as net/http does
	case ex.ctx.Err() != nil:
		return 0, ctxError(ex.ctx)
	case ex.closed:
		return 0, errBodyClosed
	case ex.declared >= 0 && ex.written+int64(len(p)) > ex.declared:
		return 0, http.ErrContentLength
	case len(p) == 0:
		return 0, nil
	}
	ex.buf = append(ex.buf, p...)
	ex.written += int64(len(p))
	ex.signal()
	return len(p), nil
}

// Flush commits the answer; the body needs no flushing, every Write is
// readable at once.
func (w responseWriter) Flush() {
	ex := w.ex
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.commitLocked(nil)
}

// responseBody is the client's side of an exchange.
type responseBody struct{ ex *exchange }

func (b responseBody) Read(p []byte) (int, error) {
	ex := b.ex
	for {
		if ex.ctx.Err() != nil {
			return 0, ctxError(ex.ctx)
		}
		ex.mu.Lock()
		switch {
		case ex.closed:
			ex.mu.Unlock()
			return 0, errReadClosed
		case len(ex.buf) > 0:
			n := copy(p, ex.buf)
			ex.buf = ex.buf[n:]
			if len(ex.buf) == 0 {
				ex.buf = nil
			}
			ex.mu.Unlock()
			return n, nil
		case ex.done:
			err := ex.err
			ex.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		case len(p) == 0:
			ex.mu.Unlock()
			return 0, nil
		}
		ex.mu.Unlock()
		select {
		case <-ex.wake:
		case <-ex.ctx.Done():
		}
	}
}

// Close ends the exchange for the client: the handler's context ends and
// its later writes fail, as when a client closes its connection.
func (b responseBody) Close() error {
	ex := b.ex
	ex.mu.Lock()
	ex.closed, ex.buf = true, nil
	ex.mu.Unlock()
	ex.cancel()
	return nil
}

// requestBody is the handler's view of the client's request body.
type requestBody struct{ ex *exchange }

func (b requestBody) Read(p []byte) (int, error) { return b.ex.req.Body.Read(p) }

func (b requestBody) Close() error {
	b.ex.closeRequestBody()
	return nil
}
