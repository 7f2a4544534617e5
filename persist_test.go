package qcache_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcachetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type item struct {
	ID    string `json:"id"`
	Price int    `json:"price"`
}

// replica is one replica of a service: a client on api and its items
// query, fresh for five minutes.
func replica(api *qcachetest.Upstream) (*qcache.Client, *qcache.Query[string, item]) {
	c := qcache.NewClient(qcache.WithBaseURL("http://api.test"), qcache.WithHTTPClient(api.Client()))
	return c, qcache.NewQuery[string, item](c, qcache.Endpoint{URL: "/items/$id"}, qcache.StaleTime(5*time.Minute))
}

// The figure of issue 18: a replica restarted cold, with hydrate from the
// file its previous run wrote, answers the first Get of 1,000 keys without
// one upstream request.
func TestColdRestartFromFileMakesNoUpstreamRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var api qcachetest.Upstream
		api.ScriptFunc("GET /items/{id}", func(n int, r *http.Request) qcachetest.Reply {
			id, _ := strconv.Atoi(r.PathValue("id"))
			return qcachetest.Reply{Body: item{ID: r.PathValue("id"), Price: 100 + id}}
		})
		path := filepath.Join(t.TempDir(), "qcache.jsonl")
		getAll := func(q *qcache.Query[string, item]) {
			for i := range 1000 {
				v, err := q.Get(t.Context(), strconv.Itoa(i))
				require.NoError(t, err)
				require.Equal(t, item{ID: strconv.Itoa(i), Price: 100 + i}, v)
			}
		}

		c1, q1 := replica(&api)
		p1 := &qcache.FilePersister{Path: path, Every: time.Minute}
		st, err := p1.Start(c1)
		require.NoError(t, err, "no file yet: a cold start, no error")
		require.Equal(t, qcache.HydrateStats{}, st)
		getAll(q1)
		require.Equal(t, 1000, api.Count(""))
		require.NoError(t, c1.Close()) // the last snapshot
		time.Sleep(20 * time.Second)   // the restart

		c2, q2 := replica(&api)
		defer c2.Close()
		p2 := &qcache.FilePersister{Path: path, Every: time.Minute}
		st, err = p2.Start(c2)
		require.NoError(t, err)
		assert.Equal(t, qcache.HydrateStats{Restored: 1000}, st)
		before := api.Count("")
		getAll(q2)
		withHydrate := api.Count("") - before

		c3, q3 := replica(&api) // the same restart without the file
		defer c3.Close()
		before = api.Count("")
		getAll(q3)
		without := api.Count("") - before

		t.Logf("cold restart, first Get of 1,000 keys: %d upstream requests with hydrate from the file, %d without",
			withHydrate, without)
		assert.Equal(t, 0, withHydrate)
		assert.Equal(t, 1000, without)
	})
}

func readSnapshot(t *testing.T, path string) (qcache.HydrateStats, *qcache.Query[string, item]) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var api qcachetest.Upstream
	c, q := replica(&api)
	t.Cleanup(func() { c.Close() })
	st, err := c.Hydrate(f)
	require.NoError(t, err)
	return st, q
}

func TestFilePersisterWritesEveryIntervalAndOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var api qcachetest.Upstream
		path := filepath.Join(t.TempDir(), "qcache.jsonl")
		c, q := replica(&api)
		p := &qcache.FilePersister{Path: path, Every: time.Minute}
		_, err := p.Start(c)
		require.NoError(t, err)
		q.SetData("1", item{ID: "1"})
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		_, err = os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "nothing written before Every")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		st, _ := readSnapshot(t, path)
		assert.Equal(t, qcache.HydrateStats{Restored: 1}, st, "written after Every")

		q.SetData("2", item{ID: "2"})
		time.Sleep(30 * time.Second)
		require.NoError(t, c.Close())
		st, q2 := readSnapshot(t, path)
		assert.Equal(t, qcache.HydrateStats{Restored: 2}, st, "written by Client.Close, between two intervals")
		assert.Equal(t, "2", q2.State("2").Data.ID)
		assert.NoError(t, p.Close(), "idempotent after Client.Close")
	})
}

func TestFilePersisterCloseAndSave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var api qcachetest.Upstream
		path := filepath.Join(t.TempDir(), "qcache.jsonl")
		c, q := replica(&api)
		defer c.Close()
		p := &qcache.FilePersister{Path: path, Filter: qcache.Filter{Key: qcache.Key{"items", "1"}}}
		assert.Error(t, p.Save(), "before Start")
		assert.NoError(t, p.Close(), "before Start: nothing to do")
		_, err := p.Start(c)
		require.NoError(t, err)
		assert.Panics(t, func() { p.Start(c) })
		q.SetData("1", item{ID: "1"})
		q.SetData("2", item{ID: "2"})
		require.NoError(t, p.Save())
		st, _ := readSnapshot(t, path)
		assert.Equal(t, qcache.HydrateStats{Restored: 1}, st, "the Filter selects what is written")
		q.SetData("1", item{ID: "1", Price: 7})
		require.NoError(t, p.Close())
		require.NoError(t, p.Close())
		_, q2 := readSnapshot(t, path)
		assert.Equal(t, 7, q2.State("1").Data.Price, "Close writes a last snapshot")
		q.SetData("1", item{ID: "1", Price: 8})
		time.Sleep(time.Hour)
		_, q2 = readSnapshot(t, path)
		assert.Equal(t, 7, q2.State("1").Data.Price, "nothing is written after Close")
	})
}

func TestFilePersisterCorruptFileCostsAColdStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		wantErr bool
		want    qcache.HydrateStats
	}{
		{"garbage", "\x00\x17 not a snapshot\n", true, qcache.HydrateStats{}},
		{"empty", "", true, qcache.HydrateStats{}},
		{"newer version", `{"qcache":"dehydrate","v":99}` + "\n", true, qcache.HydrateStats{}},
		{"truncated", `{"qcache":"dehydrate","v":1}` + "\n" +
			`{"query":"GET /items/$id","key":["items","1"],"params":"1","data":{"id":"1"},"updated_at":"2000-01-01T00:00:00Z"}` + "\n" +
			`{"query":"GET /items/$id","key":["items","2"],"params":"2","da`, false, qcache.HydrateStats{Restored: 1, BadLine: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var api qcachetest.Upstream
				path := filepath.Join(t.TempDir(), "qcache.jsonl")
				require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
				c, q := replica(&api)
				defer c.Close()
				var reported []error
				p := &qcache.FilePersister{Path: path, OnError: func(err error) { reported = append(reported, err) }}
				st, err := p.Start(c)
				assert.Equal(t, tc.want, st)
				if tc.wantErr {
					require.ErrorIs(t, err, qcache.ErrSnapshotFormat)
					assert.Equal(t, []error{err}, reported, "told to OnError too")
				} else {
					require.NoError(t, err)
					assert.Empty(t, reported)
				}
				q.SetData("3", item{ID: "3"})
				require.NoError(t, p.Save(), "the persister runs: the next snapshot replaces the file")
				st, _ = readSnapshot(t, path)
				assert.Equal(t, tc.want.Restored+1, st.Restored)
				assert.Zero(t, st.Skipped())
			})
		})
	}
}

func TestFilePersisterReportsWriteErrors(t *testing.T) {
	var api qcachetest.Upstream
	dir := t.TempDir()
	c, q := replica(&api)
	defer c.Close()
	var mu sync.Mutex
	var reported []error
	p := &qcache.FilePersister{Path: filepath.Join(dir, "gone", "qcache.jsonl"),
		OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }}
	_, err := p.Start(c)
	require.NoError(t, err, "a missing file is a cold start")
	q.SetData("1", item{ID: "1"})
	err = p.Save()
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, c.Close())
	assert.ErrorIs(t, p.Close(), os.ErrNotExist, "the last write's error")
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, reported, 2, "Save's and the last snapshot's")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents)
}

func TestFilePersisterRemovesLeftoverTemporaryFiles(t *testing.T) {
	var api qcachetest.Upstream
	dir := t.TempDir()
	path := filepath.Join(dir, "qcache.jsonl")
	for _, name := range []string{"qcache.jsonl.tmp-123", "qcache.jsonl.tmp-456", "other.tmp-1", "qcache.jsonl.bak"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("half a snaps"), 0o600))
	}
	c, _ := replica(&api)
	p := &qcache.FilePersister{Path: path}
	_, err := p.Start(c)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	var names []string
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"other.tmp-1", "qcache.jsonl", "qcache.jsonl.bak"}, names)
}

// ---------- kill -9 mid-write ----------

const (
	crashWriterEnv = "QCACHE_TEST_CRASH_WRITER" // set: this process is the writer, writing to its value
	crashEntries   = 1000
)

type crashItem struct {
	Round int    `json:"round"`
	K     int    `json:"k"`
	Pad   string `json:"pad"`
}

var crashPad = strings.Repeat("p", 200)

func crashQuery(c *qcache.Client) *qcache.Query[int, crashItem] {
	return qcache.NewQueryFunc(c, qcache.Key{"items"}, func(ctx context.Context, k int) (crashItem, error) {
		return crashItem{}, errors.New("no upstream in this test")
	})
}

// crashWriter is the child: it continues from the snapshot at path and
// writes snapshots in a loop, each of every entry set to the next round,
// printing "saved N µs" after each (its round and how long the save
// took); the parent kills it.
func crashWriter(path string) {
	c := qcache.NewClient()
	q := crashQuery(c)
	p := &qcache.FilePersister{Path: path}
	if _, err := p.Start(c); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(2)
	}
	round := q.State(0).Data.Round
	fmt.Println("started")
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); { // never outlive a lost parent
		round++
		for k := range crashEntries {
			q.SetData(k, crashItem{Round: round, K: k, Pad: crashPad})
		}
		start := time.Now()
		if err := p.Save(); err != nil {
			fmt.Fprintln(os.Stderr, "save:", err)
			os.Exit(3)
		}
		fmt.Println("saved", round, time.Since(start).Microseconds())
	}
	os.Exit(4)
}

// A writer killed with SIGKILL at random moments, mid-write included,
// always leaves the previous snapshot or the new one, whole.
func TestFilePersisterSurvivesKill9(t *testing.T) {
	if path := os.Getenv(crashWriterEnv); path != "" {
		crashWriter(path)
		return
	}
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
		t.Skip("needs a child process and SIGKILL")
	}
	path := filepath.Join(t.TempDir(), "qcache.jsonl")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 18))
	const kills = 8
	last, midWrite := 0, 0
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFilePersisterSurvivesKill9$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+path)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		lines := make(chan string, 1<<16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Let it save once or twice, then kill it at a random moment of
		// about one save's length: before, during or after the next write.
		confirmed, saveTook := last, time.Millisecond
		saves := 1 + rng.IntN(2)
		for l := range lines {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "saved" {
				confirmed, _ = strconv.Atoi(f[1])
				us, _ := strconv.Atoi(f[2])
				saveTook = time.Duration(us) * time.Microsecond
				if saves--; saves == 0 {
					break
				}
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(saveTook)*3/2 + 1)))
		require.NoError(t, cmd.Process.Kill(), "the writer ended early: %s", &stderr)
		for l := range lines { // to the end of its output, before Wait closes the pipe
			if f := strings.Fields(l); len(f) == 3 && f[0] == "saved" {
				confirmed, _ = strconv.Atoi(f[1])
			}
		}
		werr := cmd.Wait()
		require.Error(t, werr, "killed, not exited: %s", stderr.String())

		temps, err := filepath.Glob(path + ".tmp-*")
		require.NoError(t, err)
		if len(temps) > 0 {
			midWrite++
		}
		c := qcache.NewClient()
		q := crashQuery(c)
		f, err := os.Open(path)
		require.NoError(t, err)
		st, err := c.Hydrate(f)
		f.Close()
		require.NoError(t, err)
		require.Equal(t, qcache.HydrateStats{Restored: crashEntries}, st, "kill %d: every entry of one snapshot", i)
		round := q.State(0).Data.Round
		for k := range crashEntries {
			require.Equal(t, crashItem{Round: round, K: k, Pad: crashPad}, q.State(k).Data, "kill %d: entry %d", i, k)
		}
		assert.True(t, round == confirmed || round == confirmed+1,
			"kill %d: the file holds round %d; the writer had confirmed %d", i, round, confirmed)
		assert.GreaterOrEqual(t, round, last)
		last = round
		c.Close()
	}
	t.Logf("%d kills, %d of them mid-write (a temporary file was left); the file held one whole snapshot every time (last round %d)",
		kills, midWrite, last)
}
