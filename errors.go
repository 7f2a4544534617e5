package qcache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qcache-go/qcache/internal/endpoint"
)

// ErrClosed is returned by every call made after Client.Close, and by calls
// whose wait Close cut short.
var ErrClosed = errors.New("qcache: client closed")

// ErrInvalidPathValue is wrapped by the *RequestError of a call whose
// parameters bind a path variable to a value that cannot be sent: an empty
// one, or one that is "." or ".." in any escaping ("%2E", ".%2e",
// "%252E%252E"). A server that parses URLs the WHATWG way, as Node's
// new URL does, takes "/users/%2E%2E/profile" for "/profile", so such a value
// would reach another resource than the one the endpoint names.
var ErrInvalidPathValue = endpoint.ErrInvalidPathValue

// ErrNaNParams is returned, wrapped, for a parameter value that is not
// equal to itself (a float field holding NaN): it cannot be a cache key, and
// no fetch is made for it.
var ErrNaNParams = errors.New("qcache: parameter value is not equal to itself (NaN)")

// RequestError is returned, usually wrapped, when a request cannot be made
// and so is never sent: a path value that is empty or a dot segment
// (wrapping ErrInvalidPathValue), a request editor's error (wrapped as it
// is), or a URL that does not parse. It is never retried. A mutation's Do
// refuses a path value before it runs any hook. Match it with errors.As.
type RequestError struct {
	Err error // the cause
}

// Error returns the cause's message.
func (e *RequestError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *RequestError) Unwrap() error { return e.Err }

// HTTPError is returned, usually wrapped, when the server answers with a status
// outside 2xx. The cached data of the entry is kept.
type HTTPError struct {
	Method     string
	URL        string // without user info; the query string is kept
	StatusCode int
	Status     string
	Header     http.Header
	Body       []byte // at most the first 4 KiB of the body
	// RetryAfter is the answer's Retry-After (in seconds or as an HTTP
	// date), as a delay from when the answer came; 0 when it had none or
	// an unreadable one.
	RetryAfter time.Duration
}

// maxErrorURL bounds the URL that an error prints.
const maxErrorURL = 512

// Error reports the method, the URL (cut at 512 bytes) and the status,
// then the start of the body, except for 401, 403 and 407 answers, whose
// bodies often echo the credential that was refused ("invalid API key:
// …"): those stay in Body, out of messages and logs. Their status is
// printed with its standard text, not the server's reason phrase.
func (e *HTTPError) Error() string {
	var b strings.Builder
	secret := credentialStatus(e.StatusCode)
	status := e.Status
	if secret || status == "" {
		status = fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	fmt.Fprintf(&b, "qcache: %s %s: %s", e.Method, shortURL(e.URL), cut(status, 128))
	if len(e.Body) > 0 && !secret {
		fmt.Fprintf(&b, ": %q", cut(string(e.Body), 200))
	}
	return b.String()
}

// credentialStatus reports whether an answer with status code refuses a
// credential (and so its body may repeat it).
func credentialStatus(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusProxyAuthRequired
}

// shortURL returns u cut at maxErrorURL bytes, for messages.
func shortURL(u string) string { return cut(u, maxErrorURL) }

// cut returns s cut at n bytes, on a rune boundary, marked with "…" when cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// DecodeError is returned, usually wrapped, when a response body that
// arrived whole cannot be decoded into the query's type, or when the decoded
// value's Validate method fails. It is not retried. A body whose reading
// failed (the connection cut or reset, the attempt's Timeout) is no
// DecodeError but a transport error, wrapping the cause, and retried. The
// cached data of the entry is kept.
type DecodeError struct {
	URL string
	Err error
}

// Error reports the URL (cut at 512 bytes) and the cause.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("qcache: decode %s: %v", shortURL(e.URL), e.Err)
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// ErrResponseTooLarge is wrapped by the error of a fetch or a mutation
// whose response body exceeds WithMaxResponseBytes (by its Content-Length or
// as it is read): errors.Is(err, ErrResponseTooLarge) tells it apart. The
// body is not read past the limit, and the fetch is not retried.
var ErrResponseTooLarge = errors.New("qcache: response body too large")

// bodyTooLargeError is the cause of a fetch whose body exceeds the client's limit.
type bodyTooLargeError struct {
	URL   string
	Limit int64
}

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("qcache: %s: response body exceeds %d bytes", shortURL(e.URL), e.Limit)
}

// Unwrap returns ErrResponseTooLarge.
func (e *bodyTooLargeError) Unwrap() error { return ErrResponseTooLarge }

// panicError is what a panicking fetch function becomes.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("fetch function panicked: %v", e.value) }
