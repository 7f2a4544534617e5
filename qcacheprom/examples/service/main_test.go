package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServesMetrics runs the service on a free loopback port, scrapes the
// URL it prints until the cache's metrics show fetches, then stops it:
// exit code 0, and (goleak) nothing left running.
func TestServesMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out, w := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- cli(ctx, []string{"-addr", "127.0.0.1:0", "-for", "30s"}, w, w)
		w.Close()
	}()
	lines := bufio.NewScanner(out)
	require.True(t, lines.Scan(), "no output: %v", lines.Err())
	url, ok := strings.CutPrefix(lines.Text(), "metrics: ")
	require.True(t, ok, "first line %q does not give the metrics URL", lines.Text())
	go io.Copy(io.Discard, out)

	deadline := time.Now().Add(10 * time.Second)
	for {
		if fetches := scrapeFetches(t, url); fetches > 0 {
			break
		}
		require.False(t, time.Now().After(deadline), "no fetch in the metrics after 10 s")
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	require.Zero(t, <-code, "exit code")
}

// scrapeFetches returns the successful fetches of the users query in one
// scrape of url.
func scrapeFetches(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	assert.NotNil(t, fams["go_goroutines"], "the Go collector's metrics are missing")
	for _, m := range fams["qcache_fetches_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["query"] == "GET /users/$id" && labels["outcome"] == "success" {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
