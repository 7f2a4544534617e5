package main

import (
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sample = `goos: linux
BenchmarkW1Hot/qcache-2         	56757486	        21.47 ns/op	       0 B/op	       0 allocs/op
BenchmarkCurve/qcache/n=10000-2 	1	900000000 ns/op	280.0 B/entry	40.00 hit-ns	1500 miss-ns	20.00 call-ns	50000 gc-p99-ns	20.00 gc-pauses	2000000 gc-cycle-ns	200000 invalidate-ns
BenchmarkCurve/qcache/n=10000-2 	1	900000000 ns/op	290.0 B/entry	60.00 hit-ns	1700 miss-ns	20.00 call-ns	70000 gc-p99-ns	20.00 gc-pauses	4000000 gc-cycle-ns	400000 invalidate-ns
BenchmarkCurve/qcache/n=1000000-2 	1	9000000000 ns/op	300.0 B/entry	150.0 hit-ns	2500 miss-ns	100.0 call-ns	90000 gc-p99-ns	20.00 gc-pauses	300000000 gc-cycle-ns	300000000 invalidate-ns
BenchmarkCurve/otter/n=10000-2 	1	900000000 ns/op	55.00 B/entry	120.0 hit-ns	900.0 miss-ns	20.00 call-ns	40000 gc-p99-ns	20.00 gc-pauses	1000000 gc-cycle-ns	250000 invalidate-ns
BenchmarkCurve/otter/n=1000000-2 	1	9000000000 ns/op	56.00 B/entry	200.0 hit-ns	1100 miss-ns	100.0 call-ns	60000 gc-p99-ns	20.00 gc-pauses	100000000 gc-cycle-ns	280000000 invalidate-ns
PASS
`

func TestRun(t *testing.T) {
	out := t.TempDir()
	var stdout strings.Builder
	require.NoError(t, run(out, []io.Reader{strings.NewReader(sample)}, &stdout))

	md, err := os.ReadFile(filepath.Join(out, "curves.md"))
	require.NoError(t, err)
	assert.Equal(t, string(md), stdout.String())
	for _, want := range []string{
		"| Curve | Library | 10k entries | 1M entries |",
		"| Hit latency (uniform reads, one reader per CPU) | qcache | 50.0 ns | 150 ns |", // median of 40 and 60
		"| Miss overhead (a cold key, the fetch answers at once) | otter v2 | 880 ns | 1000 ns |",
		"| Memory per entry (beyond the keys' and values' bytes) | qcache | 285 B | 300 B |",
		"| GC pause p99 (forced GCs, readers running) | qcache | 60.0 µs | 90.0 µs |",
		"| Full GC cycle with the cache live | otter v2 | 1.00 ms | 100 ms |",
		"| Invalidate a prefix (1% of the entries) | qcache | 0.30 ms | 300 ms |",
		"Medians of 2 rounds (1 at 1M).",
	} {
		assert.Contains(t, string(md), want)
	}
	assert.NotContains(t, string(md), "sturdyc", "no sturdyc lines in the input")

	for _, c := range curves {
		f, err := os.Open(filepath.Join(out, c.file))
		require.NoError(t, err, c.file)
		img, err := png.Decode(f)
		f.Close()
		require.NoError(t, err, c.file)
		assert.Greater(t, img.Bounds().Dx(), 400, c.file)
	}
}

func TestRunNoResults(t *testing.T) {
	err := run(t.TempDir(), []io.Reader{strings.NewReader("BenchmarkW1Hot/qcache-2 1 2 ns/op\n")}, io.Discard)
	assert.ErrorContains(t, err, "no BenchmarkCurve results")
}

func TestRounds(t *testing.T) {
	one := map[string]float64{"hit-ns": 1}
	res := runs{"qcache": {10_000: {one, one, one}, 1_000_000: {one}}, "otter": {10_000: {one}}}
	assert.Equal(t, "3 rounds (1 at 1M)", res.rounds())
	assert.Equal(t, "1 round", runs{"qcache": {10_000: {one}}}.rounds())
}

func TestEntries(t *testing.T) {
	assert.Equal(t, "10k", entries(10_000))
	assert.Equal(t, "1M", entries(1_000_000))
	assert.Equal(t, "1500", entries(1_500))
	assert.Equal(t, "2500k", entries(2_500_000))
}
