package qcache

// Tests a third reviewer wrote: user callbacks that run on qcache's
// goroutines. Each comment names the rule that the test holds the code to.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// DESIGN: "A panicking fetch function becomes an error for its callers;
// the process lives", and callbacks run on qcache's goroutines; the code
// recovers a panicking RefetchIntervalFunc, RetryIf, Select and
// InvalidateEvery predicate for that reason. RetryDelay is called by the
// fetch's goroutine (run → retryDelay) and had no recover: a RetryDelay
// that panicked on an error it did not expect ended the whole process. It
// now gives the retry up: the fetch fails with the error it retried. The
// test runs the fetch in a child process, which would die otherwise.
func TestBreak3PanickingRetryDelayLeavesTheProcess(t *testing.T) {
	if os.Getenv("QCACHE_BREAK3_CHILD") == "retrydelay" {
		c := NewClient()
		q := NewQueryFunc(c, Key{"k"}, func(ctx context.Context, p string) (string, error) {
			return "", errors.New("down")
		}, Retry(1), RetryDelay(func(n int, err error) time.Duration {
			panic("RetryDelay: unexpected error " + err.Error())
		}))
		q.Prefetch("a") // on a goroutine of the fetch's own
		for q.State("a").FetchStatus != FetchIdle {
			time.Sleep(time.Millisecond)
		}
		s := q.State("a")
		_ = c.Close()
		if s.Err == nil || !strings.HasSuffix(s.Err.Error(), ": down") || s.FailureCount != 1 {
			fmt.Printf("state after the panic: err %v, %d failures\n", s.Err, s.FailureCount)
			os.Exit(3)
		}
		os.Exit(0)
	}
	assertChildLives(t, "retrydelay")
}

// b3Item's Validate assumes an owner, as a user's Validate might: it
// panics on a body without one.
type b3Item struct {
	Owner *struct {
		Name string `json:"name"`
	} `json:"owner"`
}

func (i b3Item) Validate() error {
	if i.Owner.Name == "" { // a nil Owner panics here
		return errors.New("no owner name")
	}
	return nil
}

// DESIGN: "A panicking fetch function becomes an error for its callers;
// the process lives": a T whose Validate panics on an answer it did not
// expect fails that fetch (attempt recovers it). The same value arriving
// from another replica as SetData (bus.go Apply → setJSON → decodeValue →
// validate) was validated with no recover, on the bus's goroutine: one
// replica's SetData of a value its own code accepted ended the process of
// every other replica that holds the key. validate now recovers, and the
// value is refused as an invalid one is. The test runs two replicas in a
// child process, which would die otherwise, and checks that B kept its
// own value.
func TestBreak3PanickingValidateOfABusSetDataLeavesTheProcess(t *testing.T) {
	if os.Getenv("QCACHE_BREAK3_CHILD") == "busvalidate" {
		bus := new(MemoryBus)
		fetch := func(ctx context.Context, p string) (b3Item, error) { return b3Item{}, errors.New("unused") }
		a := NewClient(WithBus(bus, BusOrigin("A")))
		b := NewClient(WithBus(bus, BusOrigin("B")))
		qa := NewQueryFunc(a, Key{"items"}, fetch)
		qb := NewQueryFunc(b, Key{"items"}, fetch)
		time.Sleep(100 * time.Millisecond) // subscribed
		qb.SetData("1", b3Item{Owner: &struct {
			Name string `json:"name"`
		}{"x"}})
		time.Sleep(100 * time.Millisecond)
		qa.SetData("1", b3Item{}) // no owner: B's Validate panics on it
		time.Sleep(300 * time.Millisecond)
		v, _ := qb.Peek("1")
		_, _ = a.Close(), b.Close()
		if v.Owner == nil || v.Owner.Name != "x" {
			fmt.Printf("B holds %+v after the refused value\n", v)
			os.Exit(3)
		}
		os.Exit(0)
	}
	assertChildLives(t, "busvalidate")
}

// assertChildLives runs the calling test again in a child process with
// QCACHE_BREAK3_CHILD set to child, and fails unless the child exits 0:
// for a test whose failure would end the process.
func assertChildLives(t *testing.T, child string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), "QCACHE_BREAK3_CHILD="+child)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "the process died:\n%.600s", out)
}
