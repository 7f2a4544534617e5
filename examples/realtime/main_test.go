package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

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
	if code := cli(t.Context(), []string{"-scale", "0.1"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s\nstdout:\n%s", code, &stderr, &stdout)
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr:\n%s", &stderr)
	}
	out := stdout.String()
	if strings.Contains(out, "stream error") {
		t.Errorf("the WebSocket stream reported an error:\n%s", out)
	}
	at := 0
	for _, h := range headings {
		i := strings.Index(out[at:], h)
		if i < 0 {
			t.Fatalf("no %q after byte %d of the output:\n%s", h, at, out)
		}
		at += i + len(h)
	}
	if !strings.Contains(out[at:], "\nDone in ") {
		t.Errorf("no closing summary:\n%s", out)
	}
}

func TestInterruptedRunExitsQuickly(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := cli(ctx, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "context canceled") {
		t.Errorf("exit code %d, stderr %q; want 1 and the cancellation", code, &stderr)
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli(t.Context(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	help := stderr.String()
	for _, want := range []string{"-scale", "Polling", "Conditional polling", "focus", "Manual refetch",
		"stale", "WebSocket", "Invalidate on interval"} {
		if !strings.Contains(help, want) {
			t.Errorf("-h does not mention %q:\n%s", want, help)
		}
	}
}

func TestBadScale(t *testing.T) {
	for _, args := range [][]string{{"-scale", "0"}, {"-scale", "-1"}, {"-scale", "NaN"}, {"-scale", "x"}, {"extra"}} {
		var stdout, stderr bytes.Buffer
		if code := cli(t.Context(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit code %d, want 2", args, code)
		}
		if stdout.Len() > 0 {
			t.Errorf("%q: ran anyway:\n%s", args, &stdout)
		}
	}
}
