package wait

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSleepWaitsTheDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		assert.True(t, Sleep(context.Background(), 3*time.Second))
		assert.Equal(t, 3*time.Second, time.Since(start))
	})
}

func TestSleepEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		assert.False(t, Sleep(ctx, time.Hour))
		assert.Equal(t, time.Second, time.Since(start), "cut short when the context ends")

		assert.False(t, Sleep(ctx, 0), "an ended context wins over a zero duration")
		assert.True(t, Sleep(context.Background(), 0))
		assert.True(t, Sleep(context.Background(), -time.Second))
		assert.Equal(t, time.Second, time.Since(start), "no wait for a duration that is not positive")
	})
}

// TestSleepersWakingTogether is the case that crashed the race detector
// while qcache waited on timer channels: many goroutines of one bubble
// waking at the same instant. Under -race it fails by crashing the binary
// if Sleep goes back to timer channels.
func TestSleepersWakingTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var wg sync.WaitGroup
		woke := make([]time.Duration, 64)
		start := time.Now()
		for i := range woke {
			wg.Go(func() {
				for range 20 {
					Sleep(context.Background(), time.Millisecond)
				}
				woke[i] = time.Since(start)
			})
		}
		wg.Wait()
		for _, d := range woke {
			assert.Equal(t, 20*time.Millisecond, d)
		}
	})
}

func TestTickerKeepsToItsGrid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		k := NewTicker(time.Second)
		defer k.Stop()
		var at []time.Duration
		for range 3 {
			<-k.C
			at = append(at, time.Since(start))
			time.Sleep(300 * time.Millisecond) // work between ticks does not shift them
		}
		assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, at)
	})
}

func TestTickerDropsTicksASlowReaderMissed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		k := NewTicker(time.Second)
		defer k.Stop()
		time.Sleep(3500 * time.Millisecond)
		<-k.C // the tick of 1 s waited; those of 2 s and 3 s were dropped
		assert.Equal(t, 3500*time.Millisecond, time.Since(start), "one tick was waiting")
		<-k.C
		assert.Equal(t, 4*time.Second, time.Since(start), "the next tick is back on the grid")
	})
}

func TestTickerStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := NewTicker(time.Second)
		<-k.C
		k.Stop()
		time.Sleep(5 * time.Second)
		select {
		case <-k.C:
			assert.Fail(t, "a tick came after Stop")
		default:
		}
		k.Stop() // a second Stop does nothing
	})
}

func TestNewTickerRejectsAPeriodThatIsNotPositive(t *testing.T) {
	assert.PanicsWithValue(t, "wait: NewTicker: period not positive", func() { NewTicker(0) })
	assert.Panics(t, func() { NewTicker(-time.Second) })
}
