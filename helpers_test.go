package qcache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/qcache-go/qcache/internal/wait"
)

// source is a fake upstream for NewQueryFunc: it records when each call
// started (virtual time since the test began) and answers through fn.
type source struct {
	t0    time.Time
	mu    sync.Mutex
	calls []time.Duration
	fn    func(ctx context.Context, n int, p string) (string, error)
}

func newSource(fn func(ctx context.Context, n int, p string) (string, error)) *source {
	return &source{t0: time.Now(), fn: fn}
}

func (s *source) fetch(ctx context.Context, p string) (string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, time.Since(s.t0))
	n := len(s.calls)
	s.mu.Unlock()
	return s.fn(ctx, n, p)
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *source) starts() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.calls...)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if !wait.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// slowValue answers "v<n>:<p>" after d.
func slowValue(d time.Duration) func(ctx context.Context, n int, p string) (string, error) {
	return func(ctx context.Context, n int, p string) (string, error) {
		if err := sleepCtx(ctx, d); err != nil {
			return "", err
		}
		return value(n, p), nil
	}
}

func value(n int, p string) string { return "v" + itoa(n) + ":" + p }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func secs(ss ...float64) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = time.Duration(s * float64(time.Second))
	}
	return out
}

// newFuncQuery returns a client and a query over src, closed when t ends.
func newFuncQuery(t *testing.T, src *source, opts ...QueryOption) (*Client, *Query[string, string]) {
	t.Helper()
	c := NewClient()
	t.Cleanup(func() { c.Close() })
	return c, NewQueryFunc(c, Key{"items"}, src.fetch, opts...)
}
