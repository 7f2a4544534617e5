package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTour runs the tour and checks what it shows: one request for the first
// Get, none for the fresh one, one shared by 20 concurrent Gets, none after
// SetData.
func TestTour(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"upstream requests so far: 1",
		"stale: true",
		"upstream requests so far: 2",
		"Name:Ada Lovelace}, upstream requests so far: 2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "upstream: request"); n != 2 {
		t.Errorf("%d upstream requests, want 2:\n%s", n, got)
	}
}
