package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sample = `goos: linux
BenchmarkW1Hot/qcache         	 8166316	        30.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/qcache         	 8166316	        20.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/qcache         	 8166316	        25.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/otter          	 1603438	       145.1 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/syncmap        	 5791425	        20.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/qcache-2       	 4461734	        68.12 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/sfmap-2        	 4461734	        50.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkW1Hot/syncmap-2      	16103367	        16.68 ns/op	       0 B/op	       0 allocs/op
BenchmarkW2Storm/qcache-2 	    1000	   3821186 ns/op	         2.313 fetch-ms	         1.000 fetches/storm	         2.863 ms/storm	  382528 B/op	    1579 allocs/op
BenchmarkW3Memory/qcache-2         	       1	1303133961 ns/op	       769.2 B/entry
BenchmarkW6Polling/qcache-2         	       1	 862396863 ns/op	      3000 B/observer	         1.000 goroutines/observer	      2048 stack-B/observer
BenchmarkW6Polling/qcache/after-deep-2         	       1	 862396863 ns/op	      3300 B/observer	  3500 B/observer+entry	         1.000 goroutines/observer	      2048 stack-B/observer
BenchmarkW6Polling/floor-2         	       1	 197694183 ns/op	      2815 B/observer	         1.000 goroutines/observer	      2048 stack-B/observer	      2048 start-stack-B
BenchmarkCurve/qcache/n=1000000-2 	1	9000000000 ns/op	300.0 B/entry	150.0 hit-ns	2500 miss-ns	100.0 call-ns
BenchmarkCurve/qcache/n=1000000-2 	1	9000000000 ns/op	310.0 B/entry	170.0 hit-ns	2500 miss-ns	100.0 call-ns
BenchmarkCurve/qcache/n=10000-2 	1	9000000000 ns/op	100.0 B/entry	50.0 hit-ns	2500 miss-ns	100.0 call-ns
PASS
`

func TestRender(t *testing.T) {
	res := results{}
	require.NoError(t, parse(strings.NewReader(sample), res))
	got, _, _ := res.get("W1Hot/qcache", 1, "ns/op")
	assert.Equal(t, 25.0, got, "median of W1Hot/qcache at -cpu=1")
	var b strings.Builder
	render(&b, res)
	out := b.String()
	for _, want := range []string{
		"| W1 hit, one hot key, -cpu=1 | qcache | 25.0 ns/Get (20.0 ns–30.0 ns) | 1.25× |",
		"| **met** |", // qcache at -cpu=1: 1.25× the limit and faster than otter
		"**SHORT**: 4.08× the limit, slower than singleflight + sync.Map",
		"| 1.000 fetches/storm; 2.86 ms/storm | 1.24× the fetch (2.31 ms) |",
		"769 B/entry", "**SHORT**: 4.8× the target",
		"3000 B/observer",
		"| 3300 B/observer; 3500 B with its entry |", "| ≤ 3 KiB with its entry | **SHORT**: 1.1× the target |",
		"| W7 1M entries: memory, hit latency | qcache | 305 B/entry; 160.0 ns/Get |",
		"| goroutine + channel | 2815 B/subscriber |  | 2048 B of stack |  | leaves 257 B of the 3 KiB for the entry and the observer |",
	} {
		assert.Contains(t, out, want, "the table")
	}
}
