package backoff

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExponential(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for n, w := range want {
		assert.Equalf(t, w*time.Second, Exponential(n, time.Second, 30*time.Second), "Exponential(%d)", n)
	}
	assert.Equal(t, 30*time.Second, Exponential(1000, time.Second, 30*time.Second), "Exponential(1000)")
	assert.Equal(t, time.Second, Exponential(-1, time.Second, 30*time.Second), "Exponential(-1)")
}

func TestJittered(t *testing.T) {
	for range 1000 {
		d := Jittered(10 * time.Second)
		require.Truef(t, d >= 5*time.Second && d <= 10*time.Second, "Jittered(10s) = %v, outside [5s, 10s]", d)
	}
	require.Zero(t, Jittered(0), "Jittered(0) != 0")
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"5", 5 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{now.Add(-7 * time.Second).Format(http.TimeFormat), 0, true},
		// Far away saturates instead of wrapping into a short or negative wait.
		{"9223372036", 9223372036 * time.Second, true},
		{"9223372037", math.MaxInt64, true},
		{"18446744074", math.MaxInt64, true},
		{"99999999999999999999999", math.MaxInt64, true},
		{"-99999999999999999999999", 0, false},
		{"Fri, 31 Dec 9999 23:59:59 GMT", math.MaxInt64, true},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.v != "" {
			h.Set("Retry-After", tt.v)
		}
		got, ok := RetryAfter(h, now)
		assert.Equalf(t, tt.want, got, "RetryAfter(%q)", tt.v)
		assert.Equalf(t, tt.ok, ok, "RetryAfter(%q) ok", tt.v)
	}
}

func TestRetryAfterWithin(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		v          string
		d          time.Duration
		ok, within bool
	}{
		{"", 0, false, true},
		{"5", 5 * time.Second, true, true},
		{"30", 30 * time.Second, true, true},
		{"31", 30 * time.Second, true, false},
		{"3600", 30 * time.Second, true, false},
		{"99999999999999", 30 * time.Second, true, false},
		{"Fri, 31 Dec 9999 23:59:59 GMT", 30 * time.Second, true, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.v != "" {
			h.Set("Retry-After", tt.v)
		}
		d, ok, within := RetryAfterWithin(h, now, 30*time.Second)
		assert.Equalf(t, tt.d, d, "RetryAfterWithin(%q)", tt.v)
		assert.Equalf(t, tt.ok, ok, "RetryAfterWithin(%q) ok", tt.v)
		assert.Equalf(t, tt.within, within, "RetryAfterWithin(%q) within", tt.v)
	}
}
