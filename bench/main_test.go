package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the workloads leave no goroutine behind, except
// sturdyc's evictions: sturdyc has no way to stop them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/viccon/sturdyc.(*Client[...]).performContinuousEvictions"),
		goleak.IgnoreAnyFunction("github.com/viccon/sturdyc.(*Client[...]).performContinuousEvictions.func1"))
}
