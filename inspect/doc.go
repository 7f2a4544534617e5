// Package inspect is a live inspector of a qcache.Client, the devtools of a
// Go service: an http.Handler that shows, in a browser, what the cache
// holds and does, and a JSON API for scripts. Mount it in the service's own
// mux, behind its own authentication, as one mounts net/http/pprof:
//
//	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", inspect.Handler(client)))
//
// # The page
//
// GET / is a page (no framework, nothing loaded from elsewhere: it works
// offline) with a table of entries in key order, a hundred at a time, with
// a filter by key prefix: query, key, status, fetch status, fresh or
// stale, invalidated, observers, data age, data size, failures and the last
// error. Above it are the client's totals (Stats, and the entries' changes
// per second); below it each query's QueryStats, the WebSocket streams and
// the bus with their counters. The page updates itself live: the server
// pushes the changes of the rows it shows (Server-Sent Events), batched
// every 200 ms (UpdateInterval), and never sends rows it does not show, so
// it stays usable with 100,000 entries.
//
// Clicking a row opens the entry: its data as pretty-printed JSON (cut at
// DataLimit, with a note) and its last state changes with their times
// (fetch started, fetched, fetch failed, invalidated, data set, …). The
// client keeps those histories only while an inspector page is open, or
// always with qcache.WithHistory: the cache pays nothing when nobody looks.
//
// With AllowActions the page can invalidate, refetch and remove an entry,
// or every entry under the filter's prefix. Actions are off by default;
// they are POST requests that carry a token bound to a page the handler
// served (in the TokenHeader header), they are refused for cross-origin
// requests (Origin and Sec-Fetch-Site, net/http's CrossOriginProtection),
// and each is logged at Info on the client's logger (qcache.WithLogger).
//
// The inspector never shows header values, credentials, nor anything of
// the client's request editors. HideData keeps data, and the text of
// errors, out of it, for services that cache personal data.
//
// # The JSON API
//
// Every answer is JSON; errors are {"error": "…"} with a 4xx status.
//
//	GET /entries?prefix=&limit=&cursor=
//	    A Page: up to limit rows (default 100, at most 1000) in key order
//	    (segment by segment, then by query name), after cursor (the
//	    next_cursor of the page before; opaque), of the entries whose key,
//	    as Key.String prints it ("users/42?page=2"), starts with prefix as
//	    text: "users/4" selects users/4 and users/42. total counts every
//	    matching entry, offset those before the page. The server walks
//	    the keys once and keeps only the page's rows: with 100,000 entries,
//	    the first page of 100 costs a few milliseconds.
//	GET /entries/{key}[?query=name]
//	    A Detail: the row, the data as pretty-printed JSON, the history.
//	    {key} is the key's segments, each path-escaped, joined by "/"
//	    (KeyPath says exactly how; a row's id is that form). When queries
//	    share a key, query chooses among them; without it, the first by
//	    name. 404 when there is no such entry.
//	GET /stats
//	    A Stats: the client's Stats, every query's QueryStats, the
//	    WebSocket streams and the bus counters.
//	GET /events?prefix=&limit=&cursor=
//	    The page's live feed (text/event-stream): "page", "rows" and
//	    "stats" events; while it is open the client keeps histories.
//	POST /actions/invalidate, /actions/refetch, /actions/remove
//	    With AllowActions only, a token in the TokenHeader header, and a
//	    body {"key": "<KeyPath>"} or {"prefix": "<text prefix>"}: the
//	    action on that entry, or on every entry under the prefix
//	    (Client.Invalidate, Refetch or Remove). An ActionResult says on
//	    how many. GET on an action is 405. A page's token is in its
//	    <meta name="qcache-token">; scripts read it there.
package inspect
