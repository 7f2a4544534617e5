package qcache

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// timerChannel matches the standard library's timer channels.
var timerChannel = regexp.MustCompile(`\btime\.(NewTimer|NewTicker|After|Tick)\(`)

// TestLibraryCodeWaitsWithoutTimerChannels keeps timer channels out of the
// library (the root package, internal/, qcachetest/ and redisbus/): under -race, a
// testing/synctest bubble that receives from expired timer channels on two
// goroutines at once crashes the test binary (golang/go#78156), so the
// library waits through internal/wait, which is built on time.AfterFunc.
// Tests and examples that run outside bubbles may use timer channels.
func TestLibraryCodeWaitsWithoutTimerChannels(t *testing.T) {
	var checked int
	for _, root := range []string{".", "internal", "qcachetest", "redisbus"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != root && (root == "." || d.Name() == "testdata") {
				return fs.SkipDir // "." covers the root package only
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			checked++
			for i, line := range strings.Split(string(src), "\n") {
				code, _, _ := strings.Cut(line, "//")
				m := timerChannel.FindString(code)
				assert.Emptyf(t, m, "%s:%d: %s…: wait through internal/wait instead", path, i+1, m)
			}
			return nil
		})
		require.NoError(t, err)
	}
	require.GreaterOrEqualf(t, checked, 20, "checked only %d files: is the test running in the module's root?", checked)
}
