package qcachetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/qcache-go/qcache/internal/wait"
)

// Upstream is a fake HTTP API that answers from scripts and records every
// request it gets, for exact assertions such as "exactly 12 fetches in one
// virtual minute". It is an http.Handler: plug it into Transport (inside
// synctest bubbles; Client does it for you) or into httptest.NewServer.
//
// Script gives a pattern a sequence of replies: the first request matched
// to the pattern gets the first reply, the second the second, and so on;
// when the script runs out, its last reply is repeated for every later
// request. Patterns are those of http.ServeMux ("/users/42",
// "GET /users/{id}", "/files/"), and a request goes to the most specific
// pattern that matches, as there. A request that no pattern matches is
// answered 404 (and recorded).
//
// The zero value is an upstream with no scripts, ready to use. An Upstream
// must not be copied after first use. Its methods may be called from any
// goroutine, also while it serves.
type Upstream struct {
	mu      sync.Mutex
	mux     *http.ServeMux
	scripts map[string]*script
	reqs    []Request
}

// Reply is one scripted answer of an Upstream.
type Reply struct {
	// Status is the status code; 0 means 200.
	Status int
	// Header is added to the answer ({"Retry-After": {"2"}}, say). The
	// Content-Type is application/json for a JSON body unless Header sets
	// it, and the Content-Length is the body's length unless Header sets
	// it: a longer one makes the client's last read of the body fail, as
	// a connection cut mid-body would.
	Header http.Header
	// Body is the body: a []byte or json.RawMessage is sent as it is, nil
	// sends none, and any other value, strings included, is encoded as JSON.
	Body any
	// Latency is waited before answering, with time.Sleep's clock (so in
	// virtual time inside a synctest bubble); when the request's context
	// ends first, no answer is sent.
	Latency time.Duration
	// Reset cuts the connection, after Latency, instead of answering: the
	// client gets a transport error (from Transport, one wrapping
	// http.ErrAbortHandler; from a real server, the connection closing).
	Reset bool
}

// Request is a request an Upstream received.
type Request struct {
	Method  string
	Path    string // URL.Path
	Query   url.Values
	Header  http.Header
	Body    []byte
	Pattern string    // the scripted pattern that answered it; "" when none did
	Time    time.Time // when it arrived, by time.Now (virtual inside a bubble)
}

type script struct {
	replies []reply
	f       func(n int, r *http.Request) Reply
	n       int // requests answered by this script
}

// reply is a Reply with its body encoded.
type reply struct {
	Reply
	body  []byte
	ctype string
}

func encode(r Reply) (reply, error) {
	out := reply{Reply: r}
	switch b := r.Body.(type) {
	case nil:
	case []byte:
		out.body = b
	case json.RawMessage:
		out.body = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return reply{}, fmt.Errorf("qcachetest: encoding a reply body: %w", err)
		}
		out.body, out.ctype = j, "application/json"
	}
	return out, nil
}

// Script answers the requests that pattern matches with replies, in order,
// repeating the last one once they run out. Scripting a pattern again
// replaces its script, and the new one starts from its first reply. Script
// panics if replies is empty, if a body cannot be encoded as JSON, or if
// http.ServeMux refuses the pattern (it is malformed, or conflicts with
// another).
func (u *Upstream) Script(pattern string, replies ...Reply) {
	if len(replies) == 0 {
		panic("qcachetest: Script " + strconv.Quote(pattern) + " without replies")
	}
	s := &script{}
	for _, r := range replies {
		e, err := encode(r)
		if err != nil {
			panic(fmt.Sprintf("qcachetest: Script %q: %v", pattern, err))
		}
		s.replies = append(s.replies, e)
	}
	u.set(pattern, s)
}

// ScriptFunc answers the requests that pattern matches with what f returns;
// n counts them, from 1. f runs on the handler's goroutine, outside the
// Upstream's lock, and may read r (its body too, and its PathValue). A body
// that cannot be encoded as JSON makes the handler panic (a transport error
// for the client). Scripting a pattern again replaces its script; ScriptFunc
// panics where Script does.
func (u *Upstream) ScriptFunc(pattern string, f func(n int, r *http.Request) Reply) {
	if f == nil {
		panic("qcachetest: ScriptFunc " + strconv.Quote(pattern) + " with a nil func")
	}
	u.set(pattern, &script{f: f})
}

func (u *Upstream) set(pattern string, s *script) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.mux == nil {
		u.mux = http.NewServeMux()
		u.scripts = map[string]*script{}
	}
	if _, ok := u.scripts[pattern]; !ok {
		u.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { u.answer(pattern, w, r) })
	}
	u.scripts[pattern] = s
}

// ServeHTTP records r and answers it from the script of the pattern that
// matches it, or 404 when none does.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.Query(),
		Header: r.Header.Clone(),
		Body:   body,
		Time:   time.Now(),
	}
	u.mu.Lock()
	mux := u.mux
	if mux != nil {
		if _, pattern := mux.Handler(r); u.scripts[pattern] != nil {
			rec.Pattern = pattern
		}
	}
	u.reqs = append(u.reqs, rec)
	u.mu.Unlock()
	if mux == nil {
		http.NotFound(w, r)
		return
	}
	mux.ServeHTTP(w, r)
}

// answer answers r from pattern's script.
func (u *Upstream) answer(pattern string, w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	s := u.scripts[pattern]
	s.n++
	n := s.n
	var rep reply
	if s.f == nil {
		rep = s.replies[min(n, len(s.replies))-1]
	}
	u.mu.Unlock()
	if s.f != nil {
		var err error
		if rep, err = encode(s.f(n, r)); err != nil {
			panic(fmt.Sprintf("qcachetest: ScriptFunc %q: %v", pattern, err))
		}
	}
	if rep.Latency > 0 && !wait.Sleep(r.Context(), rep.Latency) {
		return // the client gave up
	}
	if rep.Reset {
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	for k, vs := range rep.Header {
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if rep.ctype != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", rep.ctype)
	}
	if h.Get("Content-Length") == "" {
		h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	}
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	w.Write(rep.body)
}

// Client returns an *http.Client that sends every request to u through
// Transport, for qcache.WithHTTPClient.
func (u *Upstream) Client() *http.Client {
	return &http.Client{Transport: Transport(u)}
}

// Requests returns the requests received so far, oldest first, whose Path
// is which or that the pattern which answered; every request when which is
// "".
func (u *Upstream) Requests(which string) []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []Request
	for _, r := range u.reqs {
		if which == "" || r.Path == which || r.Pattern == which {
			out = append(out, r)
		}
	}
	return out
}

// Count returns the number of requests Requests(which) would return.
func (u *Upstream) Count(which string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, r := range u.reqs {
		if which == "" || r.Path == which || r.Pattern == which {
			n++
		}
	}
	return n
}
