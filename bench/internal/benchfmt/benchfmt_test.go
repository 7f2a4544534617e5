package benchfmt

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	const out = `goos: linux
BenchmarkW1Hot/qcache-2   	 4461734	        68.12 ns/op	       0 B/op	       0 allocs/op
BenchmarkOdd-2 	 100	 12 ns/op	 7
BenchmarkNotCount-2 	 x	 12 ns/op
    some_test.go:12: a log line
BenchmarkCurve/qcache/n=10000-2 	1	9000000000 ns/op	100.0 B/entry	bad hit-ns
PASS
`
	var got []Line
	require.NoError(t, Parse(strings.NewReader(out), func(l Line) { got = append(got, l) }))
	require.Len(t, got, 2)
	assert.Equal(t, Line{Name: "BenchmarkW1Hot/qcache-2", N: 4461734,
		Values: map[string]float64{"ns/op": 68.12, "B/op": 0, "allocs/op": 0}}, got[0])
	assert.Equal(t, Line{Name: "BenchmarkCurve/qcache/n=10000-2", N: 1,
		Values: map[string]float64{"ns/op": 9e9, "B/entry": 100}}, got[1], "a value that is not a number is skipped")
}

func TestMedian(t *testing.T) {
	xs := []float64{3, 1, 2}
	assert.Equal(t, 2.0, Median(xs))
	assert.Equal(t, []float64{3, 1, 2}, xs, "xs is not changed")
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
}
