package inspect

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/introspect"
)

// Row is one entry as the inspector lists it (GET /entries, and the events
// of the page).
type Row struct {
	ID             string   `json:"id"`  // the key as /entries/{key} takes it (KeyPath)
	Key            []string `json:"key"` // the key's segments
	KeyText        string   `json:"key_text"`
	Query          string   `json:"query"`
	Status         string   `json:"status"`       // pending, success, error
	FetchStatus    string   `json:"fetch_status"` // idle, fetching, paused, queued
	Stale          bool     `json:"stale"`
	Invalidated    bool     `json:"invalidated"`
	Observers      int      `json:"observers"`
	HasData        bool     `json:"has_data"`
	DataUpdatedAt  int64    `json:"data_updated_at,omitempty"` // Unix milliseconds; 0 without data
	DataSize       int      `json:"data_size"`                 // bytes of the data as JSON; -1 when it does not encode
	Error          string   `json:"error,omitempty"`           // the last fetch error, cut
	ErrorUpdatedAt int64    `json:"error_updated_at,omitempty"`
	FailureCount   int      `json:"failure_count"`
}

// same reports whether r and o show the same thing (ID stands for Key).
func (r *Row) same(o *Row) bool {
	return r.ID == o.ID && r.Query == o.Query && r.Status == o.Status && r.FetchStatus == o.FetchStatus &&
		r.Stale == o.Stale && r.Invalidated == o.Invalidated && r.Observers == o.Observers &&
		r.HasData == o.HasData && r.DataUpdatedAt == o.DataUpdatedAt && r.DataSize == o.DataSize &&
		r.Error == o.Error && r.ErrorUpdatedAt == o.ErrorUpdatedAt && r.FailureCount == o.FailureCount
}

// Page is the answer of GET /entries: the rows after the cursor, in key
// order, and how many entries match the prefix in all.
type Page struct {
	Rows       []Row  `json:"rows"`
	Total      int    `json:"total"`                 // entries matching the prefix
	Offset     int    `json:"offset"`                // matching entries before the first row
	NextCursor string `json:"next_cursor,omitempty"` // empty on the last page
	Now        int64  `json:"now"`                   // the server's clock, Unix milliseconds
}

// listing says which rows a page shows.
type listing struct {
	prefix string
	after  *pos
	limit  int
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

func parseListing(prefix, cursor, limit string) (listing, error) {
	l := listing{prefix: prefix, limit: defaultLimit}
	var err error
	if l.after, err = decodeCursor(cursor); err != nil {
		return l, err
	}
	if limit != "" {
		if _, err := fmt.Sscanf(limit, "%d", &l.limit); err != nil || l.limit < 1 || l.limit > maxLimit {
			return l, fmt.Errorf("limit: want 1 to %d", maxLimit)
		}
	}
	return l, nil
}

// found is an entry the scan kept, with its place.
type found struct {
	e introspect.Entry
	p pos
}

// topK is a max-heap of the limit smallest entries seen.
type topK []found

func (h topK) Len() int           { return len(h) }
func (h topK) Less(i, j int) bool { return cmpPos(h[i].p, h[j].p) > 0 }
func (h topK) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *topK) Push(x any)        { *h = append(*h, x.(found)) }
func (h *topK) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// scan walks every entry once and returns the page's entries in order,
// the count of matching entries, of those before the cursor, and whether
// more follow the page. It keeps limit entries at a time (a bounded heap),
// so a page of 100,000 entries costs one pass and no sort of them all.
func scan(v introspect.Client, l listing) (page []found, total, offset int, more bool) {
	h := make(topK, 0, l.limit+1)
	after := 0
	v.Each(func(e introspect.Entry) bool {
		k := e.InspectKey()
		if !hasTextPrefix(k, l.prefix) {
			return true
		}
		total++
		p := pos{key: k, query: e.InspectQuery()}
		if l.after != nil && cmpPos(p, *l.after) <= 0 {
			offset++
			return true
		}
		after++
		if len(h) < l.limit {
			heap.Push(&h, found{e, p})
		} else if cmpPos(p, h[0].p) < 0 {
			h[0] = found{e, p}
			heap.Fix(&h, 0)
		}
		return true
	})
	page = make([]found, len(h))
	for i := len(h) - 1; i >= 0; i-- {
		page[i] = heap.Pop(&h).(found)
	}
	return page, total, offset, after > len(page)
}

// lookup returns the entry of key (of the named query, when query is not
// empty): the first in the inspector's order.
func lookup(v introspect.Client, key qcache.Key, query string) introspect.Entry {
	var best *found
	v.Each(func(e introspect.Entry) bool {
		k := e.InspectKey()
		if !equalKey(k, key) || (query != "" && e.InspectQuery() != query) {
			return true
		}
		p := pos{key: k, query: e.InspectQuery()}
		if best == nil || cmpPos(p, best.p) < 0 {
			best = &found{e, p}
		}
		return true
	})
	if best == nil {
		return nil
	}
	return best.e
}

func equalKey(a []string, b qcache.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// row makes the Row of e.
func (h *handler) row(e introspect.Entry) Row {
	k := e.InspectKey()
	s := e.InspectRow()
	r := Row{
		ID: KeyPath(k), Key: k, KeyText: keyText(k), Query: e.InspectQuery(),
		Status: s.Status, FetchStatus: s.FetchStatus, Stale: s.Stale, Invalidated: s.Invalidated,
		Observers: s.Observers, HasData: s.HasData, FailureCount: s.FailureCount,
		DataUpdatedAt: millis(s.DataUpdatedAt), ErrorUpdatedAt: millis(s.ErrorUpdatedAt),
	}
	if s.Err != nil {
		r.Error = h.errText(s.Err)
	}
	if s.HasData {
		r.DataSize = h.dataSize(e, s.DataVersion)
	}
	return r
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// errText is err as the page shows it: cut to 512 bytes; with HideData,
// an *HTTPError without its body, any other error by its type alone
// (errors of fetch functions may quote the data).
func (h *handler) errText(err error) string {
	if h.cfg.hideData {
		var he *qcache.HTTPError
		if errors.As(err, &he) {
			return fmt.Sprintf("%s %s: %d %s", he.Method, cut(he.URL, 256), he.StatusCode, httpStatusText(he.StatusCode))
		}
		return fmt.Sprintf("%T (hidden: HideData)", err)
	}
	return cut(err.Error(), 512)
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// dataSize returns the size of e's data as JSON, from a cache by data
// version: only the rows a page shows are ever measured.
func (h *handler) dataSize(e introspect.Entry, ver uint64) int {
	h.sizeMu.Lock()
	if s, ok := h.sizes[e]; ok && s.ver == ver {
		h.sizeMu.Unlock()
		return s.size
	}
	h.sizeMu.Unlock()
	data, ver, ok := e.InspectData()
	if !ok {
		return 0
	}
	size := -1
	if b, err := json.Marshal(data); err == nil {
		size = len(b)
	}
	h.sizeMu.Lock()
	if len(h.sizes) >= 4*maxLimit {
		clear(h.sizes) // entries gone meanwhile are forgotten this way
	}
	h.sizes[e] = sizeOf{ver, size}
	h.sizeMu.Unlock()
	return size
}

type sizeOf struct {
	ver  uint64
	size int
}

// page builds the Page of l.
func (h *handler) page(l listing) (Page, []found) {
	fs, total, offset, more := scan(h.view, l)
	p := Page{Rows: make([]Row, len(fs)), Total: total, Offset: offset, Now: time.Now().UnixMilli()}
	for i, f := range fs {
		p.Rows[i] = h.row(f.e)
	}
	if more && len(fs) > 0 {
		p.NextCursor = encodeCursor(fs[len(fs)-1].p)
	}
	return p, fs
}
