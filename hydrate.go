package qcache

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// snapshotVersion is the version of the format that Dehydrate writes and
// Hydrate reads.
const snapshotVersion = 1

// ErrSnapshotFormat is returned (wrapped) by Hydrate when its input does not
// start with the header of a format version it reads: not a snapshot, an
// empty one, or one written by a newer qcache.
var ErrSnapshotFormat = errors.New("qcache: not a snapshot of a known format version")

type snapshotHeader struct {
	Format  string `json:"qcache"`
	Version int    `json:"v"`
}

type snapshotLine struct {
	Query       string          `json:"query"`
	Key         Key             `json:"key"`
	Params      json.RawMessage `json:"params"`
	Data        json.RawMessage `json:"data"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Invalidated bool            `json:"invalidated,omitempty"`
}

// DehydrateError is returned by Dehydrate when it left entries out because
// their params or data could not be encoded as JSON (a T holding a func or
// a channel: leave such queries out with the Filter). Everything else was
// written: the snapshot is whole and loads.
type DehydrateError struct {
	Skipped int   // entries left out
	Err     error // the first encoding error, naming its query and key
}

func (e *DehydrateError) Error() string {
	return fmt.Sprintf("qcache: dehydrate: %d entries left out: %v", e.Skipped, e.Err)
}

func (e *DehydrateError) Unwrap() error { return e.Err }

// HydrateStats counts what Hydrate did with the entries it read: each entry
// line counts in exactly one field.
type HydrateStats struct {
	Restored     int `json:"restored"`      // set as their entry's data
	Older        int `json:"older"`         // not set: the cache held data as new or newer (or the entry was removed meanwhile)
	UnknownQuery int `json:"unknown_query"` // no declared query has the line's name and gives the line's key for its params
	Ambiguous    int `json:"ambiguous"`     // several declared queries have the line's name and give its key: none is guessed
	BadLine      int `json:"bad_line"`      // not an entry: malformed JSON (a truncated or corrupted file), a field missing, or too long
	Invalid      int `json:"invalid"`       // data that did not decode into the query's T, or whose Validate failed
}

// Skipped returns the lines that were not restored for a reason other than
// newer data in the cache: UnknownQuery, Ambiguous, BadLine and Invalid.
func (s HydrateStats) Skipped() int { return s.UnknownQuery + s.Ambiguous + s.BadLine + s.Invalid }

// hydrater is what Dehydrate and Hydrate need of a Query[P, T].
type hydrater interface {
	queryName() string
	// dehydrate writes the entries f selects that have data.
	dehydrate(w *snapshotWriter, f Filter) error
	// resolve returns the restore of a line when params decode into P and
	// give key; nil otherwise.
	resolve(params json.RawMessage, key Key) func(l *snapshotLine) (restoreOutcome, error)
}

type restoreOutcome int

const (
	outcomeRestored restoreOutcome = iota
	outcomeOlder
	outcomeInvalid
	outcomeBadLine
)

// Dehydrate writes the entries f selects that hold data (fresh or stale,
// with or without an error since) to w, for Hydrate to read back, and
// returns the first error of w: TanStack Query's dehydrate.
//
// The format is line-delimited JSON. The first line is a header naming the
// format and its version, and every line after it is one entry:
//
//	{"qcache":"dehydrate","v":1}
//	{"query":"GET /users/$userId","key":["users","42"],"params":"42","data":{"id":"42","name":"Ada"},"updated_at":"2026-12-02T07:00:00Z","invalidated":true}
//
// query is the query's name (QueryName, or the default one), key the
// entry's key, params the JSON of its P (a key cannot always be turned back
// into P: Hydrate decodes params and checks that they give key), data the
// JSON of its data, updated_at its DataUpdatedAt, and invalidated (left out
// when false) whether it was invalidated. Readers ignore fields they do not
// know; a version they do not know is refused whole.
// Each entry is written as one consistent state;
// entries that change while Dehydrate runs are written as they were before
// or after the change. It works on a closed client too, so that its last
// state can be saved. It does not publish anything on the Bus.
//
// Entries whose params or data cannot be encoded as JSON are left out; the
// rest is written and Dehydrate returns a *DehydrateError. The entries of
// Local queries are never written: their data stays in the process.
func (c *Client) Dehydrate(w io.Writer, f Filter) error {
	sw := &snapshotWriter{bw: bufio.NewWriterSize(w, 64<<10)}
	sw.enc = json.NewEncoder(sw.bw)
	sw.enc.SetEscapeHTML(false)
	sw.val = json.NewEncoder(&sw.buf)
	sw.val.SetEscapeHTML(false)
	if err := sw.enc.Encode(snapshotHeader{Format: "dehydrate", Version: snapshotVersion}); err != nil {
		return fmt.Errorf("qcache: dehydrate: %w", err)
	}
	for _, q := range c.queryList() {
		h, ok := q.(hydrater)
		if !ok || !f.mayMatch(q.staticPrefix()) {
			continue
		}
		if err := h.dehydrate(sw, f); err != nil {
			return fmt.Errorf("qcache: dehydrate: %w", err)
		}
	}
	if err := sw.bw.Flush(); err != nil {
		return fmt.Errorf("qcache: dehydrate: %w", err)
	}
	if sw.skipped > 0 {
		return &DehydrateError{Skipped: sw.skipped, Err: sw.firstErr}
	}
	return nil
}

// snapshotWriter is Dehydrate's output, shared by the queries it visits.
type snapshotWriter struct {
	bw       *bufio.Writer
	enc      *json.Encoder // lines, to bw
	buf      bytes.Buffer  // one value's JSON
	val      *json.Encoder // values, to buf
	skipped  int
	firstErr error
}

// encodeValue returns v's JSON (valid until the next call), without HTML
// escaping: the data is stored, not embedded in a page.
func (sw *snapshotWriter) encodeValue(v any) (json.RawMessage, error) {
	sw.buf.Reset()
	if err := sw.val.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(sw.buf.Bytes(), []byte("\n")), nil
}

func (sw *snapshotWriter) skip(err error) {
	if sw.skipped == 0 {
		sw.firstErr = err
	}
	sw.skipped++
}

func (q *Query[P, T]) queryName() string { return q.name }

func (q *Query[P, T]) dehydrate(sw *snapshotWriter, f Filter) error {
	if q.cfg.local {
		return nil // its data stays in the process (Local)
	}
	var err error
	q.entries.each(func(e *entry[P, T]) bool {
		key := e.entryKey()
		if !f.Match(key) || (f.onState() && !f.matchState(e.info())) {
			return true
		}
		// The snapshot and the invalidated flag, read under the lock: one
		// consistent state (an invalidation changes the flag only).
		e.mu.Lock()
		s, invalidated := e.snap.Load(), e.invalidatedLocked()
		e.mu.Unlock()
		if !s.hasData {
			return true
		}
		l := snapshotLine{Query: q.name, Key: key, UpdatedAt: s.updatedAt(q.c).UTC(), Invalidated: invalidated}
		params, perr := sw.encodeValue(e.p)
		if perr != nil {
			sw.skip(fmt.Errorf("%s %s: encode params %T: %w", q.name, e.keyText(), e.p, perr))
			return true
		}
		l.Params = slices.Clone(params)
		data, derr := sw.encodeValue(s.data)
		if derr != nil {
			sw.skip(fmt.Errorf("%s %s: encode %T: %w", q.name, e.keyText(), s.data, derr))
			return true
		}
		l.Data = data
		err = sw.enc.Encode(&l)
		return err == nil
	})
	return err
}

func (q *Query[P, T]) resolve(params json.RawMessage, key Key) func(*snapshotLine) (restoreOutcome, error) {
	var p P
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	if k, err := q.keyFn(p); err != nil || !slices.Equal(k, key) {
		return nil
	}
	return func(l *snapshotLine) (restoreOutcome, error) {
		v, err := decodeValue[T](l.Data)
		if err != nil {
			return outcomeInvalid, err
		}
		e, err := q.lockedEntry(p)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return outcomeOlder, err
			}
			return outcomeBadLine, err
		}
		restored := e.restoreLocked(v, l.UpdatedAt, l.Invalidated)
		e.mu.Unlock()
		if !restored {
			return outcomeOlder, nil
		}
		return outcomeRestored, nil
	}
}

// Hydrate reads a snapshot that Dehydrate wrote and puts its entries into
// the queries of this client that have the same names, with the age they
// had: DataUpdatedAt is kept, so data older than its query's StaleTime is
// stale at once, and an invalidated entry comes back invalidated. Declare
// the queries before calling Hydrate: a line is put into the query of its
// name that gives the line's key for the line's params, and skipped when
// there is none or more than one (queries may share a name; their keys
// then tell them apart, as KeyPrefix does).
//
// Hydrate never overwrites newer data: a line is restored only when its
// entry holds no data or older data (TanStack's rule). A fetch in flight
// for the entry is left alone: its waiters get its result, which replaces
// the restored data when it lands, being newer. Entries Hydrate creates
// have no observer: GCTime removes them as it does any entry nobody uses.
// Hydrate creates entries as Get does (WithMaxEntries applies) and does not
// publish on the Bus.
//
// One bad line never loses the others: a line that is not JSON (a truncated
// last line), that names no declared query, whose data does not decode into
// the query's T or fails its Validate, is skipped and counted in the
// returned HydrateStats, and the others are restored; the skips are logged
// (WithLogger), one line at Debug and their sum at Warn. Hydrate fails
// only when its input does not start with the header of a known version
// (an error wrapping ErrSnapshotFormat, and nothing is restored), when
// reading fails (what was read before stays restored), or with ErrClosed
// once the client is closed. It is safe to call while the client is in
// use, and concurrently with Close.
func (c *Client) Hydrate(r io.Reader) (HydrateStats, error) {
	var st HydrateStats
	if c.closed.Load() {
		return st, ErrClosed
	}
	br := bufio.NewReaderSize(r, 64<<10)
	maxLine := int(min(4*c.cfg.maxResponseBytes+64<<10, 1<<30)) // data is stored as it came, at most escaped
	line, tooLong, err := readLine(br, maxLine)
	if len(line) == 0 && err != nil {
		if errors.Is(err, io.EOF) {
			return st, fmt.Errorf("qcache: hydrate: empty input: %w", ErrSnapshotFormat)
		}
		return st, fmt.Errorf("qcache: hydrate: %w", err)
	}
	var h snapshotHeader
	if tooLong || json.Unmarshal(line, &h) != nil || h.Format != "dehydrate" {
		return st, fmt.Errorf("qcache: hydrate: no snapshot header: %w", ErrSnapshotFormat)
	}
	if h.Version != snapshotVersion {
		return st, fmt.Errorf("qcache: hydrate: version %d, this qcache reads version %d: %w",
			h.Version, snapshotVersion, ErrSnapshotFormat)
	}

	byName := map[string][]hydrater{}
	for _, q := range c.queryList() {
		if h, ok := q.(hydrater); ok {
			byName[h.queryName()] = append(byName[h.queryName()], h)
		}
	}
	var firstSkip error
	skip := func(n int, count *int, why error) {
		*count++
		if firstSkip == nil {
			firstSkip = fmt.Errorf("line %d: %w", n, why)
		}
		c.cfg.logger.DebugContext(c.ctx, "qcache: hydrate: line skipped", "line", n, "err", why)
	}
	n := 1
	for err == nil {
		line, tooLong, err = readLine(br, maxLine)
		n++
		if err != nil && !errors.Is(err, io.EOF) {
			break
		}
		if len(bytes.TrimSpace(line)) == 0 && !tooLong {
			continue
		}
		if tooLong {
			skip(n, &st.BadLine, fmt.Errorf("longer than %d bytes", maxLine))
			continue
		}
		var l snapshotLine
		if jerr := json.Unmarshal(line, &l); jerr != nil {
			skip(n, &st.BadLine, jerr)
			continue
		}
		if l.Query == "" || l.Key == nil || l.Params == nil || l.Data == nil || l.UpdatedAt.IsZero() {
			skip(n, &st.BadLine, errors.New("a field of query, key, params, data and updated_at is missing"))
			continue
		}
		var restore func(*snapshotLine) (restoreOutcome, error)
		matches := 0
		for _, q := range byName[l.Query] {
			if f := q.resolve(l.Params, l.Key); f != nil {
				restore = f
				matches++
			}
		}
		switch {
		case matches == 0:
			skip(n, &st.UnknownQuery, fmt.Errorf("no query %q with key %s", l.Query, shortURL(l.Key.String())))
			continue
		case matches > 1:
			skip(n, &st.Ambiguous, fmt.Errorf("%d queries named %q have key %s", matches, l.Query, shortURL(l.Key.String())))
			continue
		}
		out, rerr := restore(&l)
		if errors.Is(rerr, ErrClosed) {
			c.logHydrate(st, firstSkip)
			return st, ErrClosed
		}
		switch out {
		case outcomeRestored:
			st.Restored++
		case outcomeOlder:
			st.Older++
		case outcomeInvalid:
			skip(n, &st.Invalid, fmt.Errorf("%s %s: %w", l.Query, shortURL(l.Key.String()), rerr))
		case outcomeBadLine:
			skip(n, &st.BadLine, rerr)
		}
	}
	c.logHydrate(st, firstSkip)
	if err != nil && !errors.Is(err, io.EOF) {
		return st, fmt.Errorf("qcache: hydrate: line %d: %w", n, err)
	}
	return st, nil
}

func (c *Client) logHydrate(st HydrateStats, firstSkip error) {
	if st.Skipped() == 0 {
		c.cfg.logger.DebugContext(c.ctx, "qcache: hydrated", "restored", st.Restored, "older", st.Older)
		return
	}
	c.cfg.logger.WarnContext(c.ctx, "qcache: hydrate skipped lines", "restored", st.Restored, "older", st.Older,
		"unknown_query", st.UnknownQuery, "ambiguous", st.Ambiguous, "bad_line", st.BadLine,
		"invalid", st.Invalid, "first", firstSkip)
}

// readLine returns the next line of br without its newline. A line longer
// than max is consumed and returned empty, with tooLong set. err is io.EOF
// after the last line (which may come with it, when the input does not end
// with a newline).
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, ferr := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > max+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if ferr == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			line = nil
		}
		return bytes.TrimSuffix(line, []byte("\n")), tooLong, ferr
	}
}
