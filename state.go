package qcache

import "time"

// Status says whether an entry holds data, an error, or neither yet.
type Status int

const (
	StatusPending Status = iota // no data yet and no error
	StatusSuccess               // the last settled fetch (or SetData) succeeded
	StatusError                 // the last settled fetch failed; Data may still hold older data
)

// String returns "pending", "success" or "error".
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusSuccess:
		return "success"
	case StatusError:
		return "error"
	}
	return "Status(?)"
}

// FetchStatus says whether a fetch is running for an entry.
type FetchStatus int

const (
	FetchIdle   FetchStatus = iota // no fetch running
	Fetching                       // a fetch is running
	FetchPaused                    // a fetch is wanted but the client is offline
	FetchQueued                    // a fetch waits for a slot of WithMaxConcurrentFetches or MaxConcurrentFetches
)

// String returns "idle", "fetching", "paused" or "queued".
func (s FetchStatus) String() string {
	switch s {
	case FetchIdle:
		return "idle"
	case Fetching:
		return "fetching"
	case FetchPaused:
		return "paused"
	case FetchQueued:
		return "queued"
	}
	return "FetchStatus(?)"
}

// State is a snapshot of one cache entry. It is a value: later changes to the
// entry do not show in a State already returned.
type State[T any] struct {
	Data           T
	HasData        bool
	Err            error // last fetch error; nil after a success
	Status         Status
	FetchStatus    FetchStatus
	DataUpdatedAt  time.Time
	ErrorUpdatedAt time.Time
	FailureCount   int // consecutive failed attempts; 0 after a success
	IsInvalidated  bool
	IsStale        bool // no data, invalidated, or older than StaleTime
	// IsPlaceholder: Data is not this entry's but the data an observer
	// showed before Observer.SetParams moved it here, shown until this
	// entry has data of its own. Only observers' states have it.
	IsPlaceholder bool
}

// IsFetching reports whether a fetch is running (FetchStatus == Fetching).
func (s State[T]) IsFetching() bool { return s.FetchStatus == Fetching }

// IsLoading reports whether the first fetch is running: fetching with no
// data and no error yet.
func (s State[T]) IsLoading() bool { return s.FetchStatus == Fetching && s.Status == StatusPending }

// IsRefetching reports whether a fetch is running for an entry that already
// settled once (with data or an error).
func (s State[T]) IsRefetching() bool { return s.FetchStatus == Fetching && s.Status != StatusPending }

// snapshot is a State as an entry keeps it, published whole on every
// change so that hits read it without a lock. It is State in fewer bytes:
// small integers for the counts and enums, the time as an offset, and the
// error, its time and an HTTP answer's validators kept apart in the
// entry's entryExt, which only entries that ever failed or came from HTTP
// have. For a string T it takes a 32-byte allocation instead of State's
// 128; one is kept per entry. IsStale and IsInvalidated are not kept: they
// come from the entry's flags (flagFresh, flagInvalidated), so that an
// invalidation makes no snapshot.
type snapshot[T any] struct {
	data T
	// dataUpdatedAt is when the data landed, as an offset from the client's
	// epoch (clock.go): 8 bytes instead of a time.Time's 24. 0 while there
	// is no data.
	dataUpdatedAt time.Duration
	failureCount  int32
	status        uint8 // a Status
	fetchStatus   uint8 // a FetchStatus
	hasData       bool
}

// failure is the error part of a snapshot. It is never changed once made,
// so the snapshots that follow share it.
type failure struct {
	err error
	at  time.Time
	// invalidated: the entry was invalidated after it failed; CacheErrors
	// keeps the error until then.
	invalidated bool
}

func (n *snapshot[T]) state(c *Client, x *entryExt[T]) State[T] {
	s := State[T]{
		Data:          n.data,
		HasData:       n.hasData,
		Status:        Status(n.status),
		FetchStatus:   FetchStatus(n.fetchStatus),
		FailureCount:  int(n.failureCount),
		DataUpdatedAt: n.updatedAt(c),
	}
	if x != nil && x.failed != nil {
		s.Err, s.ErrorUpdatedAt = x.failed.err, x.failed.at
	}
	return s
}

// succeed records data that landed at now, from a fetch or SetData. Whether
// it lands invalidated is the freshness action's (setLocked).
func (n *snapshot[T]) succeed(data T, now time.Duration) {
	n.data, n.hasData = data, true
	n.dataUpdatedAt = now
	n.status = uint8(StatusSuccess)
	n.failureCount = 0
}

// entryExt is the part of an entry's state that most entries never have:
// the last error and its time, the validators of data from an HTTP answer,
// and the live part of an observed entry. It is guarded by the entry's
// lock (hits never read it), and nil while all three are.
type entryExt[T any] struct {
	failed *failure      // nil until a fetch of the entry first failed
	meta   *httpMeta     // validators and body hash of data from an HTTP answer; nil otherwise
	live   *entryLive[T] // made on first use (lv), kept from then on
}

// failedLocked returns the entry's failure box, or nil.
func (e *entry[P, T]) failedLocked() *failure {
	if e.ext == nil {
		return nil
	}
	return e.ext.failed
}

// metaLocked returns the meta of the entry's data, or nil.
func (e *entry[P, T]) metaLocked() *httpMeta {
	if e.ext == nil {
		return nil
	}
	return e.ext.meta
}

// setExtLocked stores the entry's failure box and meta.
func (e *entry[P, T]) setExtLocked(failed *failure, meta *httpMeta) {
	switch {
	case failed == nil && meta == nil && e.liveLocked() == nil:
		e.ext = nil
	case e.ext == nil:
		e.ext = &entryExt[T]{failed: failed, meta: meta}
	default:
		e.ext.failed, e.ext.meta = failed, meta
	}
}

// succeedLocked records data that landed at now in s, the next snapshot,
// with the HTTP answer's meta (nil for any other source): the error goes,
// its time stays.
func (e *entry[P, T]) succeedLocked(s *snapshot[T], data T, meta *httpMeta, now time.Duration) {
	s.succeed(data, now)
	f := e.failedLocked()
	if f != nil && f.err != nil {
		f = &failure{at: f.at}
	}
	e.setExtLocked(f, meta)
}
