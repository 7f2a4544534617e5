package inspect

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qcache-go/qcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type user struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// fixture is a client with a users query and an inspector on a loopback
// server, mounted as the README says.
type fixture struct {
	c       *qcache.Client
	users   *qcache.Query[string, user]
	fetches atomic.Int64
	srv     *httptest.Server
}

func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{c: qcache.NewClient()}
	t.Cleanup(func() { f.c.Close() })
	f.users = qcache.NewQueryFunc(f.c, qcache.Key{"users"}, func(ctx context.Context, id string) (user, error) {
		f.fetches.Add(1)
		if id == "bad" {
			return user{}, errors.New("no such user: Ada Lovelace")
		}
		return user{ID: id, Name: "fetched " + id}, nil
	}, qcache.Retry(0))
	mux := http.NewServeMux()
	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", Handler(f.c, opts...)))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) url(path string) string { return f.srv.URL + "/debug/qcache" + path }

func getJSON[T any](t *testing.T, url string) (T, int) {
	t.Helper()
	var v T
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(b, &v), "%s", b)
	}
	return v, resp.StatusCode
}

func keysOf(rows []Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.KeyText
	}
	return out
}

func TestEntriesPaging(t *testing.T) {
	f := newFixture(t)
	for i := range 250 {
		f.users.SetData(fmt.Sprintf("%03d", i), user{Name: "u"})
	}
	var all []string
	cursor := ""
	for page := 0; ; page++ {
		p, code := getJSON[Page](t, f.url("/entries?limit=100&cursor="+cursor))
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, 250, p.Total)
		assert.Equal(t, len(all), p.Offset)
		all = append(all, keysOf(p.Rows)...)
		if p.NextCursor == "" {
			assert.Equal(t, 2, page)
			assert.Len(t, p.Rows, 50)
			break
		}
		assert.Len(t, p.Rows, 100)
		cursor = p.NextCursor
	}
	require.Len(t, all, 250)
	for i, k := range all {
		assert.Equal(t, fmt.Sprintf("users/%03d", i), k, "in key order, each once")
	}

	_, code := getJSON[Page](t, f.url("/entries?limit=0"))
	assert.Equal(t, http.StatusBadRequest, code)
	_, code = getJSON[Page](t, f.url("/entries?cursor=!!"))
	assert.Equal(t, http.StatusBadRequest, code)
}

func TestEntriesPrefixAndRow(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"4", "42", "5", "bad"} {
		_, _ = f.users.Get(context.Background(), id)
	}
	posts := qcache.NewQueryFunc(f.c, qcache.Key{"posts"}, func(ctx context.Context, p struct {
		Page int `query:"page"`
	}) (string, error) {
		return "posts", nil
	})
	_, err := posts.Get(context.Background(), struct {
		Page int `query:"page"`
	}{2})
	require.NoError(t, err)
	obs := f.users.Use(context.Background(), "42")
	defer obs.Close()

	for prefix, want := range map[string][]string{
		"":         {"posts?page=2", "users/4", "users/42", "users/5", "users/bad"},
		"users/4":  {"users/4", "users/42"},
		"users/42": {"users/42"},
		"users/":   {"users/4", "users/42", "users/5", "users/bad"},
		"users":    {"users/4", "users/42", "users/5", "users/bad"},
		"posts?":   {"posts?page=2"},
		"nothing":  {},
	} {
		p, code := getJSON[Page](t, f.url("/entries?prefix="+strings.ReplaceAll(prefix, "?", "%3F")))
		require.Equal(t, http.StatusOK, code)
		assert.Equal(t, want, keysOf(p.Rows), "prefix %q", prefix)
		assert.Equal(t, len(want), p.Total, "prefix %q", prefix)
	}

	p, _ := getJSON[Page](t, f.url("/entries?prefix=users/"))
	byKey := map[string]Row{}
	for _, r := range p.Rows {
		byKey[r.KeyText] = r
	}
	r42 := byKey["users/42"]
	assert.Equal(t, "users/42", r42.ID)
	assert.Equal(t, []string{"users", "42"}, r42.Key)
	assert.Equal(t, "users", r42.Query)
	assert.Equal(t, "success", r42.Status)
	assert.Equal(t, 1, r42.Observers)
	assert.True(t, r42.HasData)
	assert.NotZero(t, r42.DataUpdatedAt)
	assert.Equal(t, len(`{"id":"42","name":"fetched 42"}`), r42.DataSize)
	bad := byKey["users/bad"]
	assert.Equal(t, "error", bad.Status)
	assert.Equal(t, 1, bad.FailureCount)
	assert.Contains(t, bad.Error, "no such user")
	assert.False(t, bad.HasData)
}

func TestEntryDetail(t *testing.T) {
	f := newFixture(t, DataLimit(60))
	f.users.SetData("a/b", user{ID: "1", Name: "short"})
	f.users.SetData("long", user{ID: "2", Name: strings.Repeat("x", 100)})
	_, _ = f.users.Get(context.Background(), "bad")

	d, code := getJSON[Detail](t, f.url("/entries/users/a%2Fb"))
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "{\n  \"id\": \"1\",\n  \"name\": \"short\"\n}", d.Data)
	assert.False(t, d.DataTruncated)
	assert.False(t, d.HistoryKept, "no page open, no WithHistory")
	assert.Empty(t, d.History)

	d, _ = getJSON[Detail](t, f.url("/entries/users/long"))
	assert.True(t, d.DataTruncated)
	assert.Len(t, d.Data, 60)

	_, code = getJSON[Detail](t, f.url("/entries/users/missing"))
	assert.Equal(t, http.StatusNotFound, code)
	_, code = getJSON[Detail](t, f.url("/entries/users/a~b"))
	assert.Equal(t, http.StatusBadRequest, code)
	_, code = getJSON[Detail](t, f.url("/entries/users/long?query=other"))
	assert.Equal(t, http.StatusNotFound, code)
	d, code = getJSON[Detail](t, f.url("/entries/users/long?query=users"))
	assert.Equal(t, http.StatusOK, code)

	d, _ = getJSON[Detail](t, f.url("/entries/users/bad"))
	assert.Contains(t, d.Error, "no such user: Ada Lovelace")
}

func TestHideData(t *testing.T) {
	f := newFixture(t, HideData())
	f.users.SetData("1", user{Name: "Ada Lovelace"})
	_, _ = f.users.Get(context.Background(), "bad")
	for _, path := range []string{"/entries/users/1", "/entries/users/bad", "/entries", "/stats", "/"} {
		resp, err := http.Get(f.url(path))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.NotContains(t, string(b), "Ada", path)
	}
	d, _ := getJSON[Detail](t, f.url("/entries/users/1"))
	assert.True(t, d.DataHidden)
	assert.Empty(t, d.Data)
	assert.Positive(t, d.DataSize, "sizes are still shown")
	d, _ = getJSON[Detail](t, f.url("/entries/users/bad"))
	assert.Equal(t, "*fmt.wrapError (hidden: HideData)", d.Error)
}

func TestNoCredentialsShown(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"1"}`)
	}))
	defer api.Close()
	c := qcache.NewClient(qcache.WithBaseURL(api.URL), qcache.WithHeader("Authorization", "Bearer s3cret-token"),
		qcache.WithRequestEditor(func(r *http.Request) error { r.Header.Set("X-Api-Key", "k3y-value"); return nil }))
	defer c.Close()
	q := qcache.NewQuery[string, user](c, qcache.Endpoint{URL: "/users/$id"})
	_, err := q.Get(context.Background(), "1")
	require.NoError(t, err)
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()
	for _, path := range []string{"/", "/entries", "/entries/users/1", "/stats"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.NotContains(t, string(b), "s3cret", path)
		assert.NotContains(t, string(b), "k3y", path)
	}
}

func TestStats(t *testing.T) {
	f := newFixture(t)
	_, _ = f.users.Get(context.Background(), "1")
	_, _ = f.users.Get(context.Background(), "1")
	s, code := getJSON[Stats](t, f.url("/stats"))
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, 1, s.Client.Entries)
	require.Len(t, s.Queries, 1)
	assert.Equal(t, "users", s.Queries[0].Name)
	assert.Equal(t, uint64(2), s.Queries[0].Fetches, "StaleTime 0: the second Get fetched again")
	assert.Empty(t, s.Streams)
	assert.Nil(t, s.Bus)
}

func TestPageAndMethods(t *testing.T) {
	f := newFixture(t, AllowActions())
	resp, err := http.Get(f.url("/"))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	assert.Contains(t, string(b), `<meta name="qcache-token" content="`)
	assert.NotContains(t, string(b), "http://", "nothing loaded from elsewhere")
	assert.NotContains(t, string(b), "https://")
	for _, path := range []string{"/assets/app.js", "/assets/style.css"} {
		resp, err := http.Get(f.url(path))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.NotContains(t, string(b), "http://", path)
		assert.NotContains(t, string(b), "https://", path)
	}
	for path, code := range map[string]int{"/nope": 404, "/assets/other.js": 404, "/actions/explode": 404} {
		resp, err := http.Get(f.url(path))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, code, resp.StatusCode, path)
	}
	resp, err = http.Post(f.url("/entries"), "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// pageToken returns the action token of a freshly served page.
func pageToken(t *testing.T, f *fixture) string {
	t.Helper()
	resp, err := http.Get(f.url("/"))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, rest, ok := strings.Cut(string(b), `<meta name="qcache-token" content="`)
	require.True(t, ok)
	tok, _, _ := strings.Cut(rest, `"`)
	return tok
}

// flipped returns tok with one bit of its MAC changed.
func flipped(t *testing.T, tok string) string {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	require.NoError(t, err)
	b[20] ^= 1
	return base64.RawURLEncoding.EncodeToString(b)
}

func post(t *testing.T, url, body string, header map[string]string) (ActionResult, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var res ActionResult
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&res))
	}
	return res, resp.StatusCode
}

func TestActionsRefused(t *testing.T) {
	off := newFixture(t)
	off.users.SetData("1", user{})
	tok := pageToken(t, off)
	_, code := post(t, off.url("/actions/invalidate"), `{"key":"users/1"}`, map[string]string{TokenHeader: tok})
	assert.Equal(t, http.StatusForbidden, code, "actions are off by default")

	f := newFixture(t, AllowActions())
	f.users.SetData("1", user{})
	tok = pageToken(t, f)
	resp, err := http.Get(f.url("/actions/invalidate"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "GET on an action")
	assert.Equal(t, "POST", resp.Header.Get("Allow"))

	other := newFixture(t, AllowActions())
	for name, h := range map[string]map[string]string{
		"no token":                 {},
		"bad token":                {TokenHeader: flipped(t, tok)},
		"another handler's token":  {TokenHeader: pageToken(t, other)},
		"cross-site fetch":         {TokenHeader: tok, "Sec-Fetch-Site": "cross-site"},
		"same-site, other origin":  {TokenHeader: tok, "Sec-Fetch-Site": "same-site"},
		"another origin":           {TokenHeader: tok, "Origin": "https://evil.example"},
		"another origin, no token": {"Origin": "https://evil.example"},
	} {
		_, code := post(t, f.url("/actions/invalidate"), `{"key":"users/1"}`, h)
		assert.Equal(t, http.StatusForbidden, code, name)
	}
	assert.False(t, f.users.State("1").IsInvalidated, "nothing was done")

	for _, body := range []string{``, `{}`, `{"key":"users/1","prefix":"users"}`, `{"key":"a~b"}`} {
		_, code := post(t, f.url("/actions/invalidate"), body, map[string]string{TokenHeader: tok})
		assert.Equal(t, http.StatusBadRequest, code, body)
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t, AllowActions())
	for _, id := range []string{"1", "10", "2"} {
		f.users.SetData(id, user{})
	}
	tok := pageToken(t, f)
	same := map[string]string{TokenHeader: tok, "Sec-Fetch-Site": "same-origin", "Origin": f.srv.URL}

	res, code := post(t, f.url("/actions/invalidate"), `{"key":"users/1"}`, same)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, ActionResult{Action: "invalidate", Entries: 1}, res)
	assert.True(t, f.users.State("1").IsInvalidated)
	assert.False(t, f.users.State("10").IsInvalidated)

	res, code = post(t, f.url("/actions/refetch"), `{"prefix":"users/1"}`, map[string]string{TokenHeader: tok})
	require.Equal(t, http.StatusOK, code, "a script without Origin and Sec-Fetch-Site, with a token")
	assert.Equal(t, 2, res.Entries)
	assert.Equal(t, int64(2), f.fetches.Load(), "users/1 and users/10 refetched")
	assert.Equal(t, "fetched 10", f.users.State("10").Data.Name)

	res, code = post(t, f.url("/actions/remove"), `{"prefix":""}`, same)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, 3, res.Entries)
	assert.Empty(t, f.c.Keys(qcache.Filter{}))
}
