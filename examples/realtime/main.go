// Command realtime walks through the seven patterns of the seed page
// "Real-time Updates" with qcache, in the page's order, against a demo API
// it starts on loopback. It prints a timestamped account of what happens:
// each request the API serves and each message it pushes, each state an
// observer sees, and what the program does. It takes about 14 seconds and
// exits by itself.
//
//	go run ./examples/realtime             # the walk-through
//	go run ./examples/realtime -scale 0.2  # the same, five times faster
//	go run ./examples/realtime -h          # what it shows
//
// Each pattern is one function below, headed by the seed's TypeScript
// intent in one line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/inspect"
)

const usage = `Usage: go run ./examples/realtime [-scale factor]

Walks through the seven patterns of the seed page "Real-time Updates" with
qcache, in order, against a demo API that it starts on loopback: users whose
status changes over time, a build job that runs to completion, and a
WebSocket feed at /ws that pushes user updates.

  1. Polling                        Use(ctx, id, RefetchInterval(d))
  2. Conditional polling            SetOptions(RefetchInterval(d or 0)) as isActive flips
  3. Refetch on window focus        Client.SetFocused(false), then SetFocused(true)
  4. Manual refetch                 Observer.Refetch, IsRefetching while it runs
  5. Interval only when stale       getUser.RefetchIntervalFunc with StaleTime
  6. WebSocket integration          SubscribeWS with Route and SetDataHandler
  7. Invalidate on interval         Client.InvalidateEvery

Each line starts with the time since the start. "api" lines are requests
and pushes as the server sees them, "observer" lines are the states an
observer delivers on Changes (as a UI would render them), "app" lines are
what the program does. The seed's timings (5 s polls, 30 s stale time)
become fractions of a second; the run takes about 14 s and exits 0.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli parses args, runs the walk-through and returns the exit code.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("realtime", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	scale := fs.Float64("scale", 1, "multiply every timing by `factor` (0.2 runs in about 3 s)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || !(*scale > 0) || math.IsInf(*scale, 0) {
		fmt.Fprintln(stderr, "realtime: -scale must be a positive number and there are no arguments")
		fs.Usage()
		return 2
	}
	if err := run(ctx, stdout, *scale); err != nil {
		fmt.Fprintln(stderr, "realtime:", err)
		return 1
	}
	return 0
}

// The timings at -scale 1. The seed polls every 5 s and counts data stale
// after 30 s; here everything is shorter so that the run fits in seconds.
const (
	latency     = 100 * time.Millisecond  // how long the API takes to answer
	slowLatency = 600 * time.Millisecond  // ... for user 4, to watch a refetch run
	statusEvery = 900 * time.Millisecond  // a user's status changes this often
	jobTakes    = 1200 * time.Millisecond // the build job runs this long
	pushEvery   = 400 * time.Millisecond  // the WebSocket feed pushes this often
	staleTime   = time.Second             // getUser's StaleTime (the seed's 30 s)
)

// User is what GET /users/{id} returns and the feed pushes.
type User struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Status   string    `json:"status"` // online, away, busy
	LastSeen time.Time `json:"lastSeen"`
}

// Job is what GET /jobs/{id} returns.
type Job struct {
	ID       string `json:"id"`
	State    string `json:"state"` // running, done
	Progress int    `json:"progress"`
}

// demo holds what every pattern uses: the clock, the output and the client.
type demo struct {
	ctx   context.Context
	scale float64
	start time.Time
	mu    sync.Mutex // serialises writes to out
	out   io.Writer

	http    *http.Client
	wsURL   string
	client  *qcache.Client
	getUser *qcache.Query[string, User]
	getJob  *qcache.Query[string, Job]
}

func run(ctx context.Context, out io.Writer, scale float64) error {
	d := &demo{ctx: ctx, scale: scale, start: time.Now(), out: out}

	api := startAPI(d)
	defer api.Close()
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	d.http = &http.Client{Transport: transport}
	d.wsURL = "ws" + strings.TrimPrefix(api.URL, "http") + "/ws"

	d.client = qcache.NewClient(qcache.WithBaseURL(api.URL), qcache.WithHTTPClient(d.http))
	defer d.client.Close()
	// Declared once, as the seed's getUser: data is fresh for staleTime.
	d.getUser = qcache.NewQuery[string, User](d.client,
		qcache.Endpoint{URL: "/users/$userId"}, qcache.StaleTime(d.at(staleTime)))
	d.getJob = qcache.NewQuery[string, Job](d.client, qcache.Endpoint{URL: "/jobs/$jobId"})

	fmt.Fprintf(out, "qcache real-time walk-through (-scale %g): demo API on %s, getUser with StaleTime(%v)\n",
		scale, api.URL, d.at(staleTime))
	insp := startInspector(d.client)
	defer insp.close()
	fmt.Fprintf(out, "inspector: open %s/debug/qcache/ to watch the cache live while this runs\n", insp.URL)
	for _, pattern := range []func(){
		d.polling,
		d.conditionalPolling,
		d.refetchOnFocus,
		d.manualRefetch,
		d.intervalWhenStale,
		d.webSocket,
		d.invalidateOnInterval,
	} {
		if ctx.Err() != nil {
			break
		}
		pattern()
	}

	st := d.client.Stats()
	if err := d.client.Close(); err != nil { // ends every observer, poller and stream left
		return err
	}
	fmt.Fprintf(out, "\nDone in %.1fs: %d fetches, %d failed; %d observers left open.\n",
		time.Since(d.start).Seconds(), st.Fetches, st.FetchErrors, st.Observers)
	return ctx.Err()
}

// inspector serves the cache inspector (package inspect) on loopback,
// mounted as a service mounts it (behind its own authentication there).
type inspector struct {
	*httptest.Server
	cancel context.CancelFunc
}

func startInspector(c *qcache.Client) *inspector {
	mux := http.NewServeMux()
	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", inspect.Handler(c, inspect.AllowActions())))
	srv := httptest.NewUnstartedServer(mux)
	// An open page keeps a request running (its live feed): its context
	// ends with this one, so that Close does not wait for the browser.
	ctx, cancel := context.WithCancel(context.Background())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	return &inspector{Server: srv, cancel: cancel}
}

func (i *inspector) close() {
	i.cancel()
	i.Close()
}

// 1. Polling.
// seed: getUser.use({ urlParams: { userId }, refetchInterval: 5000 })
func (d *demo) polling() {
	every := d.at(500 * time.Millisecond)
	d.heading("1. Polling", "refetchInterval: 5000, // Refetch every 5 seconds",
		fmt.Sprintf("getUser.Use(ctx, \"1\", qcache.RefetchInterval(%v))", every))

	obs := d.getUser.Use(d.ctx, "1", qcache.RefetchInterval(every))
	wait := watch(d, obs, d.showUser)
	d.sleep(2000 * time.Millisecond)
	obs.Close() // the component unmounts: polling stops
	wait()
}

// 2. Conditional polling.
// seed: getUser.use({ urlParams: { userId }, refetchInterval: isActive ? 5000 : false })
func (d *demo) conditionalPolling() {
	every := d.at(250 * time.Millisecond)
	d.heading("2. Conditional Polling", "refetchInterval: isActive ? 5000 : false, // Only poll when active",
		fmt.Sprintf("obs.SetOptions(qcache.RefetchInterval(%v)) when isActive turns true, RefetchInterval(0) when false", every))

	// The Go form of `isActive ? 5000 : false`, applied live with SetOptions
	// whenever isActive changes (React would re-render with new options).
	refetchInterval := func(isActive bool) qcache.UseOption {
		if isActive {
			return qcache.RefetchInterval(every)
		}
		return qcache.RefetchInterval(0)
	}
	setActive := func(obs *qcache.Observer[Job], isActive bool) {
		if isActive {
			d.logf("app", "isActive = true: obs.SetOptions(qcache.RefetchInterval(%v))", every)
		} else {
			d.logf("app", "isActive = false: obs.SetOptions(qcache.RefetchInterval(0))")
		}
		obs.SetOptions(refetchInterval(isActive))
	}

	obs := d.getJob.Use(d.ctx, "build-2", refetchInterval(false))
	wait := watch(d, obs, showJob)
	d.logf("app", "the job panel is in the background (isActive = false): one fetch on mount, no polling")
	d.sleep(500 * time.Millisecond)
	setActive(obs, true) // the user opens the panel
	d.sleep(1200 * time.Millisecond)
	setActive(obs, false) // ... and leaves it
	d.sleep(500 * time.Millisecond)
	obs.Close()
	wait()
}

// 3. Refetch on window focus.
// seed: getUser.use({ urlParams: { userId }, refetchOnWindowFocus: true })
func (d *demo) refetchOnFocus() {
	d.heading("3. Refetch on Window Focus", "refetchOnWindowFocus: true,",
		"getUser.Use(ctx, \"3\", qcache.RefetchOnFocus(qcache.WhenStale)); client.SetFocused(false), then (true)")

	// WhenStale is the default, and what `true` means in TanStack Query:
	// regaining focus refetches data that is stale, and leaves fresh data be.
	obs := d.getUser.Use(d.ctx, "3", qcache.RefetchOnFocus(qcache.WhenStale))
	wait := watch(d, obs, d.showUser)
	d.sleep(300 * time.Millisecond)

	d.logf("app", "window loses focus: client.SetFocused(false)")
	d.client.SetFocused(false)
	d.sleep(200 * time.Millisecond)
	d.logf("app", "focus is back while the data is fresh: client.SetFocused(true) fetches nothing")
	d.client.SetFocused(true)
	d.sleep(300 * time.Millisecond)

	d.logf("app", "window loses focus again: client.SetFocused(false)")
	d.client.SetFocused(false)
	d.sleep(500 * time.Millisecond) // the data turns stale meanwhile
	d.logf("app", "focus is back and the data is stale: client.SetFocused(true) refetches")
	d.client.SetFocused(true)
	d.sleep(300 * time.Millisecond)
	obs.Close()
	wait()
}

// 4. Manual refetch.
// seed: <button onClick={() => refetch()} disabled={isRefetching}>{isRefetching ? 'Refreshing...' : 'Refresh'}</button>
func (d *demo) manualRefetch() {
	d.heading("4. Manual Refetch", "<button onClick={() => refetch()} disabled={isRefetching}>",
		"obs.Refetch(ctx) on click; obs.State().IsRefetching() disables the button (user 4 answers slowly)")

	obs := d.getUser.Use(d.ctx, "4")
	wait := watch(d, obs, func(s qcache.State[User]) string {
		button := "[Refresh]"
		if s.IsRefetching() {
			button = "[Refreshing...] (disabled)"
		}
		return d.showUser(s) + "  " + button
	})
	d.sleep(750 * time.Millisecond)

	var clicks sync.WaitGroup
	click := func() {
		if obs.State().IsRefetching() {
			d.logf("app", "click on Refresh: ignored, the button is disabled while IsRefetching()")
			return
		}
		d.logf("app", "click on Refresh: obs.Refetch(ctx)")
		clicks.Go(func() {
			began := time.Now()
			s, err := obs.Refetch(d.ctx)
			if err != nil {
				d.logf("app", "refetch failed after %v: %v", since(began), err)
				return
			}
			d.logf("app", "refetch returned after %v: %s", since(began), d.showUser(s))
		})
	}
	click()
	d.sleep(200 * time.Millisecond)
	click() // while the first one runs
	clicks.Wait()
	d.sleep(200 * time.Millisecond)
	obs.Close()
	wait()
}

// 5. Refetch on interval with condition.
// seed: refetchInterval: (query) => query.state.dataUpdatedAt < Date.now() - 30000 ? 5000 : false
func (d *demo) intervalWhenStale() {
	stale, every := d.at(staleTime), d.at(200*time.Millisecond)
	d.heading("5. Refetch on Interval with Condition", "refetchInterval: (query) => query.state.dataUpdatedAt < Date.now() - 30000 ? 5000 : false,",
		fmt.Sprintf("getUser.RefetchIntervalFunc(...): %v once the data is %v old, else 0; StaleTime(%v)", every, stale, stale))

	// Only refetch if data is stale. StaleTime(stale) on getUser is what
	// makes the observer ask the function again when the data turns stale.
	interval := func(s qcache.State[User]) time.Duration {
		if time.Since(s.DataUpdatedAt) >= stale {
			return every
		}
		return 0
	}
	// The same function, saying so when its answer changes. It is called
	// on the observer's goroutine only.
	last := time.Duration(-1)
	logged := func(s qcache.State[User]) time.Duration {
		v := interval(s)
		if v != last {
			last = v
			why := "no data yet"
			if s.HasData {
				why = fmt.Sprintf("data is %.2fs old", time.Since(s.DataUpdatedAt).Seconds())
			}
			if v > 0 {
				d.logf("app", "interval func: %s, poll in %v", why, v)
			} else {
				d.logf("app", "interval func: %s, 0 (no polling)", why)
			}
		}
		return v
	}

	obs := d.getUser.Use(d.ctx, "5", d.getUser.RefetchIntervalFunc(logged))
	wait := watch(d, obs, d.showUser)
	d.sleep(2800 * time.Millisecond)
	obs.Close()
	wait()
}

// 6. WebSocket integration.
// seed: ws.onmessage = (event) => queryClient.setQueryData(getUser.queryKey.dataTag({ urlParams: { userId } }), JSON.parse(event.data))
func (d *demo) webSocket() {
	d.heading("6. WebSocket Integration", "ws.onmessage = (event) => { queryClient.setQueryData(getUser.queryKey..., JSON.parse(event.data)) }",
		"client.SubscribeWS(ctx, url, qcache.Route(\"type\", {\"user\": qcache.SetDataHandler(getUser, ...)})), same ctx as the observer")

	// The component's lifetime: the observer and the stream share ctx, so
	// cancelling it ends both (the seed's `return () => ws.close()`).
	ctx, unmount := context.WithCancel(d.ctx)
	defer unmount()

	obs := d.getUser.Use(ctx, "6")
	wait := watch(d, obs, d.showUser)

	// Messages are {"type":"user", ...the user's fields}: Route picks the
	// handler by "type", SetDataHandler decodes the user and stores it
	// with getUser.SetData(u.ID, u), which the observer sees at once.
	onMessage := qcache.Route("type", map[string]qcache.MessageHandler{
		"user": qcache.SetDataHandler(d.getUser, func(u User) string { return u.ID }),
	})
	stream := d.client.SubscribeWS(ctx, d.wsURL, onMessage,
		qcache.WSOnConnect(func(ctx context.Context, s *qcache.WSStream) error {
			d.logf("app", "stream connected: subscribing to user 6")
			return s.Send(ctx, []byte(`{"type":"subscribe","userId":"6"}`))
		}),
		// After a reconnect, refetch what the feed covers (pushes were missed).
		qcache.WSResync(qcache.Filter{Key: d.getUser.Key("6"), Exact: true}),
		qcache.WSOnError(func(err error) { d.logf("app", "stream error: %v", err) }),
		qcache.WSDialOptions(&websocket.DialOptions{HTTPClient: d.http}),
	)
	d.sleep(1800 * time.Millisecond)

	d.logf("app", "unmount: cancel the context shared by the observer and the stream")
	unmount()
	<-stream.Done()
	wait() // Changes is closed: the observer ended with the context
	st := stream.Stats()
	d.logf("app", "stream and observer ended: %d connect, %d messages, %d errors", st.Connects, st.Messages, st.Errors)
}

// 7. Invalidate on interval.
// seed: setInterval(() => getUser.invalidate(queryClient, { urlParams: { userId } }), 30000)
func (d *demo) invalidateOnInterval() {
	every := d.at(500 * time.Millisecond)
	d.heading("7. Invalidate on Interval", "setInterval(() => { getUser.invalidate(queryClient, { urlParams: { userId } }) }, 30000)",
		fmt.Sprintf("stop := client.InvalidateEvery(ctx, %v, qcache.Filter{Key: getUser.Key(\"7\"), Exact: true})", every))

	obs := d.getUser.Use(d.ctx, "7")
	wait := watch(d, obs, d.showUser)
	stop := d.client.InvalidateEvery(d.ctx, every, qcache.Filter{Key: d.getUser.Key("7"), Exact: true})
	d.sleep(1700 * time.Millisecond)
	stop() // the seed's clearInterval
	d.logf("app", "stop(): no more invalidations")
	obs.Close()
	wait()
}

// ---------- output ----------

// watch prints each state obs delivers on Changes, as a UI would render it
// (skipping a state that renders as the one before), until the observer
// ends. The returned function waits for that.
func watch[T any](d *demo, obs *qcache.Observer[T], render func(qcache.State[T]) string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := ""
		for s := range obs.Changes() {
			if line := render(s); line != last {
				d.logf("observer", "%s", line)
				last = line
			}
		}
	}()
	return func() { <-done }
}

func (d *demo) showUser(s qcache.State[User]) string {
	var b strings.Builder
	switch {
	case s.HasData:
		fmt.Fprintf(&b, "%s is %s (seen at %.2fs)", s.Data.Name, s.Data.Status, s.Data.LastSeen.Sub(d.start).Seconds())
	case s.Err != nil:
		fmt.Fprintf(&b, "error: %v", s.Err)
	default:
		b.WriteString("no data yet")
	}
	b.WriteString(flags(s))
	return b.String()
}

func showJob(s qcache.State[Job]) string {
	if !s.HasData {
		return "job: no data yet" + flags(s)
	}
	return fmt.Sprintf("job %s: %s, %d%%%s", s.Data.ID, s.Data.State, s.Data.Progress, flags(s))
}

// flags says what else the state tells, beyond the data.
func flags[T any](s qcache.State[T]) string {
	var f []string
	switch {
	case s.IsLoading():
		f = append(f, "loading")
	case s.IsRefetching():
		f = append(f, "refetching")
	}
	if s.Err != nil && s.HasData {
		f = append(f, "error: "+s.Err.Error())
	}
	switch {
	case s.IsInvalidated:
		f = append(f, "invalidated")
	case s.IsStale && s.HasData:
		f = append(f, "stale")
	}
	if len(f) == 0 {
		return ""
	}
	return " [" + strings.Join(f, ", ") + "]"
}

func (d *demo) heading(title, seed, goForm string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "\n== %s ==\n   seed: %s\n   Go:   %s\n", title, seed, goForm)
}

// logf prints one line stamped with the time since the start.
func (d *demo) logf(who, format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%6.3fs] %-9s %s\n", time.Since(d.start).Seconds(), who, fmt.Sprintf(format, args...))
}

// at scales a timing by -scale.
func (d *demo) at(t time.Duration) time.Duration { return time.Duration(float64(t) * d.scale) }

// sleep waits for t, scaled, or until the program is interrupted.
func (d *demo) sleep(t time.Duration) {
	timer := time.NewTimer(d.at(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-d.ctx.Done():
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// ---------- the demo API ----------

// api is the upstream service: GET /users/{id}, GET /jobs/{id} and a
// WebSocket feed at /ws. Its data changes with time, as a real service's.
type api struct {
	*httptest.Server
	d     *demo
	ctx   context.Context // ends on Close, ending the feeds
	stop  context.CancelFunc
	feeds sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]time.Time // when each job started
}

var people = map[string]struct {
	name string
	slow bool
}{
	"1": {name: "Ada Lovelace"},
	"3": {name: "Grace Hopper"},
	"4": {name: "Margaret Hamilton", slow: true},
	"5": {name: "Barbara Liskov"},
	"6": {name: "Ken Thompson"},
	"7": {name: "Frances Allen"},
}

var statuses = []string{"online", "away", "busy"}

func startAPI(d *demo) *api {
	a := &api{d: d, jobs: map[string]time.Time{}}
	a.ctx, a.stop = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", a.serveUser)
	mux.HandleFunc("GET /jobs/{id}", a.serveJob)
	mux.HandleFunc("GET /ws", a.serveFeed)
	a.Server = httptest.NewServer(mux)
	return a
}

// Close ends the feeds, waits for them, and closes the server.
func (a *api) Close() {
	a.stop()
	a.feeds.Wait()
	a.Server.Close()
}

// user returns id's profile as of now: the status moves on every
// statusEvery, and the user was last seen now.
func (a *api) user(id string) (User, bool) {
	p, ok := people[id]
	if !ok {
		return User{}, false
	}
	now := time.Now()
	n := int(now.Sub(a.d.start)/a.d.at(statusEvery)) + int(id[0])
	return User{ID: id, Name: p.name, Status: statuses[n%len(statuses)], LastSeen: now}, true
}

func (a *api) serveUser(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, ok := people[id]
	if !ok {
		http.NotFound(w, r)
		return
	}
	wait, note := a.d.at(latency), ""
	if p.slow {
		wait, note = a.d.at(slowLatency), fmt.Sprintf(" (slow: answers in %v)", a.d.at(slowLatency))
	}
	a.d.logf("api", "GET %s%s", r.URL.Path, note)
	if !pause(r.Context(), wait) {
		return
	}
	u, _ := a.user(id)
	writeJSON(w, u)
}

func (a *api) serveJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a.mu.Lock()
	started, ok := a.jobs[id]
	if !ok {
		started = time.Now()
		a.jobs[id] = started // a job starts when first asked about
	}
	a.mu.Unlock()
	a.d.logf("api", "GET %s", r.URL.Path)
	if !pause(r.Context(), a.d.at(latency)) {
		return
	}
	job := Job{ID: id, State: "running", Progress: min(100, int(100*time.Since(started)/a.d.at(jobTakes)))}
	if job.Progress == 100 {
		job.State = "done"
	}
	writeJSON(w, job)
}

// serveFeed waits for {"type":"subscribe","userId":"6"}, then pushes
// {"type":"user", ...} with that user's profile every pushEvery until the
// client goes away or the API closes.
func (a *api) serveFeed(w http.ResponseWriter, r *http.Request) {
	a.feeds.Add(1)
	defer a.feeds.Done()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(a.ctx, cancel)()

	var sub struct {
		Type   string `json:"type"`
		UserID string `json:"userId"`
	}
	if err := wsjson.Read(ctx, conn, &sub); err != nil || sub.Type != "subscribe" {
		conn.Close(websocket.StatusPolicyViolation, "want a subscribe message")
		return
	}
	a.d.logf("api", "ws: client subscribed to user %s", sub.UserID)
	ctx = conn.CloseRead(ctx) // answers the client's close frame; ends ctx then
	tick := time.NewTicker(a.d.at(pushEvery))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			conn.Close(websocket.StatusGoingAway, "")
			return
		case <-tick.C:
		}
		u, ok := a.user(sub.UserID)
		if !ok {
			conn.Close(websocket.StatusPolicyViolation, "no such user")
			return
		}
		a.d.logf("api", "ws push: %s is %s", u.Name, u.Status)
		msg := struct {
			Type string `json:"type"`
			User
		}{"user", u}
		if err := wsjson.Write(ctx, conn, msg); err != nil {
			return
		}
	}
}

// pause waits for t or until the request is gone; it reports whether t
// passed.
func pause(ctx context.Context, t time.Duration) bool {
	timer := time.NewTimer(t)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
