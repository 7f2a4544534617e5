package querystats

import (
	"context"
	"testing"

	"github.com/qcache-go/qcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestByNameAddsUpAcrossClients(t *testing.T) {
	f := func(_ context.Context, p int) (int, error) { return p, nil }
	var clients []*qcache.Client
	for range 2 {
		c := qcache.NewClient()
		defer c.Close()
		clients = append(clients, c)
		a := qcache.NewQueryFunc(c, qcache.Key{"a"}, f)
		b := qcache.NewQueryFunc(c, qcache.Key{"b"}, f, qcache.QueryName("a")) // shares a's name
		z := qcache.NewQueryFunc(c, qcache.Key{"z"}, f)
		for _, q := range []*qcache.Query[int, int]{a, b, z} {
			_, err := q.Get(context.Background(), 1)
			require.NoError(t, err)
		}
	}
	names, sums := ByName(clients)
	assert.Equal(t, []string{"a", "z"}, names)
	assert.Equal(t, uint64(4), sums["a"].Misses, "two queries named a in two clients")
	assert.Equal(t, uint64(4), sums["a"].FetchSuccesses)
	assert.Equal(t, 4, sums["a"].Entries)
	assert.Equal(t, uint64(2), sums["z"].Fetches)
}
