package inspect

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qcache-go/qcache"
	"github.com/stretchr/testify/require"
)

// BenchmarkFirstPage measures the server's time for the first page of
// 100 rows (GET /entries?limit=100, JSON included) over 100,000 entries,
// unfiltered, filtered by a prefix, and deep in the order (a cursor).
func BenchmarkFirstPage(b *testing.B) {
	c := qcache.NewClient()
	defer c.Close()
	q := qcache.NewQueryFunc(c, qcache.Key{"users"}, func(ctx context.Context, id string) (user, error) {
		return user{}, nil
	}, qcache.StaleTime(qcache.Forever))
	for i := range 100_000 {
		id := fmt.Sprintf("%06d", i)
		q.SetData(id, user{ID: id, Name: "user " + id})
	}
	h := Handler(c)
	// The cursor of the page that starts at entry 50,000.
	cursor := encodeCursor(pos{key: []string{"users", "049999"}, query: "users"})
	for _, bc := range []struct{ name, query string }{
		{"all", "limit=100"},
		{"prefix", "limit=100&prefix=users/05"},
		{"cursor", "limit=100&cursor=" + cursor},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			defer func() { b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
			for b.Loop() {
				rr := httptest.NewRecorder()
				h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/entries?"+bc.query, nil))
				if rr.Code != http.StatusOK || !strings.Contains(rr.Body.String(), `"rows":[{`) {
					b.Fatal(rr.Code, rr.Body.String()[:200])
				}
			}
		})
	}
}

// BenchmarkFollowPolling runs 10,000 observers polling every second and
// reports what the cache did per second (fetches, state changes) with no
// inspector page open and with one open over a real connection, and what
// the page received: events and rows per second. Each iteration is 100 ms
// of real time; run it with -benchtime=30x.
func BenchmarkFollowPolling(b *testing.B) {
	for _, open := range []bool{false, true} {
		name := "closed"
		if open {
			name = "open"
		}
		b.Run(name, func(b *testing.B) {
			c := qcache.NewClient()
			defer c.Close()
			var fetches atomic.Int64
			q := qcache.NewQueryFunc(c, qcache.Key{"poll"}, func(ctx context.Context, id int) (int, error) {
				return int(fetches.Add(1)), nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var obs []*qcache.Observer[int]
			for i := range 10_000 {
				obs = append(obs, q.Use(ctx, i, qcache.RefetchInterval(time.Second)))
			}
			defer func() {
				for _, o := range obs {
					o.Close()
				}
			}()
			var events, rows atomic.Int64
			var wg sync.WaitGroup
			if open {
				srv := httptest.NewServer(Handler(c))
				defer srv.Close()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events?limit=100", nil)
				require.NoError(b, err)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(b, err)
				defer resp.Body.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					sc := bufio.NewScanner(resp.Body)
					sc.Buffer(nil, 1<<24)
					for sc.Scan() {
						line := sc.Text()
						if strings.HasPrefix(line, "event: ") {
							events.Add(1)
						}
						if strings.HasPrefix(line, "data: ") {
							rows.Add(int64(strings.Count(line, `"id":`)))
						}
					}
				}()
			}
			time.Sleep(2 * time.Second) // the observers' first fetches
			f0, e0, r0 := fetches.Load(), events.Load(), rows.Load()
			start := time.Now()
			for b.Loop() {
				time.Sleep(100 * time.Millisecond)
			}
			d := time.Since(start).Seconds()
			b.ReportMetric(float64(fetches.Load()-f0)/d, "fetches/s")
			b.ReportMetric(2*float64(fetches.Load()-f0)/d, "changes/s") // a poll is two changes: fetch started, fetched
			if open {
				b.ReportMetric(float64(events.Load()-e0)/d, "events/s")
				b.ReportMetric(float64(rows.Load()-r0)/d, "rows/s")
			}
			cancel()
			wg.Wait()
		})
	}
}
