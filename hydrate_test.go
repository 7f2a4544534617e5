package qcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hydUser has a Validate method, so that Hydrate must call it.
type hydUser struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (u hydUser) Validate() error {
	if u.ID == "" {
		return errors.New("no id")
	}
	return nil
}

// hydQuery returns a client and a users query that answers "fetched" and
// counts its fetches; both end with t.
func hydQuery(t *testing.T, opts ...QueryOption) (*Client, *Query[string, hydUser], *source) {
	t.Helper()
	src := newSource(func(ctx context.Context, n int, p string) (string, error) { return "fetched", nil })
	c := NewClient()
	t.Cleanup(func() { c.Close() })
	q := NewQueryFunc(c, Key{"users"}, func(ctx context.Context, id string) (hydUser, error) {
		name, err := src.fetch(ctx, id)
		return hydUser{ID: id, Name: name}, err
	}, opts...)
	return c, q, src
}

func dehydrated(t *testing.T, c *Client, f Filter) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, c.Dehydrate(&buf, f))
	return &buf
}

func TestDehydrateFormat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the bubble's clock starts at 2000-01-01 00:00 UTC
		c, q, _ := hydQuery(t)
		q.SetData("42", hydUser{ID: "42", Name: "Ada <admin>"})
		q2 := NewQueryFunc(c, Key{"posts"}, func(ctx context.Context, p struct {
			User string
			Page int `query:"page"`
		}) (string, error) {
			return "", nil
		}, QueryName("posts"))
		time.Sleep(1500 * time.Millisecond)
		q2.SetData(struct {
			User string
			Page int `query:"page"`
		}{"42", 2}, "hello")
		require.NoError(t, q2.Invalidate(t.Context(), struct {
			User string
			Page int `query:"page"`
		}{"42", 2}))
		q.Use(t.Context(), "7", Enabled(false)).Close() // an entry without data: left out

		got := dehydrated(t, c, Filter{}).String()
		assert.Equal(t, `{"qcache":"dehydrate","v":1}
{"query":"users","key":["users","42"],"params":"42","data":{"id":"42","name":"Ada <admin>"},"updated_at":"2000-01-01T00:00:00Z"}
{"query":"posts","key":["posts","42","?page=2"],"params":{"User":"42","Page":2},"data":"hello","updated_at":"2000-01-01T00:00:01.5Z","invalidated":true}
`, got)
	})
}

func TestHydrateKeepsTheAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t, StaleTime(time.Minute))
		q1.SetData("1", hydUser{ID: "1", Name: "Ada"})
		t0 := time.Now()
		time.Sleep(40 * time.Second)
		snap := dehydrated(t, c1, Filter{})

		c2, q2, src := hydQuery(t, StaleTime(time.Minute))
		st, err := c2.Hydrate(snap)
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Restored: 1}, st)
		s := q2.State("1")
		assert.True(t, s.HasData)
		assert.Equal(t, StatusSuccess, s.Status)
		assert.True(t, s.DataUpdatedAt.Equal(t0), "DataUpdatedAt %v, want %v", s.DataUpdatedAt, t0)
		assert.False(t, s.IsStale, "40 s old with a StaleTime of 1 min: fresh")

		v, err := q2.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "Ada", v.Name)
		time.Sleep(20*time.Second - time.Nanosecond)
		v, err = q2.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "Ada", v.Name, "fresh until 1 min after it was fetched on the first client")
		assert.Equal(t, 0, src.count())

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.True(t, q2.State("1").IsStale, "stale 1 min after its DataUpdatedAt, not after Hydrate")
		v, err = q2.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "fetched", v.Name)
		assert.Equal(t, 1, src.count())
	})
}

func TestHydrateDataOlderThanStaleTimeIsStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t)
		q1.SetData("1", hydUser{ID: "1", Name: "Ada"})
		time.Sleep(2 * time.Minute)
		c2, q2, src := hydQuery(t, StaleTime(time.Minute))
		_, err := c2.Hydrate(dehydrated(t, c1, Filter{}))
		require.NoError(t, err)
		s := q2.State("1")
		assert.True(t, s.HasData)
		assert.True(t, s.IsStale)
		v, err := q2.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, "fetched", v.Name)
		assert.Equal(t, 1, src.count())
	})
}

func TestHydrateRestoresInvalidated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t, StaleTime(time.Hour))
		q1.SetData("1", hydUser{ID: "1", Name: "Ada"})
		require.NoError(t, q1.Invalidate(t.Context(), "1"))
		c2, q2, src := hydQuery(t, StaleTime(time.Hour))
		_, err := c2.Hydrate(dehydrated(t, c1, Filter{}))
		require.NoError(t, err)
		s := q2.State("1")
		assert.Equal(t, "Ada", s.Data.Name)
		assert.True(t, s.IsInvalidated)
		assert.True(t, s.IsStale, "invalidated: stale whatever StaleTime says")
		_, err = q2.Get(t.Context(), "1")
		require.NoError(t, err)
		assert.Equal(t, 1, src.count())
	})
}

func TestHydrateNeverOverwritesNewerData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t)
		c2, q2, _ := hydQuery(t)
		q2.SetData("old", hydUser{ID: "old", Name: "cache"}) // older than the snapshot
		time.Sleep(time.Second)
		for _, id := range []string{"old", "same", "new"} {
			q1.SetData(id, hydUser{ID: id, Name: "snapshot"})
		}
		q2.SetData("same", hydUser{ID: "same", Name: "cache"}) // as old as the snapshot
		time.Sleep(time.Second)
		q2.SetData("new", hydUser{ID: "new", Name: "cache"}) // newer than the snapshot

		st, err := c2.Hydrate(dehydrated(t, c1, Filter{}))
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Restored: 1, Older: 2}, st)
		assert.Equal(t, "snapshot", q2.State("old").Data.Name, "the snapshot's data is newer: restored")
		assert.Equal(t, "cache", q2.State("same").Data.Name, "as new: kept")
		assert.Equal(t, "cache", q2.State("new").Data.Name, "newer: kept")
		assert.True(t, q2.State("new").DataUpdatedAt.Equal(time.Now()))
	})
}

func TestHydrateSkipsBadLinesAndKeepsTheOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q, _ := hydQuery(t)
		now := time.Now().UTC().Format(time.RFC3339Nano)
		line := func(query, key, params, data string) string {
			return fmt.Sprintf(`{"query":%q,"key":%s,"params":%s,"data":%s,"updated_at":%q}`, query, key, params, data, now)
		}
		in := strings.Join([]string{
			`{"qcache":"dehydrate","v":1,"written_by":"a newer qcache"}`,
			line("users", `["users","1"]`, `"1"`, `{"id":"1","name":"Ada"}`),
			line("orders", `["orders","1"]`, `"1"`, `{}`),                          // unknown query
			`{"query":"users","key":["users","2"],"para`,                           // corrupted
			line("users", `["users","3"]`, `"3"`, `{"id":"","name":"no id"}`),      // Validate fails
			line("users", `["users","4"]`, `"4"`, `"a string, not a user"`),        // wrong type
			`{"query":"users","key":["users","5"],"params":"5","data":{"id":"5"}}`, // no updated_at
			line("users", `["users","6"]`, `"7"`, `{"id":"6"}`),                    // params give another key
			line("users", `["users","8"]`, `8`, `{"id":"8"}`),                      // params of another type
			``, // a blank line is no entry
			line("users", `["users","9"]`, `"9"`, `{"id":"9","name":"Bea"}`),
			`{"query":"users","key":["users","10"],"params":"10","data":{"id":"10","na`, // truncated last line
		}, "\n")
		st, err := c.Hydrate(strings.NewReader(in))
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Restored: 2, UnknownQuery: 3, BadLine: 3, Invalid: 2}, st)
		assert.Equal(t, 8, st.Skipped())
		assert.Equal(t, "Ada", q.State("1").Data.Name)
		assert.Equal(t, "Bea", q.State("9").Data.Name)
		assert.Equal(t, []Key{{"users", "1"}, {"users", "9"}}, sortedKeys(c.Keys(Filter{})),
			"no entry is created for a skipped line")
	})
}

func sortedKeys(ks []Key) []Key {
	out := append([]Key(nil), ks...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].String() < out[i].String() {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestHydrateRefusesAnUnknownFormat(t *testing.T) {
	entry := `{"query":"users","key":["users","1"],"params":"1","data":{"id":"1"},"updated_at":"2000-01-01T00:00:00Z"}` + "\n"
	for _, in := range []string{
		"",
		"\n" + entry,
		entry,
		`{"qcache":"something else","v":1}` + "\n" + entry,
		`{"qcache":"dehydrate","v":2}` + "\n" + entry,
		`{"qcache":"dehydrate","v":0}` + "\n" + entry,
		"\x00\x01binary",
	} {
		c, q, _ := hydQuery(t)
		st, err := c.Hydrate(strings.NewReader(in))
		require.ErrorIs(t, err, ErrSnapshotFormat, "%q", in)
		assert.Equal(t, HydrateStats{}, st)
		assert.False(t, q.State("1").HasData, "nothing is restored from %q", in)
	}
	c, _, _ := hydQuery(t)
	_, err := c.Hydrate(strings.NewReader(`{"qcache":"dehydrate","v":2}`))
	assert.ErrorContains(t, err, "version 2, this qcache reads version 1")
}

type failingReader struct {
	r   *strings.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, _ := f.r.Read(p)
	if n == 0 {
		return 0, f.err
	}
	return n, nil
}

func TestHydrateReadError(t *testing.T) {
	c, q, _ := hydQuery(t)
	q.SetData("1", hydUser{ID: "1", Name: "Ada"})
	snap := dehydrated(t, c, Filter{}).String()
	c2, q2, _ := hydQuery(t)
	boom := errors.New("disk on fire")
	st, err := c2.Hydrate(&failingReader{r: strings.NewReader(snap), err: boom})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, HydrateStats{Restored: 1}, st, "what was read before the error stays restored")
	assert.Equal(t, "Ada", q2.State("1").Data.Name)
}

func TestHydrateLongLine(t *testing.T) {
	c, q, _ := hydQuery(t)
	in := `{"qcache":"dehydrate","v":1}` + "\n" +
		`{"query":"users","key":["users","1"],"params":"1","data":{"id":"1","name":"` + strings.Repeat("x", 200<<10) + `"},"updated_at":"2000-01-01T00:00:00Z"}` + "\n" +
		`{"query":"users","key":["users","2"],"params":"2","data":{"id":"2"},"updated_at":"2000-01-01T00:00:00Z"}` + "\n"
	st, err := c.Hydrate(strings.NewReader(in))
	require.NoError(t, err)
	assert.Equal(t, HydrateStats{Restored: 2}, st, "a line longer than the reader's buffer is read whole")
	assert.Len(t, q.State("1").Data.Name, 200<<10)

	small := NewClient(WithMaxResponseBytes(1 << 10)) // lines up to 4 KiB + 64 KiB
	defer small.Close()
	NewQueryFunc(small, Key{"users"}, func(ctx context.Context, id string) (hydUser, error) { return hydUser{}, nil })
	st, err = small.Hydrate(strings.NewReader(in))
	require.NoError(t, err)
	assert.Equal(t, HydrateStats{Restored: 1, BadLine: 1}, st, "a line past the bound is skipped, the next one read")
}

func TestHydrateSharedNames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fetch := func(ctx context.Context, id string) (string, error) { return "fetched", nil }
		c1 := NewClient()
		defer c1.Close()
		a1 := NewQueryFunc(c1, Key{"users"}, fetch, QueryName("users"), KeyPrefix("a"))
		b1 := NewQueryFunc(c1, Key{"users"}, fetch, QueryName("users"), KeyPrefix("b"))
		a1.SetData("1", "from a")
		b1.SetData("1", "from b")
		snap := dehydrated(t, c1, Filter{}).String()

		c2 := NewClient()
		defer c2.Close()
		a2 := NewQueryFunc(c2, Key{"users"}, fetch, QueryName("users"), KeyPrefix("a"))
		b2 := NewQueryFunc(c2, Key{"users"}, fetch, QueryName("users"), KeyPrefix("b"))
		st, err := c2.Hydrate(strings.NewReader(snap))
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Restored: 2}, st, "queries sharing a name are told apart by their keys")
		assert.Equal(t, "from a", a2.State("1").Data)
		assert.Equal(t, "from b", b2.State("1").Data)

		c3 := NewClient()
		defer c3.Close()
		x := NewQueryFunc(c3, Key{"users"}, fetch, QueryName("users"), KeyPrefix("a"))
		y := NewQueryFunc(c3, Key{"users"}, fetch, QueryName("users"), KeyPrefix("a"))
		st, err = c3.Hydrate(strings.NewReader(snap))
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Ambiguous: 1, UnknownQuery: 1}, st, "same name, same key: no guess")
		assert.False(t, x.State("1").HasData)
		assert.False(t, y.State("1").HasData)
	})
}

// A fetch in flight is left alone: Hydrate sets the (older) data now, and
// the fetch's result replaces it when it lands; its waiters get that.
func TestHydrateWithAFetchInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t)
		q1.SetData("1", hydUser{ID: "1", Name: "snapshot"})
		snap := dehydrated(t, c1, Filter{})
		time.Sleep(time.Second)

		src := newSource(slowValue(10 * time.Second))
		c2 := NewClient()
		defer c2.Close()
		q2 := NewQueryFunc(c2, Key{"users"}, func(ctx context.Context, id string) (hydUser, error) {
			v, err := src.fetch(ctx, id)
			return hydUser{ID: id, Name: v}, err
		}, StaleTime(time.Hour))
		var got hydUser
		var wg sync.WaitGroup
		wg.Go(func() {
			var err error
			got, err = q2.Get(context.Background(), "1")
			assert.NoError(t, err)
		})
		synctest.Wait()
		require.True(t, q2.State("1").IsFetching())

		st, err := c2.Hydrate(snap)
		require.NoError(t, err)
		assert.Equal(t, HydrateStats{Restored: 1}, st)
		s := q2.State("1")
		assert.Equal(t, "snapshot", s.Data.Name, "restored at once")
		assert.True(t, s.IsFetching(), "the fetch goes on")
		assert.Equal(t, "snapshot", must(q2.Get(t.Context(), "1")).Name, "fresh: Get does not wait for the fetch")

		wg.Wait() // 10 s later
		assert.Equal(t, value(1, "1"), got.Name, "the waiter gets the fetch's result")
		s = q2.State("1")
		assert.Equal(t, value(1, "1"), s.Data.Name, "the newer fetched data replaced the restored data")
		assert.True(t, s.DataUpdatedAt.Equal(time.Now()))
		assert.Equal(t, 1, src.count())
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestHydratedEntriesFollowGCTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t)
		q1.SetData("1", hydUser{ID: "1"})
		c2, q2, _ := hydQuery(t, GCTime(5*time.Minute))
		_, err := c2.Hydrate(dehydrated(t, c1, Filter{}))
		require.NoError(t, err)
		time.Sleep(5*time.Minute - time.Nanosecond)
		synctest.Wait()
		assert.True(t, q2.State("1").HasData)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.False(t, q2.State("1").HasData, "an unobserved hydrated entry goes after GCTime")
		assert.Equal(t, 0, c2.Stats().Entries)
	})
}

func TestHydrateNotifiesObservers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, q1, _ := hydQuery(t)
		q1.SetData("1", hydUser{ID: "1", Name: "Ada"})
		c2, q2, _ := hydQuery(t)
		obs := q2.Use(t.Context(), "1", Enabled(false))
		defer obs.Close()
		synctest.Wait()
		_, err := c2.Hydrate(dehydrated(t, c1, Filter{}))
		require.NoError(t, err)
		synctest.Wait()
		var last State[hydUser]
	drain:
		for {
			select {
			case last = <-obs.Changes():
			default:
				break drain
			}
		}
		assert.Equal(t, "Ada", last.Data.Name)
	})
}

func TestHydrateAndDehydrateAfterClose(t *testing.T) {
	c, q, _ := hydQuery(t)
	q.SetData("1", hydUser{ID: "1", Name: "Ada"})
	require.NoError(t, c.Close())
	snap := dehydrated(t, c, Filter{})
	assert.Contains(t, snap.String(), `"Ada"`, "a closed client's last state can be saved")
	_, err := c.Hydrate(snap)
	assert.ErrorIs(t, err, ErrClosed)
}

func TestDehydrateFilterAndUnencodableData(t *testing.T) {
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"things"}, func(ctx context.Context, id string) (any, error) { return nil, nil })
	q.SetData("ok", "fine")
	q.SetData("fn", func() {})
	q.SetData("ch", make(chan int))
	var buf bytes.Buffer
	err := c.Dehydrate(&buf, Filter{})
	var de *DehydrateError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 2, de.Skipped)
	assert.ErrorContains(t, err, "2 entries left out")

	c2 := NewClient()
	defer c2.Close()
	q2 := NewQueryFunc(c2, Key{"things"}, func(ctx context.Context, id string) (any, error) { return nil, nil })
	st, err := c2.Hydrate(&buf)
	require.NoError(t, err)
	assert.Equal(t, HydrateStats{Restored: 1}, st, "the snapshot holds the rest, whole")
	assert.Equal(t, "fine", q2.State("ok").Data)

	buf.Reset()
	require.NoError(t, c.Dehydrate(&buf, Filter{Key: Key{"things", "ok"}}))
	assert.Equal(t, 2, strings.Count(buf.String(), "\n"), "header and the one entry the filter selects")
	buf.Reset()
	require.NoError(t, c.Dehydrate(&buf, Filter{Stale: Not}))
	assert.Equal(t, 1, strings.Count(buf.String(), "\n"), "StaleTime 0: no fresh entry, only the header")
}

func TestDehydrateLeavesLocalQueriesOut(t *testing.T) {
	c := NewClient()
	defer c.Close()
	shared := NewQueryFunc(c, Key{"shared"}, func(ctx context.Context, id string) (string, error) { return id, nil })
	local := NewQueryFunc(c, Key{"local"}, func(ctx context.Context, id string) (func(), error) { return nil, nil }, Local())
	shared.SetData("a", "A")
	local.SetData("a", func() {}) // would not encode: Local keeps it from being tried at all
	var buf bytes.Buffer
	require.NoError(t, c.Dehydrate(&buf, Filter{}))
	assert.Equal(t, 2, strings.Count(buf.String(), "\n"), "the header and the shared query's one entry")
	assert.Contains(t, buf.String(), `"key":["shared","a"]`)
	assert.NotContains(t, buf.String(), `"local"`)
}

type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestDehydrateWriteError(t *testing.T) {
	c, q, _ := hydQuery(t)
	for i := range 2000 {
		q.SetData(fmt.Sprint(i), hydUser{ID: fmt.Sprint(i), Name: strings.Repeat("x", 100)})
	}
	err := c.Dehydrate(&errWriter{n: 100 << 10}, Filter{})
	assert.ErrorContains(t, err, "disk full")
}

// Hydrate runs while Gets, SetData, Invalidate and Remove change the same
// entries, and Close ends it; run with -race.
func TestHydrateConcurrentWithUseAndClose(t *testing.T) {
	for round := range 8 {
		rng := rand.New(rand.NewPCG(uint64(round), 1))
		c1, q1, _ := hydQuery(t)
		for i := range 200 {
			q1.SetData(fmt.Sprint(i), hydUser{ID: fmt.Sprint(i), Name: "snapshot"})
		}
		snap := dehydrated(t, c1, Filter{}).String()

		c, q, _ := hydQuery(t, StaleTime(time.Hour))
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 4 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for range 300 {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprint(r.IntN(200))
					switch r.IntN(4) {
					case 0:
						_, err := q.Get(context.Background(), id)
						if err != nil {
							assert.True(t, errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled), "%v", err) // Close, or Remove
						}
					case 1:
						q.SetData(id, hydUser{ID: id, Name: "set"})
					case 2:
						_ = q.Invalidate(context.Background(), id)
					case 3:
						q.Remove(id)
					}
				}
			})
		}
		for range 3 {
			st, err := c.Hydrate(strings.NewReader(snap))
			require.NoError(t, err)
			assert.Equal(t, 200, st.Restored+st.Older)
		}
		closeAt := rng.IntN(3)
		var hydrateErr error
		wg.Go(func() { _, hydrateErr = c.Hydrate(strings.NewReader(snap)) })
		if closeAt > 0 {
			time.Sleep(time.Duration(closeAt) * 100 * time.Microsecond)
		}
		c.Close()
		close(stop)
		wg.Wait()
		if hydrateErr != nil {
			assert.ErrorIs(t, hydrateErr, ErrClosed)
		}
		for i := range 200 {
			if s := q.State(fmt.Sprint(i)); s.HasData {
				assert.Contains(t, []string{"snapshot", "set", "fetched"}, s.Data.Name)
			}
		}
	}
}

// The signatures shared/API.md names.
var (
	_ func(*Client, io.Writer, Filter) error         = (*Client).Dehydrate
	_ func(*Client, io.Reader) (HydrateStats, error) = (*Client).Hydrate
)

// restoreJSON is the primitive on anyEntry that Hydrate's rule rests on,
// for tiers that find entries by key.
func TestRestoreJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, q, _ := hydQuery(t, StaleTime(time.Minute))
		q.SetData("1", hydUser{ID: "1", Name: "cache"})
		es := c.matching(Filter{Key: Key{"users", "1"}, Exact: true})
		require.Len(t, es, 1)
		e := es[0]
		now := time.Now()

		ok, err := e.restoreJSON([]byte(`{"id":"1","name":"older"}`), now.Add(-time.Second), false)
		require.NoError(t, err)
		assert.False(t, ok, "older than the entry's data")
		_, err = e.restoreJSON([]byte(`{"id":""}`), now.Add(time.Second), false)
		assert.ErrorContains(t, err, "no id", "validated as a fetched body is")
		_, err = e.restoreJSON([]byte(`[1`), now.Add(time.Second), false)
		assert.ErrorContains(t, err, "decode into qcache.hydUser")
		assert.Equal(t, "cache", q.State("1").Data.Name)

		time.Sleep(30 * time.Second)
		ok, err = e.restoreJSON([]byte(`{"id":"1","name":"newer"}`), now.Add(10*time.Second), false)
		require.NoError(t, err)
		assert.True(t, ok)
		s := q.State("1")
		assert.Equal(t, "newer", s.Data.Name)
		assert.False(t, s.IsStale)
		time.Sleep(40*time.Second - time.Nanosecond)
		assert.False(t, q.State("1").IsStale)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.True(t, q.State("1").IsStale, "stale StaleTime after the restored DataUpdatedAt")

		ok, err = e.restoreJSON([]byte(`{"id":"1","name":"from a clock ahead"}`), time.Now().Add(time.Hour), false)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.True(t, q.State("1").DataUpdatedAt.Equal(time.Now()), "a time ahead of this clock counts as now")

		ok, err = e.restoreJSON([]byte(`{"id":"1","name":"invalidated"}`), time.Now().Add(time.Hour), true)
		require.NoError(t, err)
		assert.False(t, ok, "as new as the entry's data: not restored")
		time.Sleep(time.Second)
		ok, err = e.restoreJSON([]byte(`{"id":"1","name":"invalidated"}`), time.Now(), true)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.True(t, q.State("1").IsInvalidated)
		assert.True(t, q.State("1").IsStale)

		q.Remove("1")
		ok, err = e.restoreJSON([]byte(`{"id":"1","name":"late"}`), time.Now().Add(time.Second), false)
		require.NoError(t, err)
		assert.False(t, ok, "a removed entry takes nothing")
	})
}
