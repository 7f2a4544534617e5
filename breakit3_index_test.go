package qcache

// Regression tests a third reviewer wrote for the key index
// (keyindex.go): they passed on the code they were written against.

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The key index skips whole queries whose static prefix cannot match a
// filter (Filter.mayMatch) and files entries below that prefix, so the
// prefix must be exactly what the query's keys start with, however the
// template spells its literal segments: escaped bytes, doubled slashes,
// an absolute URL, the {name} form. Every entry is found by its own key,
// exactly and as a prefix, and by its key's parent.
func TestBreak3IndexFindsKeysOfOddTemplates(t *testing.T) {
	c := NewClient(WithBaseURL("http://127.0.0.1:1"))
	defer c.Close()
	for _, u := range []string{"/caf%C3%A9/$id", "/a//b/$id", "http://h:1/x/$id", "/A%2fB/$id",
		"/users/{id}", "/a+b/$id", "/%61/$id", "/v1/users/$id/posts", "/list/$id?sort=x"} {
		q := NewQuery[string, string](c, Endpoint{URL: u})
		for _, id := range []string{"7", "a b", "x/y", "%2E"} {
			key := q.Key(id)
			if len(key) == 0 {
				continue // refused value
			}
			q.SetData(id, "v")
			for _, f := range []Filter{
				{Key: key, Exact: true, Refetch: RefetchNone},
				{Key: key, Refetch: RefetchNone},
				{Key: key[:len(key)-1], Refetch: RefetchNone},
			} {
				q.SetData(id, "v")
				require.False(t, q.State(id).IsInvalidated)
				require.NoError(t, c.Invalidate(context.Background(), f))
				assert.True(t, q.State(id).IsInvalidated, "%s with %q: filter %q exact %v", u, id, f.Key, f.Exact)
				assert.Contains(t, c.Keys(f), key, "%s with %q: Keys(%q)", u, id, f.Key)
			}
		}
	}
}
