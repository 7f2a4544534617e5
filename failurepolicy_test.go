package qcache

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStaleIfError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if n > 1 {
				return "", errors.New("down")
			}
			return value(n, p), nil
		})
		_, q := newFuncQuery(t, src, Retry(0), StaleIfError(time.Minute))
		ctx := context.Background()
		v, err := q.Get(ctx, "a")
		require.NoError(t, err)
		time.Sleep(30 * time.Second)
		v, err = q.Get(ctx, "a")
		require.NoError(t, err, "the refetch failed, the data is younger than a minute")
		assert.Equal(t, "v1:a", v)
		assert.Error(t, q.State("a").Err, "the entry still holds the error")
		time.Sleep(30 * time.Second)
		_, err = q.Get(ctx, "a")
		assert.Error(t, err, "a minute old: the error")
		assert.Equal(t, 3, src.count())

		dead, cancel := context.WithCancel(ctx)
		cancel()
		_, err = q.Get(dead, "a")
		assert.ErrorIs(t, err, context.Canceled, "a caller whose context ended gets that, not stale data")
	})
}

func TestCacheErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			if p == "missing" {
				return "", &HTTPError{StatusCode: http.StatusNotFound}
			}
			return "", errors.New("down")
		})
		_, q := newFuncQuery(t, src, Retry(0), CacheErrors(10*time.Second, nil))
		ctx := context.Background()
		for range 5 {
			_, err := q.Get(ctx, "missing")
			var he *HTTPError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, 404, he.StatusCode)
		}
		assert.Equal(t, 1, src.count(), "five Gets of a 404 key make one request")
		time.Sleep(10 * time.Second)
		q.Get(ctx, "missing")
		assert.Equal(t, 2, src.count(), "the cached error expired")
		q.Get(ctx, "other")
		q.Get(ctx, "other")
		assert.Equal(t, 4, src.count(), "errors the match does not take are not cached")
	})
}

func TestRetryIf(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var counts []int
		src := newSource(func(ctx context.Context, n int, p string) (string, error) {
			return "", &DecodeError{Err: errors.New("junk")} // not retryable by the default rule
		})
		_, q := newFuncQuery(t, src, Retry(0), RetryDelay(func(int, error) time.Duration { return time.Second }),
			RetryIf(func(failureCount int, err error) bool {
				mu.Lock()
				counts = append(counts, failureCount)
				mu.Unlock()
				var de *DecodeError
				return failureCount < 2 && errors.As(err, &de)
			}))
		_, err := q.Get(context.Background(), "a")
		require.Error(t, err)
		assert.Equal(t, 3, src.count(), "RetryIf decides, over Retry(0) and the default rule")
		assert.Equal(t, []int{0, 1, 2}, counts)
		assert.Equal(t, 3, q.State("a").FailureCount)
	})
}

func TestUpdateExisting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q := newFuncQuery(t, newSource(slowValue(0)))
		assert.False(t, q.UpdateExisting("a", func(old string) string { return old + "!" }))
		assert.Equal(t, 0, c.Stats().Entries, "no entry invented")
		q.SetData("a", "x")
		assert.True(t, q.UpdateExisting("a", func(old string) string { return old + "!" }))
		v, _ := q.Peek("a")
		assert.Equal(t, "x!", v)
		q.Prefetch("b") // an entry without data yet
		assert.False(t, q.UpdateExisting("b", func(old string) string { return "no" }))
	})
}
