// Command curves reads the output of bench's BenchmarkCurve (go test
// -bench, any number of rounds, in any order; other benchmarks' lines are
// skipped) and writes the scaling curves: one PNG chart per curve, entries
// on a log scale across, one line per library, each point the median over
// the rounds; and curves.md, a markdown table of the same points. It
// prints the table too.
//
//	curves [-out dir] [file ...]   # standard input when no file is given
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/qcache-go/qcache/bench/internal/benchfmt"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// libs are the libraries in the order of the charts' legends and the
// table's rows, with their labels.
var libs = []struct{ name, label string }{
	{"qcache", "qcache"},
	{"otter", "otter v2"},
	{"sturdyc", "sturdyc"},
	{"sfmap", "singleflight + sync.Map"},
}

// A curve is one chart: a metric of BenchmarkCurve's output, scaled to the
// unit of its axis.
type curve struct {
	file  string // PNG file name
	title string
	axis  string // y axis label, with its unit
	cell  string // the table's unit after each value
	log   bool   // y on a log scale
	value func(m map[string]float64) (float64, bool)
}

// metric returns a curve's value function for one unit, divided by div.
func metric(unit string, div float64) func(map[string]float64) (float64, bool) {
	return func(m map[string]float64) (float64, bool) {
		v, ok := m[unit]
		return v / div, ok
	}
}

var curves = []curve{
	{
		file: "curve-hit.png", title: "Hit latency (uniform reads, one reader per CPU)",
		axis: "ns per Get", cell: "ns", value: metric("hit-ns", 1),
	},
	{
		file: "curve-miss.png", title: "Miss overhead (a cold key, the fetch answers at once)",
		axis: "ns per miss beyond a bare call of the fetch", cell: "ns",
		value: func(m map[string]float64) (float64, bool) {
			miss, ok1 := m["miss-ns"]
			call, ok2 := m["call-ns"]
			return miss - call, ok1 && ok2
		},
	},
	{
		file: "curve-memory.png", title: "Memory per entry (beyond the keys' and values' bytes)",
		axis: "bytes per entry", cell: "B", value: metric("B/entry", 1),
	},
	{
		file: "curve-gc-pause.png", title: "GC pause p99 (forced GCs, readers running)",
		axis: "µs (stop-the-world pause, p99)", cell: "µs", value: metric("gc-p99-ns", 1e3),
	},
	{
		file: "curve-gc-cycle.png", title: "Full GC cycle with the cache live",
		axis: "ms per runtime.GC()", cell: "ms", log: true, value: metric("gc-cycle-ns", 1e6),
	},
	{
		file: "curve-invalidate.png", title: "Invalidate a prefix (1% of the entries)",
		axis: "ms per invalidation", cell: "ms", log: true, value: metric("invalidate-ns", 1e6),
	},
}

// runs holds every BenchmarkCurve line: by library and number of entries,
// one map of unit to value per run.
type runs map[string]map[int][]map[string]float64

var curveLine = regexp.MustCompile(`^BenchmarkCurve/([^/\s]+)/n=(\d+)(?:-\d+)?$`)

func parse(r io.Reader, res runs) error {
	return benchfmt.Parse(r, func(l benchfmt.Line) {
		m := curveLine.FindStringSubmatch(l.Name)
		if m == nil {
			return
		}
		n, _ := strconv.Atoi(m[2])
		if res[m[1]] == nil {
			res[m[1]] = map[int][]map[string]float64{}
		}
		res[m[1]][n] = append(res[m[1]][n], l.Values)
	})
}

// point returns c's median over lib's runs at n entries.
func (res runs) point(c curve, lib string, n int) (float64, bool) {
	var vs []float64
	for _, m := range res[lib][n] {
		if v, ok := c.value(m); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	return benchfmt.Median(vs), true
}

// sizes returns every number of entries in res, in order.
func (res runs) sizes() []int {
	var ns []int
	for _, byN := range res {
		for n := range byN {
			if !slices.Contains(ns, n) {
				ns = append(ns, n)
			}
		}
	}
	slices.Sort(ns)
	return ns
}

// rounds says how many runs the points are medians of: "3 rounds", or
// "3 rounds (1 at 1M)" when some sizes have fewer (the most any library
// has at each size).
func (res runs) rounds() string {
	most := map[int]int{}
	for _, byN := range res {
		for n, rs := range byN {
			most[n] = max(most[n], len(rs))
		}
	}
	top := 0
	for _, k := range most {
		top = max(top, k)
	}
	var fewer []string
	for _, n := range res.sizes() {
		if most[n] < top {
			fewer = append(fewer, fmt.Sprintf("%d at %s", most[n], entries(n)))
		}
	}
	s := fmt.Sprintf("%d round", top)
	if top != 1 {
		s += "s"
	}
	if len(fewer) > 0 {
		s += " (" + strings.Join(fewer, ", ") + ")"
	}
	return s
}

// entries writes n for people: 10k, 100k, 1M.
func entries(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return strconv.Itoa(n)
}

func number(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// table writes the markdown table of every curve's points.
func table(w io.Writer, res runs) int {
	ns := res.sizes()
	head := []string{"Curve", "Library"}
	for _, n := range ns {
		head = append(head, entries(n)+" entries")
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(head)))
	rows := 0
	for _, c := range curves {
		for _, lib := range libs {
			cells := []string{c.title, lib.label}
			some := false
			for _, n := range ns {
				v, ok := res.point(c, lib.name, n)
				if !ok {
					cells = append(cells, "")
					continue
				}
				some = true
				cells = append(cells, number(v)+" "+c.cell)
			}
			if some {
				fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
				rows++
			}
		}
	}
	return rows
}

// chart draws c: entries across on a log scale, one line per library.
func chart(c curve, res runs, rounds string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = "entries (log scale); medians of " + rounds
	p.Y.Label.Text = c.axis
	p.X.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, n := range res.sizes() {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: entries(n)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if c.log {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text += " (log scale)"
	} else {
		p.Y.Min = 0
		p.Y.Tick.Marker = plot.TickerFunc(niceTicks)
	}
	p.Add(plotter.NewGrid())
	// The lines rise to the right: the legend goes top left on a log
	// scale, top right on a linear one, where room is made above them.
	p.Legend.Top = true
	p.Legend.Left = c.log
	p.Legend.XOffs = -vg.Length(8)
	if c.log {
		p.Legend.XOffs = vg.Length(16)
	}
	var lines []any
	for _, lib := range libs {
		var xys plotter.XYs
		for _, n := range res.sizes() {
			if v, ok := res.point(c, lib.name, n); ok && (!c.log || v > 0) {
				xys = append(xys, plotter.XY{X: float64(n), Y: v})
			}
		}
		if len(xys) > 0 {
			lines = append(lines, lib.label, xys)
		}
	}
	if len(lines) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	if !c.log {
		p.Y.Max *= 1.4 // room for the legend above the highest point
	}
	return p, nil
}

// niceTicks labels about five round values between min and max (steps of
// 1, 2 or 5 times a power of ten) and marks the halves between them.
func niceTicks(min, max float64) []plot.Tick {
	span := max - min
	if span <= 0 {
		return []plot.Tick{{Value: min, Label: strconv.FormatFloat(min, 'g', -1, 64)}}
	}
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{2, 5, 10} {
		if span/step <= 6 {
			break
		}
		step = math.Pow(10, math.Floor(math.Log10(span/5))) * m
	}
	var ticks []plot.Tick
	for v := math.Ceil(min/step) * step; v <= max+step/1e6; v += step / 2 {
		t := plot.Tick{Value: v}
		if k := math.Round(v / step * 2); int(k)%2 == 0 {
			t.Label = strconv.FormatFloat(math.Round(v/step)*step, 'g', 6, 64)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

func run(out string, inputs []io.Reader, stdout io.Writer) error {
	res := runs{}
	for _, r := range inputs {
		if err := parse(r, res); err != nil {
			return err
		}
	}
	if len(res) == 0 {
		return fmt.Errorf("no BenchmarkCurve results in the input")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	table(&md, res)
	fmt.Fprintf(&md, "\nMedians of %s.\n", res.rounds())
	if err := os.WriteFile(filepath.Join(out, "curves.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	for _, c := range curves {
		p, err := chart(c, res, res.rounds())
		if err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		if p == nil {
			continue
		}
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(out, c.file)); err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
	}
	_, err := io.WriteString(stdout, md.String())
	return err
}

func main() {
	out := flag.String("out", "results", "directory to write the charts and curves.md into")
	flag.Parse()
	var inputs []io.Reader
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "curves:", err)
			os.Exit(1)
		}
		defer f.Close()
		inputs = append(inputs, f)
	}
	if len(inputs) == 0 {
		inputs = append(inputs, os.Stdin)
	}
	if err := run(*out, inputs, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "curves:", err)
		os.Exit(1)
	}
}
