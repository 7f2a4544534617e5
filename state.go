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
)

// String returns "idle", "fetching" or "paused".
func (s FetchStatus) String() string {
	switch s {
	case FetchIdle:
		return "idle"
	case Fetching:
		return "fetching"
	case FetchPaused:
		return "paused"
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
}

// IsFetching reports whether a fetch is running (FetchStatus == Fetching).
func (s State[T]) IsFetching() bool { return s.FetchStatus == Fetching }

// IsLoading reports whether the first fetch is running: fetching with no
// data and no error yet.
func (s State[T]) IsLoading() bool { return s.FetchStatus == Fetching && s.Status == StatusPending }

// IsRefetching reports whether a fetch is running for an entry that already
// settled once (with data or an error).
func (s State[T]) IsRefetching() bool { return s.FetchStatus == Fetching && s.Status != StatusPending }
