// Package backoff computes retry and reconnect delays.
package backoff

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Exponential returns min(base·2^n, max) for n ≥ 0, without jitter.
func Exponential(n int, base, max time.Duration) time.Duration {
	if n < 0 {
		n = 0
	}
	d := base
	for i := 0; i < n; i++ {
		if d >= max/2 {
			return max
		}
		d *= 2
	}
	if d > max {
		return max
	}
	return d
}

// Jittered returns a delay drawn uniformly from [d/2, d], so that many
// clients that failed together do not come back together.
func Jittered(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// RetryAfter parses a Retry-After header (seconds or an HTTP date) relative
// to now. It reports false when the header is absent or malformed.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(math.MaxInt64/time.Second) {
			return math.MaxInt64, true // saturated: a wait that far away must not wrap (digits past int64 too)
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// RetryAfterWithin is the one rule for a server-sent wait, shared by fetch
// retries and WebSocket reconnects: Retry-After parsed as RetryAfter does,
// capped at max. within is false when the server asked for more than max:
// a fetch then gives the retry up instead of parking for that long, and a
// reconnect waits max.
func RetryAfterWithin(h http.Header, now time.Time, max time.Duration) (d time.Duration, ok, within bool) {
	d, ok = RetryAfter(h, now)
	if !ok {
		return 0, false, true
	}
	if d > max {
		return max, true, false
	}
	return d, true, true
}
