// Package introspect is the read-only view of a qcache.Client that package
// inspect draws its page from: what the cache holds entry by entry, each
// entry's recent changes, and a count of changes to follow them live. It is
// internal so that qcache's public API grows only where its users benefit;
// qcache fills Of when it is loaded.
package introspect

import (
	"log/slog"
	"time"
)

// Of returns the view of c, a *qcache.Client; qcache sets it in an init
// function.
var Of func(c any) Client

// Client is the view of one client.
type Client interface {
	// Each calls yield for every entry of the client until it returns
	// false. Entries added or removed meanwhile may or may not be seen.
	Each(yield func(Entry) bool)
	// Open tells the client that an inspector page is open: until close is
	// called, the client counts its entries' changes and keeps a history
	// of them (as WithHistory does). close is idempotent.
	Open() (w Watch, close func())
	// Streams returns the client's WebSocket streams that have not ended.
	Streams() []Stream
	// Logger is the client's logger (WithLogger).
	Logger() *slog.Logger
}

// Watch counts what changed in a client while an inspector is open.
type Watch interface {
	// Changes is the number of state changes of entries since the first
	// page was opened; Removals the number of entries removed.
	Changes() uint64
	Removals() uint64
}

// Entry is one cache entry. Its methods lock it briefly; Key and Query do
// not.
type Entry interface {
	InspectKey() []string // the entry's own: not to be modified
	InspectQuery() string // the query's name
	InspectRow() Row
	// InspectData returns the entry's data (shared with the cache: to be
	// read, never modified) and its version, which changes whenever the
	// data does.
	InspectData() (data any, version uint64, ok bool)
	// InspectHistory returns the entry's recorded changes, oldest first;
	// nil when no history is kept.
	InspectHistory() []Change
}

// Row is the summary of an entry.
type Row struct {
	Status         string
	FetchStatus    string
	HasData        bool
	Stale          bool
	Invalidated    bool
	Observers      int
	DataUpdatedAt  time.Time
	Err            error
	ErrorUpdatedAt time.Time
	FailureCount   int
	DataVersion    uint64
	Gone           bool // removed from the cache
}

// Change is one recorded state change of an entry.
type Change struct {
	At           time.Time
	Event        string // "fetch started", "fetched", "fetch failed", "invalidated", "data set", …
	Status       string
	FetchStatus  string
	FailureCount int
	Err          error
}

// Stream is a WebSocket stream of the client.
type Stream struct {
	URL                        string // without user info
	Connected                  bool
	Connects, Messages, Errors uint64
}
