package qcache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// GetMany returns the data of every p in ps, as Get would one by one: fresh
// data from memory, the rest from fetches that run concurrently (each one
// shared with any other caller of that key, and bounded by
// WithMaxConcurrentFetches and MaxConcurrentFetches when set). The map holds
// the data that arrived, whatever failed; the error joins (errors.Join) one
// error per p that failed, each naming its p and wrapping its cause, so
// *HTTPError and *DecodeError stay matchable with errors.As. ctx ends the
// wait, not the fetches others share.
func (q *Query[P, T]) GetMany(ctx context.Context, ps []P) (map[P]T, error) {
	out := make(map[P]T, len(ps))
	var misses []P
	for _, p := range ps {
		if _, dup := out[p]; dup {
			continue
		}
		if e := q.entries.readOnly().m[p]; e != nil {
			if v, ok := e.hit(); ok && !q.c.closed.Load() {
				q.hits.add()
				e.touch()
				out[p] = q.out(v)
				continue
			}
		}
		misses = append(misses, p)
	}
	if len(misses) == 0 {
		return out, nil
	}
	var mu sync.Mutex
	var errs []error
	var g errgroup.Group // no WithContext: one key's failure must not cancel the others
	if n := q.fetchBound(); n > 0 {
		g.SetLimit(n)
	}
	seen := make(map[P]bool, len(misses))
	for _, p := range misses {
		if seen[p] {
			continue
		}
		seen[p] = true
		g.Go(func() error {
			v, err := q.Get(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("qcache: %s: %v: %w", q.name, p, err))
			} else {
				out[p] = v
			}
			return nil
		})
	}
	g.Wait()
	return out, errors.Join(errs...)
}

// fetchBound is the tighter of the query's and the client's bound on
// fetches in flight; 0 when neither is set.
func (q *Query[P, T]) fetchBound() int {
	n, m := q.cfg.maxFetches, q.c.cfg.maxFetches
	switch {
	case n == 0:
		return m
	case m == 0:
		return n
	}
	return min(n, m)
}

// ErrNotInBatch is returned, wrapped, for a key that a batch fetch
// function's answer left out.
var ErrNotInBatch = errors.New("qcache: key missing from the batch answer")

// BatchWindow sets how long a NewQueryBatch query gathers concurrent misses
// before it calls its function with all of them (default 1 ms). A batch
// also goes as soon as MaxBatch keys wait. It panics if d is not positive.
func BatchWindow(d time.Duration) QueryOption {
	mustBePositiveDuration("BatchWindow", d)
	return func(c *queryConfig) { c.batchWindow = d }
}

// MaxBatch sets how many keys a NewQueryBatch query's function gets at most
// in one call (default 1,000). It panics if n is not positive.
func MaxBatch(n int) QueryOption {
	mustBePositive("MaxBatch", n)
	return func(c *queryConfig) { c.maxBatch = n }
}

// NewQueryBatch declares a query whose misses go upstream together: keys
// fetched at about the same time (within BatchWindow, default 1 ms, or as
// soon as MaxBatch keys wait) reach fetch as one call, whose answer is split
// among their waiters. A key left out of the answer fails with an error
// wrapping ErrNotInBatch; an error of the call is each key's error. Every
// other behaviour (keys, caching, sharing, retries, observers,
// invalidation) is that of NewQueryFunc: each key is an entry of its own,
// and a retry goes out in a later batch.
//
// fetch gets a context with the values of the context that started the
// first fetch of the batch; it ends when the client closes, or when every
// key of the batch has been given up.
func NewQueryBatch[P comparable, T any](c *Client, key Key,
	fetch func(ctx context.Context, ps []P) (map[P]T, error), opts ...QueryOption) *Query[P, T] {
	if fetch == nil {
		panic("qcache: NewQueryBatch " + key.String() + ": nil fetch function")
	}
	b := &batcher[P, T]{c: c, fetch: fetch, window: time.Millisecond, max: 1000}
	q := NewQueryFunc(c, key, b.fetchOne, opts...)
	if q.cfg.batchWindow > 0 {
		b.window = q.cfg.batchWindow
	}
	if q.cfg.maxBatch > 0 {
		b.max = q.cfg.maxBatch
	}
	return q
}

// batcher gathers the keys of concurrent fetches into calls of fetch.
type batcher[P comparable, T any] struct {
	c      *Client
	fetch  func(ctx context.Context, ps []P) (map[P]T, error)
	window time.Duration
	max    int

	mu      sync.Mutex
	pending *batch[P, T] // gathering; nil when none
}

// batch is one call of the batch function: its keys and their waiters.
type batch[P comparable, T any] struct {
	ctx    context.Context // values of the first fetch's context
	keys   []P
	has    map[P]bool // in keys
	wanted map[P]int  // waiters per key still waiting
	timer  *time.Timer
	done   chan struct{} // closed when the answer is in
	cancel context.CancelFunc
	data   map[P]T
	err    error
}

// fetchOne is the per-key fetch function: it adds p to the gathering batch
// and waits for that batch's answer, or for ctx.
func (b *batcher[P, T]) fetchOne(ctx context.Context, p P) (T, error) {
	b.mu.Lock()
	bt := b.pending
	if bt == nil {
		bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		bt = &batch[P, T]{ctx: bctx, cancel: cancel, has: map[P]bool{}, wanted: map[P]int{}, done: make(chan struct{})}
		b.pending = bt
		bt.timer = time.AfterFunc(b.window, func() { b.flush(bt) })
	}
	if !bt.has[p] {
		bt.has[p] = true
		bt.keys = append(bt.keys, p)
	}
	bt.wanted[p]++
	full := len(bt.keys) >= b.max
	if full {
		b.pending = nil // taken under the lock: no key joins a full batch
	}
	b.mu.Unlock()
	if full {
		b.send(bt)
	}
	var zero T
	select {
	case <-bt.done:
		if bt.err != nil {
			return zero, bt.err
		}
		v, ok := bt.data[p]
		if !ok {
			return zero, fmt.Errorf("%w: %v", ErrNotInBatch, p)
		}
		return v, nil
	case <-ctx.Done():
		b.mu.Lock()
		bt.wanted[p]--
		left := 0
		for _, n := range bt.wanted {
			left += n
		}
		if left == 0 && b.pending == bt {
			// Nobody waits for this batch, which has not gone yet: it
			// never will; later keys start a batch of their own.
			b.pending = nil
			bt.timer.Stop()
		}
		b.mu.Unlock()
		if left == 0 {
			bt.cancel() // nobody waits for this batch any more
		}
		return zero, context.Cause(ctx)
	}
}

// flush sends bt when its window ends, unless it went already (full) or
// was given up.
func (b *batcher[P, T]) flush(bt *batch[P, T]) {
	b.mu.Lock()
	if b.pending != bt {
		b.mu.Unlock()
		return
	}
	b.pending = nil
	b.mu.Unlock()
	b.send(bt)
}

// send calls the batch function with bt's keys, once; bt is no longer
// pending, so its keys are final.
func (b *batcher[P, T]) send(bt *batch[P, T]) {
	bt.timer.Stop()
	b.mu.Lock()
	keys := bt.keys
	b.mu.Unlock()
	stop := context.AfterFunc(b.c.ctx, bt.cancel) // Client.Close ends the call
	run := func() {
		defer stop()
		defer bt.cancel()
		defer close(bt.done)
		defer func() {
			if r := recover(); r != nil {
				bt.err = &panicError{value: r}
			}
		}()
		data, err := b.fetch(bt.ctx, keys)
		bt.data, bt.err = maps.Clone(data), err
	}
	if !b.c.goroutine(run) {
		bt.err = ErrClosed
		stop()
		bt.cancel()
		close(bt.done)
	}
}
