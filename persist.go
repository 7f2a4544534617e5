package qcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/qcache-go/qcache/internal/wait"
)

// FilePersister keeps a snapshot of a client's entries in a file, so that
// a restarted service starts warm: Start restores the file into the client
// (Hydrate), then a snapshot (Dehydrate) replaces the file every Every and
// once more when the client closes (or the persister does).
//
//	client := qcache.NewClient(qcache.WithBaseURL(api))
//	users := qcache.NewQuery[string, User](client, qcache.Endpoint{URL: "/users/$id"},
//		qcache.StaleTime(time.Minute))
//	p := &qcache.FilePersister{Path: "/var/lib/svc/qcache.jsonl", Every: time.Minute}
//	if _, err := p.Start(client); err != nil { // after the queries are declared
//		log.Printf("starting cold: %v", err)
//	}
//	defer client.Close() // writes the last snapshot
//
// Start after declaring the queries: a line of the file whose query is
// not declared yet is skipped (HydrateStats.UnknownQuery), and the next
// snapshot no longer holds it.
//
// Writes are atomic: a snapshot goes to a temporary file in the same
// directory, which is synced, then renamed over Path, and the directory is
// synced. A process killed at any moment leaves the previous snapshot or
// the new one, whole; Start removes the temporary files such a kill leaves.
// A file that is unreadable, truncated or corrupted is reported (in Start's
// error, OnError and the log) and costs a cold start, never a failed one.
// Path belongs to one process: two persisters must not share it.
//
// Set the fields before Start and do not change them after. A
// FilePersister must not be copied after Start.
type FilePersister struct {
	Path  string        // the snapshot file; its directory must exist
	Every time.Duration // time between snapshots; 0 or less: only when closing
	// Filter selects the entries written; the zero Filter writes every
	// entry that holds data.
	Filter Filter
	// OnError, when not nil, is told of every failed write and of a
	// snapshot that could not be read; it must not block. Errors are also
	// logged (WithLogger) at Warn.
	OnError func(error)

	mu      sync.Mutex // one write at a time
	c       *Client
	stop    context.CancelFunc
	done    chan struct{} // closed when the goroutine has written the last snapshot
	lastErr error         // of the last write
}

// tempSuffix is what follows the file's name in its temporary files'.
const tempSuffix = ".tmp-"

// Start restores the snapshot at Path into c, as Hydrate does, and starts
// the goroutine that writes snapshots; Client.Close (or Close) ends it,
// after a last snapshot. A missing file is no error: the service starts
// cold. An error says that the file could not be read whole; the persister
// runs anyway (unless the error is ErrClosed), and its next snapshot
// replaces the file. Start panics when called twice or with a nil client.
func (p *FilePersister) Start(c *Client) (HydrateStats, error) {
	if c == nil {
		panic("qcache: FilePersister.Start: nil Client")
	}
	p.mu.Lock()
	if p.c != nil {
		p.mu.Unlock()
		panic("qcache: FilePersister.Start called twice")
	}
	p.c = c
	p.mu.Unlock()
	p.removeTemps()
	st, err := p.load()
	if errors.Is(err, ErrClosed) {
		return st, err
	}
	if err != nil {
		p.report(err)
	}
	ctx, stop := context.WithCancel(c.ctx)
	p.mu.Lock()
	p.stop, p.done = stop, make(chan struct{})
	p.mu.Unlock()
	if !c.goroutine(func() { p.run(ctx) }) {
		stop()
		close(p.done)
		return st, ErrClosed
	}
	return st, err
}

func (p *FilePersister) load() (HydrateStats, error) {
	f, err := os.Open(p.Path)
	if errors.Is(err, os.ErrNotExist) {
		return HydrateStats{}, nil
	}
	if err != nil {
		return HydrateStats{}, fmt.Errorf("qcache: load snapshot: %w", err)
	}
	defer f.Close()
	st, err := p.c.Hydrate(f)
	if err != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("qcache: load snapshot %s: %w", p.Path, err)
	}
	return st, err
}

// removeTemps removes the temporary files a writer killed mid-write left.
func (p *FilePersister) removeTemps() {
	dir, base := filepath.Split(p.Path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // the write will report it
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), base+tempSuffix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// run writes a snapshot every Every until ctx ends, then a last one.
func (p *FilePersister) run(ctx context.Context) {
	defer close(p.done)
	for p.Every > 0 && wait.Sleep(ctx, p.Every) {
		p.Save()
	}
	if ctx.Err() == nil {
		<-ctx.Done()
	}
	p.Save()
}

// Save writes a snapshot now and returns its error, also reported to
// OnError and the log. Entries that could not be encoded are left out of
// it (a *DehydrateError): the file is written all the same.
func (p *FilePersister) Save() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		return errors.New("qcache: FilePersister.Save before Start")
	}
	err := writeFileAtomic(p.Path, func(w io.Writer) error { return p.c.Dehydrate(w, p.Filter) })
	if err != nil {
		p.report(err)
	}
	p.lastErr = err
	return err
}

// Close stops the snapshots, writes a last one and returns its error. The
// client goes on; Client.Close does the same, so calling both is not
// needed. Close is idempotent; before Start it does nothing. Called from a
// callback (OnError, a fetch function), it does not wait for the last
// snapshot and returns nil.
func (p *FilePersister) Close() error {
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	if inOwnGoroutine() {
		return nil // called from a callback, maybe on the goroutine it would wait for
	}
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

func (p *FilePersister) report(err error) {
	p.c.cfg.logger.WarnContext(p.c.ctx, "qcache: snapshot", "path", p.Path, "err", err)
	if p.OnError != nil {
		p.c.callHook("FilePersister.OnError", func() { p.OnError(err) })
	}
}

// writeFileAtomic replaces path with what write writes, atomically: to a
// temporary file in the same directory, synced, renamed over path, and the
// directory synced, so that a crash at any moment leaves the old file or
// the new one, whole. A *DehydrateError from write still commits the file
// (it is whole, without the entries it names) and is returned.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+tempSuffix+"*")
	if err != nil {
		return fmt.Errorf("qcache: save snapshot: %w", err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	var partial *DehydrateError
	werr := write(f)
	if werr != nil && !errors.As(werr, &partial) {
		return fmt.Errorf("qcache: save snapshot %s: %w", path, werr)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcache: save snapshot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("qcache: save snapshot %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("qcache: save snapshot %s: %w", path, err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("qcache: save snapshot %s: sync directory: %w", path, err)
	}
	return werr
}

// syncDir makes a rename in dir durable. Windows cannot sync a directory,
// and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
