package browsertest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/inspect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type user struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// chromium returns the path of a Chromium, or skips the test saying why.
func chromium(t *testing.T) string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("SKIPPED: no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it), nor $CHROMIUM")
	return ""
}

// TestInspectorPage opens the inspector in a headless Chromium against a
// live client: the table shows the entries, a SetData in Go changes its
// row without a reload, and the Invalidate button refetches the entry.
// Real time, with polling waits under one deadline: nothing here sleeps.
func TestInspectorPage(t *testing.T) {
	chrome := chromium(t)

	client := qcache.NewClient()
	defer client.Close()
	var fetches atomic.Int64
	users := qcache.NewQueryFunc(client, qcache.Key{"users"}, func(ctx context.Context, id string) (user, error) {
		n := fetches.Add(1)
		return user{ID: id, Name: fmt.Sprintf("fetched #%d", n)}, nil
	}, qcache.StaleTime(time.Minute))
	for i := range 30 {
		id := fmt.Sprintf("%02d", i)
		users.SetData(id, user{ID: id, Name: "user " + id})
	}
	obs := users.Use(context.Background(), "07") // observed: invalidation refetches it
	defer obs.Close()
	_, err := users.Get(context.Background(), "bad/id?")
	require.NoError(t, err)

	mux := http.NewServeMux()
	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", inspect.Handler(client, inspect.AllowActions())))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 950),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))(ctx, t)
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", expr, err)
			}
			return nil
		}))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	run := func(name string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, steps...), name)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		require.NoError(t, err, sel)
		return s
	}
	eval := func(expr string) any {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[any](expr))
		require.NoError(t, err, expr)
		return v
	}

	run("open the page",
		chromedp.Navigate(srv.URL+"/debug/qcache/"),
		chromedp.WaitVisible(css(`#entries tbody tr[data-id="users/07"]`)),
		poll(`document.querySelector('#conn').textContent === 'live'`),
	)
	assert.EqualValues(t, 31, eval(`document.querySelectorAll('#entries tbody tr').length`), "the table shows every entry")
	assert.Equal(t, "success", text(`tr[data-id="users/07"] td.status`))
	assert.Equal(t, "users/bad%2Fid%3F", eval(`document.querySelector('#entries tbody tr:last-child').dataset.id`))
	eval(`window.notReloaded = true`) // a mark that a reload would wipe

	// SetData in Go: the row changes without a reload.
	users.SetData("03", user{ID: "03", Name: "pushed from Go, a longer name"})
	run("see the pushed row", poll(`document.querySelector('tr[data-id="users/03"] td.size').textContent === '50 B'`))
	assert.Equal(t, true, eval(`window.notReloaded === true`), "the page was not reloaded")

	// The filter goes to the server and back.
	run("filter",
		chromedp.SendKeys(css(`#prefix`), "users/0"),
		poll(`document.querySelectorAll('#entries tbody tr').length === 10`),
		poll(`document.querySelector('#range').textContent === '1–10 of 10'`),
	)

	// Open users/07, click Invalidate: the entry is refetched.
	before := fetches.Load()
	run("open users/07",
		chromedp.Click(css(`tr[data-id="users/07"] td.key`)),
		chromedp.WaitVisible(css(`#detail`)),
		poll(`document.querySelector('#d-data').textContent.includes('"name": "user 07"')`),
	)
	assert.Contains(t, text(`#d-data`), `"id": "07"`)
	run("invalidate users/07",
		chromedp.Click(css(`#entry-actions button[data-action="invalidate"]`)),
		poll(`document.querySelector('#d-data').textContent.includes('fetched #')`),
		poll(`Array.from(document.querySelectorAll('#d-history td')).some(td => td.textContent === 'invalidated')`),
		poll(`Array.from(document.querySelectorAll('#d-history td')).some(td => td.textContent === 'fetched')`),
		poll(`document.querySelector('tr[data-id="users/07"] td.fetch').textContent === 'idle'`),
	)
	assert.Equal(t, before+1, fetches.Load(), "Invalidate refetched the observed entry once")
	assert.Contains(t, obs.State().Data.Name, "fetched #")

	eval(`document.querySelector('#flash').hidden = true`)
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	out := filepath.Join("testdata", "inspector.png")
	require.NoError(t, os.WriteFile(out, png, 0o644))
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
}
