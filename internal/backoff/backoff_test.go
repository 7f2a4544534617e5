package backoff

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for n, w := range want {
		if got := Exponential(n, time.Second, 30*time.Second); got != w*time.Second {
			t.Errorf("Exponential(%d) = %v, want %v", n, got, w*time.Second)
		}
	}
	if got := Exponential(1000, time.Second, 30*time.Second); got != 30*time.Second {
		t.Errorf("Exponential(1000) = %v, want 30s", got)
	}
	if got := Exponential(-1, time.Second, 30*time.Second); got != time.Second {
		t.Errorf("Exponential(-1) = %v, want 1s", got)
	}
}

func TestJittered(t *testing.T) {
	for range 1000 {
		d := Jittered(10 * time.Second)
		if d < 5*time.Second || d > 10*time.Second {
			t.Fatalf("Jittered(10s) = %v, outside [5s, 10s]", d)
		}
	}
	if Jittered(0) != 0 {
		t.Fatal("Jittered(0) != 0")
	}
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
		if got != tt.want || ok != tt.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
		}
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
		if d != tt.d || ok != tt.ok || within != tt.within {
			t.Errorf("RetryAfterWithin(%q) = %v, %v, %v; want %v, %v, %v", tt.v, d, ok, within, tt.d, tt.ok, tt.within)
		}
	}
}
