package qcache

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fetchCtxTestKey struct{}

// newTestFetchCtx returns a fetch context whose call carried the value "v"
// under fetchCtxTestKey and a value under an *int key, as startLocked sets
// one up.
func newTestFetchCtx(intKey *int) *fetchCtx {
	from := context.WithValue(context.Background(), fetchCtxTestKey{}, "v")
	from = context.WithValue(from, intKey, "int")
	return &fetchCtx{vals: fetchValues{from: from, scope: &fetchScope{}}}
}

// A fetch's context does what context.WithCancelCause(&vals) would: its
// error, its cause (the first cancel's), its values, and the contexts and
// AfterFuncs derived from it, which end as soon as cancel returns (they
// register with it, without a goroutine), whether they were made before
// or after the cancel, and whether Done was asked for before or not.
func TestFetchContext(t *testing.T) {
	var intKey int
	for _, tc := range []struct {
		name         string
		askDone      bool // Done asked for before the cancel
		deriveBefore bool // a child and an AfterFunc made before the cancel
		cause        error
		want         error
	}{
		{"unarmed", false, false, ErrClosed, ErrClosed},
		{"unarmed nil cause", false, false, nil, context.Canceled},
		{"done asked", true, false, ErrClosed, ErrClosed},
		{"derived before", false, true, ErrClosed, ErrClosed},
		{"derived before nil cause", true, true, nil, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFetchCtx(&intKey)
			var ctx context.Context = f
			assert.Equal(t, "v", ctx.Value(fetchCtxTestKey{}))
			assert.Equal(t, "int", ctx.Value(&intKey), "an *int key of the caller's is still found")
			assert.Same(t, f.vals.scope, scopeFrom(ctx))
			_, hasDeadline := ctx.Deadline()
			assert.False(t, hasDeadline)
			assert.NoError(t, ctx.Err())
			assert.NoError(t, context.Cause(ctx))
			assert.NoError(t, f.causeErr())
			if tc.askDone {
				select {
				case <-ctx.Done():
					t.Fatal("done before the cancel")
				default:
				}
			}
			var child context.Context
			fired := make(chan struct{})
			if tc.deriveBefore {
				var cancelChild context.CancelFunc
				child, cancelChild = context.WithCancel(ctx)
				defer cancelChild() // after the checks: the parent's end must end it
				context.AfterFunc(ctx, func() { close(fired) })
			}
			f.cancel(tc.cause)
			f.cancel(errors.New("a later cause")) // the first cancel counts
			if !tc.deriveBefore {
				var cancelChild context.CancelFunc
				child, cancelChild = context.WithCancel(ctx)
				defer cancelChild() // after the checks: the parent's end must end it
				context.AfterFunc(ctx, func() { close(fired) })
			}
			assert.ErrorIs(t, ctx.Err(), context.Canceled)
			assert.Equal(t, tc.want, context.Cause(ctx))
			assert.Equal(t, tc.want, f.causeErr())
			select {
			case <-ctx.Done():
			default:
				t.Fatal("Done not closed by cancel")
			}
			select {
			case <-child.Done():
			default:
				t.Fatal("a child is not ended by the time cancel returns")
			}
			assert.ErrorIs(t, child.Err(), context.Canceled)
			assert.Equal(t, tc.want, context.Cause(child))
			assert.Equal(t, "v", child.Value(fetchCtxTestKey{}))
			<-fired // the AfterFunc runs
		})
	}
}

// A fetch function that never asks for Done and polls Err sees the cause
// of its fetch's end all the same: ErrClosed when Close ends it, on the
// inline path and on a goroutine of the fetch's own.
func TestFetchContextCauseWithoutDone(t *testing.T) {
	for _, cancellable := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			c := NewClient()
			var cause, err error
			q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
				for ctx.Err() == nil {
					time.Sleep(time.Second)
				}
				err, cause = ctx.Err(), context.Cause(ctx)
				return p, nil
			})
			ctx := context.Background()
			if cancellable {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
			}
			var getErr error
			var wg sync.WaitGroup
			wg.Go(func() { _, getErr = q.Get(ctx, "a") })
			time.Sleep(10 * time.Second)
			require.NoError(t, c.Close())
			wg.Wait()
			assert.ErrorIs(t, getErr, ErrClosed, "cancellable %v", cancellable)
			assert.ErrorIs(t, err, context.Canceled, "cancellable %v", cancellable)
			assert.ErrorIs(t, cause, ErrClosed, "cancellable %v", cancellable)
		})
	}
}

// TestStressFetchContext: goroutines ask a fetch's context for Done,
// derive children and AfterFuncs and ask for its cause while another
// cancels it. Run it with -race: every child must end, every AfterFunc
// run, and every cause seen after the end be the first cancel's.
func TestStressFetchContext(t *testing.T) {
	var intKey int
	for range 200 {
		f := newTestFetchCtx(&intKey)
		const workers = 4
		var wg sync.WaitGroup
		var fired sync.WaitGroup
		fired.Add(workers / 4)
		children := make([]context.Context, workers)
		seen := make([]error, workers)
		cancels := make([]context.CancelFunc, workers)
		for i := range workers {
			wg.Go(func() {
				switch i % 4 {
				case 0:
					<-f.Done()
				case 1:
					var cancel context.CancelFunc
					children[i], cancel = context.WithCancel(f)
					cancels[i] = cancel
				case 2:
					for f.Err() == nil {
						_ = f.Value(fetchCtxTestKey{})
						runtime.Gosched()
					}
				case 3:
					context.AfterFunc(f, fired.Done)
				}
				seen[i] = context.Cause(f)
			})
		}
		wg.Go(func() { f.cancel(ErrClosed) })
		wg.Go(func() { f.cancel(context.Canceled) })
		wg.Wait()
		cause := f.causeErr()
		require.True(t, cause == ErrClosed || cause == context.Canceled, "cause %v", cause)
		assert.Equal(t, cause, context.Cause(f))
		for _, err := range seen {
			if err != nil {
				assert.Equal(t, cause, err, "a cause seen before the end of the cancels")
			}
		}
		for _, ch := range children {
			if ch != nil {
				<-ch.Done()
				assert.Equal(t, cause, context.Cause(ch))
			}
		}
		fired.Wait() // every AfterFunc runs
		for _, cancel := range cancels {
			if cancel != nil {
				cancel()
			}
		}
	}
}

// A miss allocates its fetchOp whole, contexts and all: for a T of one
// word it must stay in the 256-byte size class (the next is 288).
func TestFetchOpSize(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(fetchOp[int]{}), uintptr(256))
}
