package qcache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrClosed is returned by every call made after Client.Close, and by calls
// whose wait Close cut short.
var ErrClosed = errors.New("qcache: client closed")

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

// bodyTooLargeError is the cause of a fetch whose body exceeds the client's limit.
type bodyTooLargeError struct {
	URL   string
	Limit int64
}

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("qcache: %s: response body exceeds %d bytes", e.URL, e.Limit)
}

// panicError is what a panicking fetch function becomes.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("fetch function panicked: %v", e.value) }
