package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The seed page's headings, in its order.
var headings = []string{
	"== 1. Polling ==",
	"== 2. Conditional Polling ==",
	"== 3. Refetch on Window Focus ==",
	"== 4. Manual Refetch ==",
	"== 5. Refetch on Interval with Condition ==",
	"== 6. WebSocket Integration ==",
	"== 7. Invalidate on Interval ==",
}

// TestWalkthrough runs the whole program ten times faster than by default
// (about 1.4 s) and checks that it exits 0, quietly on stderr, with every
// pattern in the seed's order; goleak (TestMain) checks that the observers,
// pollers, the stream, the demo API and the HTTP connections are all gone.
func TestWalkthrough(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := cli(t.Context(), []string{"-scale", "0.1"}, &stdout, &stderr)
	require.Zero(t, code, "exit code; stderr:\n%s\nstdout:\n%s", &stderr, &stdout)
	assert.Zero(t, stderr.Len(), "stderr:\n%s", &stderr)
	out := stdout.String()
	assert.NotContains(t, out, "stream error", "the WebSocket stream reported an error")
	at := 0
	for _, h := range headings {
		i := strings.Index(out[at:], h)
		require.GreaterOrEqual(t, i, 0, "no %q after byte %d of the output:\n%s", h, at, out)
		at += i + len(h)
	}
	assert.Contains(t, out[at:], "\nDone in ", "no closing summary")
}

func TestInterruptedRunExitsQuickly(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	code := cli(ctx, nil, &stdout, &stderr)
	assert.Equal(t, 1, code, "exit code")
	assert.Contains(t, stderr.String(), "context canceled", "stderr")
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Zero(t, cli(t.Context(), []string{"-h"}, &stdout, &stderr), "exit code")
	help := stderr.String()
	for _, want := range []string{"-scale", "Polling", "Conditional polling", "focus", "Manual refetch",
		"stale", "WebSocket", "Invalidate on interval"} {
		assert.Contains(t, help, want, "-h")
	}
}

func TestBadScale(t *testing.T) {
	for _, args := range [][]string{{"-scale", "0"}, {"-scale", "-1"}, {"-scale", "NaN"}, {"-scale", "x"}, {"extra"}} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, cli(t.Context(), args, &stdout, &stderr), "%q: exit code", args)
		assert.Zero(t, stdout.Len(), "%q: ran anyway:\n%s", args, &stdout)
	}
}
