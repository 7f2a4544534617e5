package qcache

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qcache-go/qcache/internal/introspect"
)

// This file is the client's side of package inspect, the debug page: the
// read-only view of entries it draws (through internal/introspect, so that
// the public API does not grow for it), the history of entries' changes,
// and the list of WebSocket streams. None of it costs anything while no
// inspector page is open and WithHistory is not set: the one hook on a
// state change is an atomic load that finds nil, and the hit path has none.

// WithHistory keeps the last n state changes of every entry (fetch
// started, fetched, fetch failed, invalidated, data set, …), with their
// times, for package inspect's detail view. Without it a history is kept
// only while an inspector page is open (the last 20 changes), so that the
// cache pays nothing when nobody looks. With it, each state change costs a
// record of about 48 bytes, and each entry that changed keeps up to n of
// them. It panics if n is negative; 0 turns it off.
func WithHistory(n int) ClientOption {
	if n < 0 {
		panic("qcache: WithHistory: negative length")
	}
	return func(c *clientConfig) { c.history = n }
}

// historyWhileOpen is the history length kept while an inspector page is
// open and WithHistory is not set.
const historyWhileOpen = 20

// inspectState is what a client keeps for inspectors.
type inspectState struct {
	// watch is nil while no inspector is open and WithHistory is not set:
	// then entries record nothing.
	watch atomic.Pointer[watchState]

	mu      sync.Mutex
	pages   int                     // inspector pages open
	streams map[*WSStream]*WSStream // streams that have not ended
}

// watchState counts entries' changes and keeps their histories.
type watchState struct {
	keep              int      // history length per entry
	hist              sync.Map // anyEntry → *history
	changes, removals atomic.Uint64
}

func (w *watchState) Changes() uint64  { return w.changes.Load() }
func (w *watchState) Removals() uint64 { return w.removals.Load() }

// history is a ring of an entry's last changes, guarded by the entry's
// lock.
type history struct {
	recs []record
	next int // where the next record goes once recs is full
}

type record struct {
	at       time.Time
	err      error
	failures int32
	kind     changeKind
	status   uint8
	fetch    uint8
}

type changeKind uint8

const (
	changeOther changeKind = iota
	changeFetchStarted
	changeFetched
	changeFetchFailed
	changeFetchEnded // cancelled, or superseded by SetData or Remove
	changeFetchStatus
	changeRetry
	changeInvalidated
	changeDataSet
	changeReset
)

var changeNames = [...]string{
	changeOther:        "changed",
	changeFetchStarted: "fetch started",
	changeFetched:      "fetched",
	changeFetchFailed:  "fetch failed",
	changeFetchEnded:   "fetch ended without data",
	changeFetchStatus:  "fetch status",
	changeRetry:        "attempt failed, retrying",
	changeInvalidated:  "invalidated",
	changeDataSet:      "data set",
	changeReset:        "reset (removed while observed)",
}

// initInspect turns history on from the start for WithHistory.
func (c *Client) initInspect() {
	if c.cfg.history > 0 {
		c.insp.watch.Store(&watchState{keep: c.cfg.history})
	}
}

// noteChange records a state change of e from old to n; e.mu is held.
// dataChanged says whether the change replaced the data (setLocked tells
// it from the entry's data version: a SetData at the same instant as the
// data before it has the same time, as in virtual time); failed is the
// entry's failure box before the change, and wasInvalidated whether the
// entry was invalidated before it (n is old when only flags changed).
func (e *entry[P, T]) noteChange(w *watchState, old, n *snapshot[T], wasInvalidated, dataChanged bool, failed *failure) {
	w.changes.Add(1)
	var h *history
	if v, ok := w.hist.Load(anyEntry(e)); ok {
		h = v.(*history)
	} else {
		h = &history{}
		w.hist.Store(anyEntry(e), h)
	}
	dataChanged = dataChanged || n.dataUpdatedAt != old.dataUpdatedAt
	now := e.failedLocked()
	r := record{at: time.Now(), kind: kindOf(old, n, wasInvalidated, e.invalidatedLocked(), failed, now, dataChanged), status: n.status, fetch: n.fetchStatus, failures: n.failureCount}
	if now != nil {
		r.err = now.err
	}
	if len(h.recs) < w.keep {
		h.recs = append(h.recs, r)
		return
	}
	h.recs[h.next] = r
	h.next = (h.next + 1) % len(h.recs)
}

// noteRemoved forgets the history of e, which left the cache.
func (e *entry[P, T]) noteRemoved(w *watchState) {
	w.removals.Add(1)
	w.hist.Delete(anyEntry(e))
}

// kindOf names the change from old to n, invalidated before (wasInv) or
// not and after (inv) or not; dataChanged says whether the data did.
func kindOf[T any](old, n *snapshot[T], wasInv, inv bool, oldFailed, failed *failure, dataChanged bool) changeKind {
	idle := uint8(FetchIdle)
	switch {
	case old.fetchStatus == idle && n.fetchStatus != idle:
		return changeFetchStarted
	case old.fetchStatus != idle && n.fetchStatus == idle:
		switch {
		case failed != oldFailed && failed != nil && failed.err != nil:
			return changeFetchFailed
		case n.hasData && dataChanged:
			return changeFetched
		}
		return changeFetchEnded
	case old.fetchStatus != n.fetchStatus:
		return changeFetchStatus
	case old.hasData && !n.hasData:
		return changeReset
	case n.hasData && dataChanged:
		return changeDataSet
	case inv && !wasInv:
		return changeInvalidated
	case n.failureCount > old.failureCount:
		return changeRetry
	}
	return changeOther
}

// ---------- the view (internal/introspect) ----------

func init() {
	introspect.Of = func(c any) introspect.Client { return clientView{c.(*Client)} }
}

type clientView struct{ c *Client }

func (v clientView) Each(yield func(introspect.Entry) bool) {
	for _, q := range v.c.queryList() {
		stop := false
		q.eachEntry(func(e anyEntry) bool {
			if !yield(e.(introspect.Entry)) {
				stop = true
			}
			return !stop
		})
		if stop {
			return
		}
	}
}

func (v clientView) Logger() *slog.Logger { return v.c.cfg.logger }

// Open counts one more inspector page; history is kept until the last one
// closes (or always, with WithHistory).
func (v clientView) Open() (introspect.Watch, func()) {
	in := &v.c.insp
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.pages == 0 && in.watch.Load() == nil {
		in.watch.Store(&watchState{keep: historyWhileOpen})
	}
	in.pages++
	w := in.watch.Load()
	var once sync.Once
	return w, func() {
		once.Do(func() {
			in.mu.Lock()
			defer in.mu.Unlock()
			in.pages--
			if in.pages == 0 && v.c.cfg.history == 0 {
				in.watch.Store(nil) // the histories go with it
			}
		})
	}
}

func (v clientView) Streams() []introspect.Stream {
	in := &v.c.insp
	in.mu.Lock()
	streams := make([]*WSStream, 0, len(in.streams))
	for s := range in.streams {
		streams = append(streams, s)
	}
	in.mu.Unlock()
	out := make([]introspect.Stream, len(streams))
	for i, s := range streams {
		st := s.Stats()
		out[i] = introspect.Stream{URL: s.url, Connected: s.Connected(),
			Connects: st.Connects, Messages: st.Messages, Errors: st.Errors}
	}
	return out
}

// trackStream lists s until untrackStream; they run on s's goroutine.
func (c *Client) trackStream(s *WSStream) {
	c.insp.mu.Lock()
	defer c.insp.mu.Unlock()
	if c.insp.streams == nil {
		c.insp.streams = map[*WSStream]*WSStream{}
	}
	c.insp.streams[s] = s
}

func (c *Client) untrackStream(s *WSStream) {
	c.insp.mu.Lock()
	defer c.insp.mu.Unlock()
	delete(c.insp.streams, s)
}

// The entry's side of the view.

func (e *entry[P, T]) InspectKey() []string { return e.entryKey() }
func (e *entry[P, T]) InspectQuery() string { return e.q.name }

func (e *entry[P, T]) InspectRow() introspect.Row {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	r := introspect.Row{
		Status:        Status(s.status).String(),
		FetchStatus:   FetchStatus(s.fetchStatus).String(),
		HasData:       s.hasData,
		Stale:         !e.freshLocked(),
		Invalidated:   e.invalidatedLocked(),
		Observers:     len(e.observersLocked()),
		DataUpdatedAt: s.updatedAt(e.q.c),
		FailureCount:  int(s.failureCount),
		DataVersion:   uint64(e.dataVer),
		Gone:          e.isGone(),
	}
	if f := e.failedLocked(); f != nil {
		r.Err, r.ErrorUpdatedAt = f.err, f.at
	}
	return r
}

func (e *entry[P, T]) InspectData() (any, uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	if !s.hasData || e.isGone() {
		return nil, uint64(e.dataVer), false
	}
	return s.data, uint64(e.dataVer), true
}

func (e *entry[P, T]) InspectHistory() []introspect.Change {
	w := e.q.c.insp.watch.Load()
	if w == nil {
		return nil
	}
	v, ok := w.hist.Load(anyEntry(e))
	if !ok {
		return nil
	}
	h := v.(*history)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]introspect.Change, 0, len(h.recs))
	for i := range h.recs {
		r := h.recs[(h.next+i)%len(h.recs)]
		out = append(out, introspect.Change{At: r.at, Event: changeNames[r.kind],
			Status: Status(r.status).String(), FetchStatus: FetchStatus(r.fetch).String(),
			FailureCount: int(r.failures), Err: r.err})
	}
	return out
}
