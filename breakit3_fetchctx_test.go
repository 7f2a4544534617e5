package qcache

// Tests a third reviewer wrote to break the fetch's own contexts
// (fetchctx.go): the lazily armed fetch context and the attempt's context
// with its lazy Timeout deadline. Each comment names the rule that the
// test holds the code to: the context.Context contract, or the
// fetchctx.go doc comment ("does what context.WithCancelCause /
// context.WithDeadline would").

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ctxBox hands a context from a fetch function to the test goroutine.
type ctxBox struct {
	v atomic.Pointer[context.Context]
}

func (b *ctxBox) set(ctx context.Context) { b.v.Store(&ctx) }
func (b *ctxBox) get() context.Context {
	if p := b.v.Load(); p != nil {
		return *p
	}
	return nil
}

// context.Context: "After Err returns a non-nil error, successive calls to
// Err return the same error." An attempt's context that its function kept
// (a goroutine it left behind, a logger) after the attempt returned says
// context.Canceled, as the WithTimeout-plus-deferred-cancel it stands for
// would. While the fetch goes on (here: in its retry wait), the attempt's
// deadline passes; the first Done then armed a context.WithDeadline whose
// deadline was already past, and Err turned into DeadlineExceeded. The
// first non-nil Err is now kept, and the context armed after it ends with
// it.
func TestBreak3KeptAttemptContextErrStaysAfterDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var kept ctxBox
		var calls atomic.Int32
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			if calls.Add(1) == 1 {
				kept.set(ctx)
				return "", errors.New("down")
			}
			return p, nil
		}, Timeout(time.Second), Retry(1), RetryDelay(func(int, error) time.Duration { return time.Minute }))
		q.Prefetch("a")
		synctest.Wait()
		ctx := kept.get()
		require.NotNil(t, ctx)
		first := ctx.Err()
		require.ErrorIs(t, first, context.Canceled, "the attempt has returned")
		time.Sleep(2 * time.Second) // past the attempt's Timeout; the fetch waits to retry
		assert.Equal(t, first, ctx.Err(), "Err before Done, after the deadline")
		<-ctx.Done()
		assert.Equal(t, first, ctx.Err(), "Err after Done must not change")
		assert.Equal(t, first, context.Cause(ctx))
	})
}

// The same rule the other way round: an attempt whose Timeout ran out
// while its function polled Err (no Done asked for) says
// DeadlineExceeded; when the fetch is then cancelled (Client.Cancel, the
// last waiter leaving, Close) before the function has noticed, Err of the
// same context turned into context.Canceled, because the unarmed Err
// asked the parent first (and Cause found the parent's cause). The context.WithDeadline it stands for stays
// DeadlineExceeded (with that cause): a function that classifies its
// error by ctx.Err() reports a cancellation for a timeout.
func TestBreak3AttemptContextErrStaysWhenFetchCancelledAfterTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewClient()
		defer c.Close()
		var before, after, causeAfter atomic.Value
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			time.Sleep(2 * time.Second) // deaf to ctx: its Timeout (1 s) passes
			before.Store(errString(ctx.Err()))
			time.Sleep(2 * time.Second) // meanwhile the fetch is cancelled
			after.Store(errString(ctx.Err()))
			causeAfter.Store(errString(context.Cause(ctx)))
			return p, nil
		}, Timeout(time.Second), Retry(0))
		q.Prefetch("a")
		time.Sleep(3 * time.Second)
		c.Cancel(Filter{})
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.Equal(t, context.DeadlineExceeded.Error(), before.Load())
		assert.Equal(t, before.Load(), after.Load(), "Err must not change once non-nil")
		assert.Equal(t, context.DeadlineExceeded.Error(), causeAfter.Load(), "the cause of an attempt that timed out")
	})
}
