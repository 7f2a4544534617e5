package qcache

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type joinTagKey struct{}

// joinLog is a Hooks that records each call with its name, and tags the
// fetch's context with name in FetchStart.
func joinLog(name string, mu *sync.Mutex, calls *[]string) Hooks {
	add := func(s string) {
		mu.Lock()
		*calls = append(*calls, name+" "+s)
		mu.Unlock()
	}
	return Hooks{
		FetchStart: func(ctx context.Context, f FetchInfo) context.Context {
			prev, _ := ctx.Value(joinTagKey{}).(string)
			add("start after " + prev)
			return context.WithValue(ctx, joinTagKey{}, prev+name)
		},
		FetchEnd: func(ctx context.Context, f FetchResult) {
			tag, _ := ctx.Value(joinTagKey{}).(string)
			add("end " + f.Outcome.String() + " ctx=" + tag)
		},
		Retry: func(ctx context.Context, f FetchInfo, err error, d time.Duration) {
			tag, _ := ctx.Value(joinTagKey{}).(string)
			add("retry ctx=" + tag)
		},
		Evicted: func(e EvictInfo) { add("evicted " + e.Reason.String()) },
	}
}

func TestJoinHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var calls []string
		var ends int
		c := NewClient(WithHooks(JoinHooks(
			joinLog("a", &mu, &calls),
			Hooks{}, // nothing set: skipped
			joinLog("b", &mu, &calls),
			Hooks{FetchEnd: func(context.Context, FetchResult) { mu.Lock(); ends++; mu.Unlock() }},
		)))
		defer c.Close()
		var fails int
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			assert.Equal(t, "ab", ctx.Value(joinTagKey{}), "the fetch function gets the last FetchStart's context")
			if fails++; fails == 1 {
				return "", errors.New("once")
			}
			return p, nil
		}, Retry(1), RetryDelay(func(int, error) time.Duration { return time.Second }))
		_, err := q.Get(context.Background(), "x")
		require.NoError(t, err)
		synctest.Wait()
		q.Remove("x")
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{
			"a start after ", "b start after a",
			"a retry ctx=ab", "b retry ctx=ab",
			"a end success ctx=ab", "b end success ctx=ab",
			"a evicted remove", "b evicted remove",
		}, calls)
		assert.Equal(t, 1, ends)
	})
}

func TestJoinHooksLeavesUnsetFieldsNil(t *testing.T) {
	assert.Equal(t, Hooks{}, JoinHooks())
	assert.Equal(t, Hooks{}, JoinHooks(Hooks{}, Hooks{}))
	resync := func() {}
	j := JoinHooks(Hooks{}, Hooks{BusResync: resync})
	assert.Nil(t, j.FetchStart)
	assert.Nil(t, j.WSMessage)
	assert.Equal(t, reflect.ValueOf(resync).Pointer(), reflect.ValueOf(j.BusResync).Pointer(),
		"a hook set by one only is used as it is")
}

func TestJoinHooksCallsEveryField(t *testing.T) {
	var n int
	one := Hooks{
		FetchStart:      func(context.Context, FetchInfo) context.Context { n++; return nil },
		FetchEnd:        func(context.Context, FetchResult) { n++ },
		Retry:           func(context.Context, FetchInfo, error, time.Duration) { n++ },
		Evicted:         func(EvictInfo) { n++ },
		ObserverAdded:   func(string, Key) { n++ },
		ObserverRemoved: func(string, Key) { n++ },
		WSConnected:     func(string) { n++ },
		WSDropped:       func(string, error) { n++ },
		WSMessage:       func(string, int, error) { n++ },
		BusPublished:    func(EventKind) { n++ },
		BusReceived:     func(EventKind) { n++ },
		BusDropped:      func(EventKind, string) { n++ },
		BusResync:       func() { n++ },
	}
	j := JoinHooks(one, one, one)
	ctx := context.Background()
	assert.Equal(t, ctx, j.FetchStart(ctx, FetchInfo{}), "FetchStart hooks that return nil keep the context")
	j.FetchEnd(ctx, FetchResult{})
	j.Retry(ctx, FetchInfo{}, nil, 0)
	j.Evicted(EvictInfo{})
	j.ObserverAdded("q", nil)
	j.ObserverRemoved("q", nil)
	j.WSConnected("u")
	j.WSDropped("u", nil)
	j.WSMessage("u", 1, nil)
	j.BusPublished(EventInvalidate)
	j.BusReceived(EventInvalidate)
	j.BusDropped(EventInvalidate, "r")
	j.BusResync()
	assert.Equal(t, 13*3, n)
}
