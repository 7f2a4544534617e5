// Package benchfmt reads the result lines of `go test -bench` output, for
// bench's commands (table, curves).
package benchfmt

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"strings"
)

// A Line is one benchmark result: its name as printed (with the -cpu
// suffix), its iteration count, and its values by unit ("ns/op",
// "B/entry").
type Line struct {
	Name   string
	N      int
	Values map[string]float64
}

// Parse calls f with each result line of r, in order. Other lines (goos,
// PASS, logs) are skipped, and so are values that are not numbers.
func Parse(r io.Reader, f func(Line)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || len(fs)%2 != 0 || !strings.HasPrefix(fs[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(fs[1])
		if err != nil {
			continue
		}
		l := Line{Name: fs[0], N: n, Values: map[string]float64{}}
		for i := 2; i+1 < len(fs); i += 2 {
			if v, err := strconv.ParseFloat(fs[i], 64); err == nil {
				l.Values[fs[i+1]] = v
			}
		}
		f(l)
	}
	return sc.Err()
}

// Median returns the median of xs (the mean of the middle two when their
// number is even); xs is not changed. It panics when xs is empty.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
