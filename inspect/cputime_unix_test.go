//go:build unix

package inspect

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process used so far: on a shared machine,
// what a page cost whatever the load of the others.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
