package redisbus

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
)

// warnLog records the Warn lines of a bus: reason and suppressed count.
type warnLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *warnLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *warnLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *warnLog) WithGroup(string) slog.Handler            { return l }
func (l *warnLog) Handle(_ context.Context, r slog.Record) error {
	var reason string
	var suppressed int64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "reason":
			reason = a.Value.String()
		case "suppressed":
			suppressed = a.Value.Int64()
		}
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, r.Level.String()+" "+reason+" "+itoa(suppressed))
	l.mu.Unlock()
	return nil
}

func (l *warnLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

func itoa(n int64) string { return slog.Int64Value(n).String() }

// TestDroppedMessagesWarnAtMostOncePerSecondPerReason: a flood of rejected
// messages logs one Warn line per reason per second, and the next line
// says how many were held back.
func TestDroppedMessagesWarnAtMostOncePerSecondPerReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log warnLog
		var reported int
		b := &Bus{cfg: config{channel: "c", logger: slog.New(&log), onError: func(error) { reported++ }},
			warns: warnLimiter{every: time.Second}}
		err := errors.New("nope")
		for range 10 {
			b.drop("unsigned", err)
		}
		b.drop("bad signature", err)
		assert.Equal(t, []string{"WARN unsigned 0", "WARN bad signature 0"}, log.take())

		time.Sleep(999 * time.Millisecond)
		for range 5 {
			b.drop("unsigned", err)
		}
		assert.Empty(t, log.take(), "within the second")

		time.Sleep(time.Millisecond)
		b.drop("unsigned", err)
		b.drop("bad signature", err)
		assert.Equal(t, []string{"WARN unsigned 14", "WARN bad signature 0"}, log.take())

		time.Sleep(10 * time.Second)
		b.drop("unsigned", err)
		assert.Equal(t, []string{"WARN unsigned 0"}, log.take())
		assert.Equal(t, 19, reported, "OnError hears of every one")
	})
}
