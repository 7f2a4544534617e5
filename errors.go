package qcache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

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

// requestError is the name cache.go and query.go still use.
type requestError = RequestError

// HTTPError is returned, usually wrapped, when the server answers with a status
// outside 2xx. The cached data of the entry is kept.
type HTTPError struct {
	Method     string
	URL        string // without user info; the query string is kept
	StatusCode int
	Status     string
	Header     http.Header
	Body       []byte // at most the first 4 KiB of the body
}

// Error reports the method, URL and status, and the start of the body.
func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "qcache: %s %s: %s", e.Method, e.URL, e.Status)
	if len(e.Body) > 0 {
		body := e.Body
		if len(body) > 200 {
			body = body[:200]
		}
		fmt.Fprintf(&b, ": %q", body)
	}
	return b.String()
}

// DecodeError is returned, usually wrapped, when a response body cannot be
// decoded into the query's type, or when the decoded value's Validate method
// fails. The cached data of the entry is kept.
type DecodeError struct {
	URL string
	Err error
}

// Error reports the URL and the cause.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("qcache: decode %s: %v", e.URL, e.Err)
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
	return fmt.Sprintf("qcache: %s: response body exceeds %d bytes", e.URL, e.Limit)
}

// Unwrap returns ErrResponseTooLarge.
func (e *bodyTooLargeError) Unwrap() error { return ErrResponseTooLarge }

// panicError is what a panicking fetch function becomes.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("fetch function panicked: %v", e.value) }
