// Command table reads the output of bench's benchmarks (go test -bench, any
// number of rounds, in any order) and prints one markdown table: the median
// of each workload and library over the rounds, W1's ratio to the bare
// sync.Map limit, whether qcache meets the targets of issues 7 and 17, and W7, the
// 1,000,000-entry point of the scaling curves.
//
//	table [file ...]   # standard input when no file is given
package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/qcache-go/qcache/bench/internal/benchfmt"
)

// key names one benchmark result: the name without the "Benchmark" prefix
// and the -cpu suffix ("W1Hot/qcache"), the GOMAXPROCS it ran with, and the
// unit of the value.
type key struct {
	name string
	cpu  int
	unit string
}

type results map[key][]float64

var cpuSuffix = regexp.MustCompile(`-(\d+)$`)

func parse(r io.Reader, res results) error {
	return benchfmt.Parse(r, func(l benchfmt.Line) {
		name, cpu := strings.TrimPrefix(l.Name, "Benchmark"), 1
		if m := cpuSuffix.FindStringSubmatch(name); m != nil {
			cpu, _ = strconv.Atoi(m[1])
			name = strings.TrimSuffix(name, m[0])
		}
		for unit, v := range l.Values {
			k := key{name, cpu, unit}
			res[k] = append(res[k], v)
		}
	})
}

// get returns the median of name's unit at any cpu when cpu is 0.
func (res results) get(name string, cpu int, unit string) (float64, []float64, bool) {
	var all []float64
	for k, v := range res {
		if k.name == name && k.unit == unit && (cpu == 0 || k.cpu == cpu) {
			all = append(all, v...)
		}
	}
	if len(all) == 0 {
		return 0, nil, false
	}
	return benchfmt.Median(all), all, true
}

func dur(ns float64) string {
	switch {
	case ns < 1e3:
		return fmt.Sprintf("%.1f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	case ns < 1e9:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	}
	return fmt.Sprintf("%.2f s", ns/1e9)
}

const (
	qcache = "qcache"
	limit  = "syncmap"
)

var (
	peers  = []string{"otter", "sturdyc", "sfmap"}
	labels = map[string]string{
		"qcache":  "qcache",
		"otter":   "otter v2",
		"sturdyc": "sturdyc",
		"sfmap":   "singleflight + sync.Map",
		"syncmap": "sync.Map.Load (limit)",
	}
)

type table struct {
	w    io.Writer
	rows int
}

func (t *table) row(cells ...string) {
	fmt.Fprintf(t.w, "| %s |\n", strings.Join(cells, " | "))
	t.rows++
}

func (t *table) na(workload, why string) {
	t.row(workload, "otter v2, sturdyc, singleflight + sync.Map", "n/a", "", "", "", why)
}

func allocs(res results, name string, cpu int) string {
	b, _, okB := res.get(name, cpu, "B/op")
	a, _, okA := res.get(name, cpu, "allocs/op")
	if !okB || !okA {
		return ""
	}
	return fmt.Sprintf("%.0f B, %.0f allocs", b, a)
}

func render(w io.Writer, res results) int {
	t := &table{w: w}
	fmt.Fprintln(w, "| Workload | Library | Median | vs limit | per op | Target | Status |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")

	// W1: ns per Get at each GOMAXPROCS, against the limit and the peers.
	for _, v := range []struct{ bench, label string }{{"W1Hot", "W1 hit, one hot key"}, {"W1Zipf", "W1 hit, zipf over 16k keys"}} {
		for _, cpu := range []int{1, 2} {
			lim, _, okLim := res.get(v.bench+"/"+limit, cpu, "ns/op")
			if !okLim {
				continue
			}
			wl := fmt.Sprintf("%s, -cpu=%d", v.label, cpu)
			for _, lib := range append(append([]string{qcache}, peers...), limit) {
				name := v.bench + "/" + lib
				ns, all, ok := res.get(name, cpu, "ns/op")
				if !ok {
					continue
				}
				cell := fmt.Sprintf("%s/Get (%s–%s)", dur(ns), dur(slices.Min(all)), dur(slices.Max(all)))
				ratio := fmt.Sprintf("%.2f×", ns/lim)
				target, status := "", ""
				switch lib {
				case qcache:
					target = "≤ 2× limit, faster than every peer"
					var short []string
					if ns > 2*lim {
						short = append(short, fmt.Sprintf("%.2f× the limit", ns/lim))
					}
					for _, p := range peers {
						if pns, _, ok := res.get(v.bench+"/"+p, cpu, "ns/op"); ok && pns <= ns {
							short = append(short, "slower than "+labels[p])
						}
					}
					status = "**met**"
					if len(short) > 0 {
						status = "**SHORT**: " + strings.Join(short, ", ")
					}
				case limit:
					ratio, status = "1×", "the limit"
				}
				t.row(wl, labels[lib], cell, ratio, allocs(res, name, cpu), target, status)
			}
		}
	}

	// W2: fetches per storm (every round must be exactly one for qcache) and
	// wall time against the fetch's own time.
	for _, lib := range append([]string{qcache}, peers...) {
		name := "W2Storm/" + lib
		f, all, ok := res.get(name, 0, "fetches/storm")
		if !ok {
			continue
		}
		ms, _, _ := res.get(name, 0, "ms/storm")
		fms, _, _ := res.get(name, 0, "fetch-ms")
		cell := fmt.Sprintf("%.3f fetches/storm; %.2f ms/storm", f, ms)
		vs := fmt.Sprintf("%.2f× the fetch (%.2f ms)", ms/fms, fms)
		target, status := "", ""
		if lib == qcache {
			target = "exactly 1 fetch/storm"
			status = "**met**"
			if lo, hi := slices.Min(all), slices.Max(all); lo != 1 || hi != 1 {
				status = fmt.Sprintf("**SHORT**: %.3f to %.3f fetches/storm", lo, hi)
			}
		}
		t.row("W2 miss storm, 512 goroutines, 2 ms fetch", labels[lib], cell, vs, "", target, status)
	}

	// W3: bytes per entry.
	for _, lib := range append([]string{qcache}, peers...) {
		b, _, ok := res.get("W3Memory/"+lib, 0, "B/entry")
		if !ok {
			continue
		}
		target, status := "", ""
		if lib == qcache {
			target = "≤ 160 B/entry"
			status = "**met**"
			if b > 160 {
				status = fmt.Sprintf("**SHORT**: %.1f× the target", b/160)
			}
		}
		t.row("W3 memory per entry at 100,000", labels[lib], fmt.Sprintf("%.0f B/entry", b), "", "", target, status)
	}

	// W4: notification latency, qcache only.
	w4 := false
	for _, n := range []int{1, 100, 10_000} {
		name := fmt.Sprintf("W4Notify/%s/observers=%d", qcache, n)
		ns, _, ok := res.get(name, 0, "ns/op")
		if !ok {
			continue
		}
		w4 = true
		t.row(fmt.Sprintf("W4 SetData → %d observer(s) notified", n), labels[qcache], dur(ns), "", allocs(res, name, 0), "", "")
	}
	if w4 {
		t.na("W4 SetData → observers notified", "no observers")
	}

	// W5: time to end the freshness of 1% of 100,000 entries by prefix.
	for _, lib := range append([]string{qcache}, peers...) {
		name := "W5Invalidate/" + lib
		ns, _, ok := res.get(name, 0, "ns/op")
		if !ok {
			continue
		}
		how := "delete while iterating"
		switch lib {
		case qcache:
			how = "mark stale (Invalidate, RefetchNone)"
		case "sturdyc":
			how = "ScanKeys, then Delete"
		}
		t.row("W5 invalidate a prefix (1% of 100,000)", labels[lib], dur(ns), "", allocs(res, name, 0), "", how)
	}

	// W6: footprint per polling observer, qcache only.
	// The target (issue 17) counts the observer's entry too.
	for _, run := range []struct{ name, label string }{
		{"W6Polling/" + qcache, "W6 footprint per polling observer (10,000)"},
		{"W6Polling/" + qcache + "/after-deep", "W6 footprint per polling observer (10,000), after 100,000 deep goroutines"},
	} {
		b, _, ok := res.get(run.name, 0, "B/observer")
		if !ok {
			continue
		}
		g, _, _ := res.get(run.name, 0, "goroutines/observer")
		st, _, _ := res.get(run.name, 0, "stack-B/observer")
		cell, target, status := fmt.Sprintf("%.0f B/observer", b), "", ""
		if be, _, ok := res.get(run.name, 0, "B/observer+entry"); ok {
			cell += fmt.Sprintf("; %.0f B with its entry", be)
			target, status = "≤ 3 KiB with its entry", "**met**"
			if be > 3072 {
				status = fmt.Sprintf("**SHORT**: %.1f× the target", be/3072)
			}
		}
		t.row(run.label, labels[qcache], cell, "", fmt.Sprintf("%.2f goroutines, %.0f B of stack", g, st), target, status)
	}
	// The floor under W6: what a goroutine per subscriber costs with no
	// state of its own (ParkedFootprint), out of the 3 KiB.
	if b, _, ok := res.get("W6Polling/floor", 0, "B/observer"); ok {
		st, _, _ := res.get("W6Polling/floor", 0, "stack-B/observer")
		t.row("W6 floor: a bare goroutine per subscriber, parked on a channel (10,000)", "goroutine + channel",
			fmt.Sprintf("%.0f B/subscriber", b), "", fmt.Sprintf("%.0f B of stack", st), "",
			fmt.Sprintf("leaves %.0f B of the 3 KiB for the entry and the observer", 3072-b))
	}
	if _, _, ok := res.get("W6Polling/"+qcache, 0, "B/observer"); ok {
		t.na("W6 footprint per polling observer", "no observers")
	}

	// W7: memory and hit latency at 1,000,000 entries, the last point of
	// the scaling curves (BenchmarkCurve; cmd/curves draws them all).
	for _, lib := range append([]string{qcache}, peers...) {
		name := "Curve/" + lib + "/n=1000000"
		b, _, ok := res.get(name, 0, "B/entry")
		hit, _, okHit := res.get(name, 0, "hit-ns")
		if !ok || !okHit {
			continue
		}
		t.row("W7 1M entries: memory, hit latency", labels[lib],
			fmt.Sprintf("%.0f B/entry; %s/Get", b, dur(hit)), "", "", "", "uniform reads, one reader per CPU")
	}
	return t.rows
}

func main() {
	res := results{}
	if len(os.Args) == 1 {
		if err := parse(os.Stdin, res); err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
	}
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err == nil {
			err = parse(f, res)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
	}
	if render(os.Stdout, res) == 0 {
		fmt.Fprintln(os.Stderr, "table: no benchmark results in the input")
		os.Exit(1)
	}
}
