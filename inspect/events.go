package inspect

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/qcache-go/qcache/internal/introspect"
	"github.com/qcache-go/qcache/internal/wait"
)

// How a page follows the cache (GET /events, Server-Sent Events). The page
// says which rows it shows (prefix, cursor, limit, as GET /entries). The
// request's goroutine then sends, batched every UpdateInterval:
//
//   - "page": the whole page (a Page), first and after entries were added
//     or removed (at most once a second: a pass over every key);
//   - "rows": the rows of the page that changed since the last event
//     ({"rows": [...], "now": …}), when only those changed;
//   - "stats": a Stats with "changes_per_sec" and "changes", when they
//     moved (at most once a second).
//
// It never sends rows the page does not show, so a page over 100,000
// entries costs a pass over their keys at most once a second, and the
// rows it shows each interval in which entries changed. While it is open the client keeps its
// entries' histories (WithHistory). Everything ends with the request.

// fullEvery bounds the full passes of a page whose entries change.
const fullEvery = time.Second

type feed struct {
	h              *handler
	l              listing
	w              http.ResponseWriter
	flush          func()
	watch          introspect.Watch
	shown          []found
	rows           []Row
	buf            bytes.Buffer
	lastChanges    uint64
	entries        int    // the client's entry count at the last full pass
	removalsAtFull uint64 // and its count of removals
	full           time.Time
	stats          []byte    // the last stats sent, without its time
	statsAt        time.Time // when
	rateAt         time.Time // the changes counted for changes_per_sec since then
	rateN          uint64
	rate           float64
}

func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l, err := parseListing(q.Get("prefix"), q.Get("cursor"), q.Get("limit"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	rc := http.NewResponseController(w)
	watch, closeWatch := h.view.Open()
	defer closeWatch()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	f := &feed{h: h, l: l, w: w, watch: watch, flush: func() { _ = rc.Flush() }}
	f.rateAt, f.rateN = time.Now(), watch.Changes() // another page may have opened the watch before
	if !f.send("retry", nil) || !f.fullPass() || !f.sendStats(true) {
		return
	}
	ctx := r.Context()
	t := wait.NewTicker(h.cfg.interval)
	defer t.Stop()
	lastComment := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok := f.tick()
		if ok && time.Since(lastComment) >= 15*time.Second { // keeps proxies from closing a quiet stream
			lastComment = time.Now()
			ok = f.comment()
		}
		if !ok {
			return
		}
	}
}

// tick sends what changed since the last one; false when the page has
// gone.
func (f *feed) tick() bool {
	ch := f.watch.Changes()
	moved := ch != f.lastChanges
	f.lastChanges = ch
	ok := true
	switch {
	case f.structureChanged() && time.Since(f.full) >= fullEvery:
		ok = f.fullPass()
	case moved:
		ok = f.refresh()
	}
	return ok && f.sendStats(false)
}

// structureChanged reports whether entries came or went since the last
// full pass (keys never change, so nothing else moves rows).
func (f *feed) structureChanged() bool {
	return f.watch.Removals() != f.removalsAtFull || f.h.c.Stats().Entries != f.entries
}

func (f *feed) fullPass() bool {
	f.entries = f.h.c.Stats().Entries
	f.removalsAtFull = f.watch.Removals()
	p, shown := f.h.page(f.l)
	f.full = time.Now()
	f.shown, f.rows = shown, p.Rows
	return f.send("page", p)
}

// refresh sends the rows of the page that changed.
func (f *feed) refresh() bool {
	var changed []Row
	for i, s := range f.shown {
		r := f.h.row(s.e)
		if !r.same(&f.rows[i]) {
			f.rows[i] = r
			changed = append(changed, r)
		}
	}
	if len(changed) == 0 {
		return true
	}
	return f.send("rows", struct {
		Rows []Row `json:"rows"`
		Now  int64 `json:"now"`
	}{changed, time.Now().UnixMilli()})
}

// sendStats sends the stats when they changed, at most once a second (or
// now, first).
func (f *feed) sendStats(always bool) bool {
	now := time.Now()
	if !always && now.Sub(f.statsAt) < time.Second {
		return true
	}
	if d := now.Sub(f.rateAt); d >= time.Second {
		n := f.watch.Changes()
		f.rate = float64(n-f.rateN) / d.Seconds()
		f.rateAt, f.rateN = now, n
	}
	s := feedStats{Stats: f.h.stats(), ChangesPerSec: f.rate, Changes: f.watch.Changes()}
	s.Now = 0
	b, _ := json.Marshal(s)
	if !always && bytes.Equal(b, f.stats) {
		return true
	}
	f.stats, f.statsAt = b, now
	s.Now = now.UnixMilli()
	return f.send("stats", s)
}

// feedStats are the stats an open page gets.
type feedStats struct {
	Stats
	ChangesPerSec float64 `json:"changes_per_sec"` // entries' state changes, over the last second or so
	Changes       uint64  `json:"changes"`         // since the first page opened
}

func (f *feed) send(event string, v any) bool {
	f.buf.Reset()
	if event == "retry" {
		f.buf.WriteString("retry: 2000\n\n")
	} else {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		fmt.Fprintf(&f.buf, "event: %s\ndata: %s\n\n", event, b)
	}
	if _, err := f.w.Write(f.buf.Bytes()); err != nil {
		return false
	}
	f.flush()
	return true
}

func (f *feed) comment() bool {
	if _, err := f.w.Write([]byte(": keep-alive\n\n")); err != nil {
		return false
	}
	f.flush()
	return true
}
