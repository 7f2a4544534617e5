package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTour runs the tour and checks what it shows: one request for the first
// Get, none for the fresh one, one shared by 20 concurrent Gets, none after
// SetData.
func TestTour(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	got := out.String()
	for _, want := range []string{
		"upstream requests so far: 1",
		"stale: true",
		"upstream requests so far: 2",
		"Name:Ada Lovelace}, upstream requests so far: 2",
	} {
		assert.Contains(t, got, want, "output")
	}
	assert.Equal(t, 2, strings.Count(got, "upstream: request"), "upstream requests:\n%s", got)
}
