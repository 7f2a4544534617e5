// Package qcachetest helps test code that uses qcache: a fake upstream,
// a transport that serves it without sockets, and a wait for fetches.
//
// Time-dependent behaviour (polling, staleness, retries, timeouts) is best
// tested in virtual time, inside a testing/synctest bubble, where a minute
// of polling takes microseconds and fetch counts are exact. An
// httptest.Server cannot run there (a goroutine blocked on a socket does not
// let the bubble's clock move), so the kit serves HTTP in-process:
//
//	func TestPolling(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			var api qcachetest.Upstream
//			api.Script("GET /users/{id}",
//				qcachetest.Reply{Status: 503, Header: http.Header{"Retry-After": {"2"}}},
//				qcachetest.Reply{Body: User{ID: "42", Name: "Ada"}, Latency: 500 * time.Millisecond},
//			)
//			client := qcache.NewClient(qcache.WithBaseURL("http://api.test"),
//				qcache.WithHTTPClient(api.Client()))
//			defer client.Close()
//			users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"})
//
//			obs := users.Use(t.Context(), "42", qcache.RefetchInterval(10*time.Second))
//			defer obs.Close()
//			time.Sleep(time.Minute) // virtual: returns at once
//			synctest.Wait()         // and nothing is left to happen now
//
//			// A 503 at 0 s, retried 2 s later (Retry-After) and answered at
//			// 2.5 s; then a fetch 10 s after each one settled: 12.5, 23,
//			// 33.5, 44 and 54.5 s.
//			if n := api.Count("/users/42"); n != 7 {
//				t.Errorf("%d fetches in one virtual minute, want 7", n)
//			}
//		})
//	}
//
// # The pieces
//
// Transport turns any http.Handler into an http.RoundTripper that calls it
// in-process, streaming the body and honouring the request's context, so
// that timeouts, cancellation and cut bodies behave as over a network.
//
// Upstream is an http.Handler that answers from scripts (per
// http.ServeMux pattern: a sequence of replies with status, headers, body,
// latency, or a cut connection; the last one repeats) and records every
// request (method, path, query, headers, body, arrival time) for exact
// assertions. Upstream.Client wires it to Transport; it also works behind
// httptest.NewServer for tests on the real clock.
//
// WaitIdle and WaitIdleContext wait, on the real clock, until a client has
// no fetch in flight. Inside a bubble, use synctest.Wait instead.
//
// The kit waits only through time.Sleep and time.AfterFunc, never on a
// timer channel: under -race, receives from expired timer channels inside
// bubbles can crash the test binary (golang/go#78156; see qcache's docs/testing.md).
package qcachetest
