// Package bench compares qcache with the Go caches its users would otherwise
// pick: otter v2 (Get with a loader and expiry), sturdyc (GetOrFetch), the
// hand-written singleflight + sync.Map, and a bare sync.Map.Load as the
// physical limit of a lookup.
//
// The workloads (W1 to W6) are Go benchmarks in bench_test.go, the scaling
// curves (BenchmarkCurve, at 10,000 to 1,000,000 entries, whose last point
// is W7) in curves_test.go; the helpers they share live here so that plain
// `go test` can check each of them quickly. `./run` runs every benchmark
// round by round, prints one markdown table and draws the curves
// (cmd/curves; see README.md). Both commands read the benchmark output with
// internal/benchfmt.
//
// This is its own module so that the root module keeps its small set of
// dependencies.
package bench
