package qcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/qcache-go/qcache/internal/backoff"
	"github.com/qcache-go/qcache/internal/endpoint"
)

const maxErrorBody = 4 << 10

type validator interface{ Validate() error }

// httpEndpoint is an Endpoint compiled for P's type and joined to the
// client's base URL: what queries and mutations share.
type httpEndpoint struct {
	method  string
	base    string // "" for an absolute template
	header  http.Header
	binding *endpoint.Binding
}

// compileEndpoint compiles ep for parameter type t, with method defaultMethod
// when ep has none. It panics, naming the variable and the type, when the
// template is malformed or t cannot bind it, and when a relative URL is given
// to a client without WithBaseURL.
func compileEndpoint(c *Client, ep Endpoint, t reflect.Type, defaultMethod string) httpEndpoint {
	b, err := endpoint.Compile(ep.URL, t, endpoint.WrapValueErrors(func(err error) error { return &RequestError{Err: err} }))
	if err != nil {
		panic(err.Error())
	}
	he := httpEndpoint{method: strings.ToUpper(ep.Method), header: ep.Header.Clone(), binding: b}
	if he.method == "" {
		he.method = defaultMethod
	}
	if !b.Absolute() {
		if c.cfg.baseURL == nil {
			panic(fmt.Sprintf("qcache: endpoint %q is relative and the client has no WithBaseURL", ep.URL))
		}
		he.base = strings.TrimSuffix(c.cfg.baseURL.String(), "/")
	}
	return he
}

// url returns the request URL of a bound path and query string.
func (he httpEndpoint) url(path, query string) string {
	u := he.base + path
	if query != "" {
		u += "?" + query
	}
	return u
}

// ---------- redirects ----------

// guardRedirects returns a CheckRedirect for an http.Client that applies
// stripCredentialsOnRedirect(r, via, keep...) to every redirect, then
// next (the client's own CheckRedirect) or, when next is nil, net/http's
// default: stop after 10 redirects.
func guardRedirects(next func(r *http.Request, via []*http.Request) error, keep ...string) func(r *http.Request, via []*http.Request) error {
	return func(r *http.Request, via []*http.Request) error {
		stripCredentialsOnRedirect(r, via, keep...)
		if next != nil {
			return next(r, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// stripCredentialsOnRedirect applies the redirect rule of every request
// qcache makes (DESIGN.md: a redirect that leaves the origin drops every
// credential). r is the next request of a redirect chain and via the
// requests made so far, oldest first, as http.Client.CheckRedirect gets
// them. When r, or any request of via after the first, is not sameOrigin
// with via[0], it removes from r every header but those named in keep
// (Authorization, cookies, Referer, which net/http fills with the previous
// URL, query string included, and every header set by WithHeader,
// Endpoint.Header or a request editor), and r's user info. Once a chain has
// left the origin it stays stripped, even when it comes back: the server
// that redirected it back chose where it lands. It reports whether it
// stripped. net/http's own rule drops only Authorization and cookies, and
// keeps them for another port of the same host.
func stripCredentialsOnRedirect(r *http.Request, via []*http.Request, keep ...string) bool {
	if len(via) == 0 {
		return false
	}
	origin := via[0].URL
	left := !sameOrigin(origin, r.URL)
	for _, v := range via[1:] {
		left = left || !sameOrigin(origin, v.URL)
	}
	if !left {
		return false
	}
	for k := range r.Header {
		if !slices.ContainsFunc(keep, func(name string) bool { return http.CanonicalHeaderKey(name) == k }) {
			delete(r.Header, k)
		}
	}
	r.URL.User = nil
	return true
}

// sameOrigin reports whether a and b have the same origin: the same scheme
// and host (case-insensitively) and the same port, the scheme's default
// (80 for http and ws, 443 for https and wss) standing for a missing one.
// ws counts as http and wss as https, since a handshake to ws:// is an
// HTTP request to http://. Unlike net/http's rule for Authorization,
// another port is another origin.
func sameOrigin(a, b *url.URL) bool {
	return httpScheme(a.Scheme) == httpScheme(b.Scheme) &&
		strings.EqualFold(a.Hostname(), b.Hostname()) &&
		originPort(a) == originPort(b)
}

// httpScheme returns the lower-cased scheme, ws as http and wss as https.
func httpScheme(s string) string {
	switch s = strings.ToLower(s); s {
	case "ws":
		return "http"
	case "wss":
		return "https"
	}
	return s
}

// originPort returns u's port, or its scheme's default.
func originPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch httpScheme(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// safeURL returns u without user info, for errors and logs.
func safeURL(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	v := *u
	v.User = nil
	return v.String()
}

// doJSON sends a request with an optional JSON body and decodes a 2xx answer
// into a T, which it validates. Non-2xx answers become *HTTPError, bodies
// that do not decode or validate *DecodeError; bodies over the client's limit
// are refused without being read whole.
//
// sc, a query fetch's scope (nil for mutations), makes the request
// conditional: with the validators of the data the entry holds, a 304 keeps
// that data (sc.notModified), and a body byte-identical to the one that
// brought it returns the same T without decoding (sc.same). sc also takes
// the answer's status, size and validators.
func doJSON[T any](ctx context.Context, c *Client, method, rawURL string, header http.Header, body []byte, hasBody bool, sc *fetchScope) (T, error) {
	var zero T
	if sc != nil {
		sc.status, sc.bytes, sc.meta, sc.notModified, sc.same = 0, 0, nil, false, false
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return zero, &RequestError{Err: fmt.Errorf("qcache: bad request URL: %w", err)}
	}
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return zero, &RequestError{Err: fmt.Errorf("qcache: %s %s: %w", method, shortURL(safeURL(u)), err)}
	}
	for k, vs := range c.cfg.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	for k, vs := range header {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Accept", "application/json")
	if sc != nil && sc.prev != nil {
		if v := sc.prev.etag; v != "" {
			req.Header.Set("If-None-Match", v)
		}
		if v := sc.prev.lastModified; v != "" {
			req.Header.Set("If-Modified-Since", v)
		}
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, edit := range c.cfg.editors {
		if err := edit(req); err != nil {
			return zero, &RequestError{Err: fmt.Errorf("qcache: request editor: %w", err)}
		}
	}
	where := safeURL(u)
	hc := *c.cfg.httpClient
	hc.CheckRedirect = guardRedirects(hc.CheckRedirect, "Accept", "Content-Type")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return zero, fmt.Errorf("qcache: %s %s: %w", method, shortURL(where), err)
	}
	defer func() {
		io.CopyN(io.Discard, resp.Body, maxErrorBody)
		resp.Body.Close()
	}()
	if sc != nil { // for the entry and the FetchEnd hook
		sc.status = int32(resp.StatusCode) // three digits, as net/http reads them
		cr := &countingReader{r: resp.Body}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{cr, resp.Body}
		defer func() { sc.bytes = cr.n }()
		if resp.StatusCode == http.StatusNotModified && sc.prev != nil {
			sc.notModified = true
			return zero, nil
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		ra, _ := backoff.RetryAfter(resp.Header, time.Now())
		return zero, &HTTPError{Method: method, URL: where, StatusCode: resp.StatusCode,
			Status: resp.Status, Header: resp.Header, Body: b, RetryAfter: ra}
	}
	limit := c.cfg.maxResponseBytes
	if resp.ContentLength > limit {
		return zero, &bodyTooLargeError{URL: where, Limit: limit}
	}
	// A failure to read the body (the connection cut or reset, the
	// attempt's Timeout) is a transport error, retried; only bytes that
	// arrived and do not parse are a *DecodeError.
	lr := &countingReader{r: resp.Body}
	src := io.LimitReader(lr, limit+1)
	if sc != nil {
		// A query's body is read whole first: its hash says whether it
		// is the body that brought the data the entry holds.
		b, _ := io.ReadAll(src)
		if lr.n > limit {
			return zero, &bodyTooLargeError{URL: where, Limit: limit}
		}
		if lr.err != nil {
			return zero, bodyReadError(ctx, method, where, lr.err)
		}
		sc.meta = &httpMeta{etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified"), hash: hash64(b)}
		if sc.prev != nil && sc.prev.hash == sc.meta.hash {
			if v, ok := sc.prevData.(T); ok {
				sc.same = true
				return v, nil
			}
		}
		src = bytes.NewReader(b)
	}
	var v T
	dec := json.NewDecoder(src)
	err = dec.Decode(&v)
	if lr.n > limit {
		return zero, &bodyTooLargeError{URL: where, Limit: limit}
	}
	if lr.err != nil {
		return zero, bodyReadError(ctx, method, where, lr.err)
	}
	if errors.Is(err, io.EOF) && lr.n == 0 && (resp.StatusCode == http.StatusNoContent || resp.ContentLength == 0) {
		return zero, nil // no body: the zero T
	}
	if err != nil {
		return zero, &DecodeError{URL: where, Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		if lr.n > limit {
			return zero, &bodyTooLargeError{URL: where, Limit: limit}
		}
		if lr.err != nil {
			return zero, bodyReadError(ctx, method, where, lr.err)
		}
		return zero, &DecodeError{URL: where, Err: errors.New("data after the JSON value")}
	}
	if err := validate(&v); err != nil {
		return zero, &DecodeError{URL: where, Err: fmt.Errorf("validate: %w", err)}
	}
	return v, nil
}

// bodySeed seeds the body hashes. They are compared only within this
// process, so a seed drawn at random keeps an upstream from crafting a body
// whose hash matches the last one's (a fixed hash such as FNV would let it
// have the old data served again).
var bodySeed = maphash.MakeSeed()

// hash64 is the hash of a body, for telling a byte-identical one.
func hash64(b []byte) uint64 { return maphash.Bytes(bodySeed, b) }

// validate calls Validate on v or *v when the type has it.
func validate[T any](v *T) (err error) {
	// Validate is user code, run on a fetch's goroutine or the bus's: its
	// panic fails the value, as a panicking fetch function fails the fetch
	// (a value from another replica must not end this process).
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Validate panicked: %v", r)
		}
	}()
	if val, ok := any(*v).(validator); ok {
		if isNilPointer(val) {
			return nil
		}
		return val.Validate()
	}
	if val, ok := any(v).(validator); ok {
		return val.Validate()
	}
	return nil
}

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// bodyReadError is the error of a body whose reading failed with err: a
// transport error, which wraps err and, when the attempt's context ended
// first (its Timeout), that context's cause.
func bodyReadError(ctx context.Context, method, where string, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w: %w", cause, err)
	}
	return fmt.Errorf("qcache: %s %s: reading the body: %w", method, shortURL(where), err)
}

// countingReader counts the bytes read through it and keeps the first
// error other than io.EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}
