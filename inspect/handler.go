package inspect

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/internal/introspect"
)

// Option configures a Handler.
type Option func(*config)

type config struct {
	actions   bool
	hideData  bool
	dataLimit int
	interval  time.Duration
}

// AllowActions turns on the page's actions, and POST /actions/…:
// invalidate, refetch and remove an entry or every entry under a key
// prefix. They are off by default. Even with them on, an action needs the
// token of a page the handler served and is refused for cross-origin
// requests; each one is logged at Info on the client's logger.
func AllowActions() Option { return func(c *config) { c.actions = true } }

// HideData keeps entries' data out of the inspector, for services that
// cache personal data: the detail view and GET /entries/{key} show no data,
// and errors show their type (an *HTTPError its method, URL and status,
// without its body) instead of their text. Data sizes are still shown.
func HideData() Option { return func(c *config) { c.hideData = true } }

// DataLimit bounds the pretty-printed JSON of an entry's data that the
// detail view shows (default 64 KiB); longer data is cut, with a note.
func DataLimit(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.dataLimit = n
		}
	}
}

// UpdateInterval sets how often an open page gets the changes of its rows
// and the totals, batched (default 200 ms). Shorter is livelier and costs
// more when many entries change.
func UpdateInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.interval = d
		}
	}
}

type handler struct {
	c    *qcache.Client
	view introspect.Client
	cfg  config
	log  *slog.Logger
	key  []byte // signs the pages' action tokens
	cop  *http.CrossOriginProtection

	sizeMu sync.Mutex
	sizes  map[introspect.Entry]sizeOf
}

// Handler returns the inspector of c: a page that shows what the cache
// holds and does, live, and a JSON API (see the package documentation).
// Mount it under a prefix with http.StripPrefix, behind the service's own
// authentication, as one mounts net/http/pprof:
//
//	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", inspect.Handler(client)))
//
// The handler never shows header values, credentials, nor anything of the
// client's request editors. It starts no goroutine of its own: an open
// page's live updates run on the goroutine of its request, and end with it.
func Handler(c *qcache.Client, opts ...Option) http.Handler {
	if c == nil {
		panic("inspect: Handler: nil Client")
	}
	cfg := config{dataLimit: 64 << 10, interval: 200 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	h := &handler{c: c, view: introspect.Of(c), cfg: cfg, key: make([]byte, 32),
		cop: http.NewCrossOriginProtection(), sizes: map[introspect.Entry]sizeOf{}}
	h.log = h.view.Logger()
	_, _ = rand.Read(h.key)
	return h
}

//go:embed assets
var assets embed.FS

var pageTmpl = template.Must(template.ParseFS(assets, "assets/index.html"))

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	path := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case path == "":
		if get(w, r) {
			h.servePage(w, r)
		}
	case path == "assets/app.js" || path == "assets/style.css":
		if get(w, r) {
			h.serveAsset(w, r, path)
		}
	case path == "entries":
		if get(w, r) {
			h.serveEntries(w, r)
		}
	case strings.HasPrefix(path, "entries/"):
		if get(w, r) {
			h.serveEntry(w, r)
		}
	case path == "stats":
		if get(w, r) {
			writeJSON(w, h.stats())
		}
	case path == "events":
		if get(w, r) {
			h.serveEvents(w, r)
		}
	case strings.HasPrefix(path, "actions/"):
		h.serveAction(w, r, strings.TrimPrefix(path, "actions/"))
	default:
		http.NotFound(w, r)
	}
}

// get answers 405 to anything but GET and HEAD, and reports whether the
// request goes on.
func get(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	httpError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	err := pageTmpl.Execute(&b, struct {
		Token    string
		Actions  bool
		HideData bool
		Interval int64
	}{h.newToken(), h.cfg.actions, h.cfg.hideData, h.cfg.interval.Milliseconds()})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(b.Bytes())
}

func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request, path string) {
	b, err := assets.ReadFile(path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ct := "text/css; charset=utf-8"
	if strings.HasSuffix(path, ".js") {
		ct = "text/javascript; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
}

func (h *handler) serveEntries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l, err := parseListing(q.Get("prefix"), q.Get("cursor"), q.Get("limit"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, _ := h.page(l)
	writeJSON(w, p)
}

// Detail is the answer of GET /entries/{key}: the row, the data as
// pretty-printed JSON and the entry's recorded changes.
type Detail struct {
	Row
	Data          string   `json:"data,omitempty"`           // pretty-printed JSON, cut at DataLimit
	DataTruncated bool     `json:"data_truncated,omitempty"` // Data was cut
	DataHidden    bool     `json:"data_hidden,omitempty"`    // HideData
	DataError     string   `json:"data_error,omitempty"`     // the data does not encode as JSON
	History       []Change `json:"history"`                  // oldest first; empty when no history is kept
	HistoryKept   bool     `json:"history_kept"`             // an inspector page is open, or WithHistory
}

// Change is one state change of an entry.
type Change struct {
	At           int64  `json:"at"` // Unix milliseconds
	Event        string `json:"event"`
	Status       string `json:"status"`
	FetchStatus  string `json:"fetch_status"`
	FailureCount int    `json:"failure_count"`
	Error        string `json:"error,omitempty"`
}

func (h *handler) serveEntry(w http.ResponseWriter, r *http.Request) {
	raw := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "entries/")
	key, err := parseKeyPath(raw)
	if err != nil {
		httpError(w, http.StatusBadRequest, "key: "+err.Error())
		return
	}
	e := lookup(h.view, key, r.URL.Query().Get("query"))
	if e == nil {
		httpError(w, http.StatusNotFound, "no entry "+keyText(key))
		return
	}
	d := Detail{Row: h.row(e), History: []Change{}}
	switch {
	case h.cfg.hideData:
		d.DataHidden = true
	case d.HasData:
		d.Data, d.DataTruncated, d.DataError = h.pretty(e)
	}
	hist := e.InspectHistory()
	d.HistoryKept = hist != nil
	for _, c := range hist {
		ch := Change{At: c.At.UnixMilli(), Event: c.Event, Status: c.Status, FetchStatus: c.FetchStatus, FailureCount: c.FailureCount}
		if c.Err != nil {
			ch.Error = h.errText(c.Err)
		}
		d.History = append(d.History, ch)
	}
	writeJSON(w, d)
}

// pretty returns e's data as indented JSON, cut at DataLimit.
func (h *handler) pretty(e introspect.Entry) (text string, cutOff bool, errText string) {
	data, _, ok := e.InspectData()
	if !ok {
		return "", false, ""
	}
	b, err := json.MarshalIndent(data, "", "  ")
	if err != nil {
		return "", false, cut(err.Error(), 512)
	}
	if n := h.cfg.dataLimit; len(b) > n {
		for n > 0 && !utf8.RuneStart(b[n]) {
			n-- // cut between characters
		}
		return string(b[:n]), true, ""
	}
	return string(b), false, ""
}

// Stats is the answer of GET /stats.
type Stats struct {
	Now     int64               `json:"now"` // Unix milliseconds
	Client  qcache.Stats        `json:"client"`
	Queries []qcache.QueryStats `json:"queries"`
	Streams []Stream            `json:"streams"`
	Bus     *qcache.BusStats    `json:"bus,omitempty"` // nil without WithBus
}

// Stream is a WebSocket stream of the client (SubscribeWS) that has not
// ended.
type Stream struct {
	URL       string `json:"url"` // without user info
	Connected bool   `json:"connected"`
	Connects  uint64 `json:"connects"`
	Messages  uint64 `json:"messages"`
	Errors    uint64 `json:"errors"`
}

func (h *handler) stats() Stats {
	s := Stats{Now: time.Now().UnixMilli(), Client: h.c.Stats(), Queries: h.c.QueryStats(), Streams: []Stream{}}
	for _, st := range h.view.Streams() {
		s.Streams = append(s.Streams, Stream(st))
	}
	if h.c.BusOrigin() != "" {
		b := h.c.BusStats()
		s.Bus = &b
	}
	return s
}

// ---------- actions ----------

// tokens: base64url of a random nonce and its HMAC under the handler's key.
// Every page gets its own; only pages this handler served can act.
func (h *handler) newToken() string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(append(nonce, h.mac(nonce)...))
}

func (h *handler) mac(nonce []byte) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("qcache inspect token\x00"))
	m.Write(nonce)
	return m.Sum(nil)[:16]
}

func (h *handler) validToken(tok string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) != 32 {
		return false
	}
	return hmac.Equal(b[16:], h.mac(b[:16]))
}

// TokenHeader is the request header that carries an action's token: the
// one in the page's <meta name="qcache-token">.
const TokenHeader = "X-Qcache-Token"

// actionRequest is the JSON body of POST /actions/{action}.
type actionRequest struct {
	Key    string  `json:"key"`    // one key, as KeyPath writes it
	Prefix *string `json:"prefix"` // or every entry whose key starts with this text
}

// ActionResult is the answer to an action.
type ActionResult struct {
	Action  string `json:"action"`
	Entries int    `json:"entries"` // entries it applied to
	Error   string `json:"error,omitempty"`
}

func (h *handler) serveAction(w http.ResponseWriter, r *http.Request, action string) {
	if action != "invalidate" && action != "refetch" && action != "remove" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		httpError(w, http.StatusMethodNotAllowed, "actions are POST")
		return
	}
	if !h.cfg.actions {
		httpError(w, http.StatusForbidden, "actions are off (inspect.AllowActions)")
		return
	}
	if err := h.cop.Check(r); err != nil {
		httpError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if !h.validToken(r.Header.Get(TokenHeader)) {
		httpError(w, http.StatusForbidden, "missing or invalid "+TokenHeader)
		return
	}
	var req actionRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "body: want {\"key\": …} or {\"prefix\": …}")
		return
	}
	var f qcache.Filter
	var what []any
	switch {
	case req.Prefix != nil && req.Key == "":
		prefix := *req.Prefix
		f.Predicate = func(k qcache.Key) bool { return hasTextPrefix(k, prefix) }
		what = []any{"prefix", prefix}
	case req.Prefix == nil && req.Key != "":
		k, err := parseKeyPath(req.Key)
		if err != nil {
			httpError(w, http.StatusBadRequest, "key: "+err.Error())
			return
		}
		f.Key, f.Exact = k, true
		what = []any{"key", keyText(k)}
	default:
		httpError(w, http.StatusBadRequest, "body: want one of key and prefix")
		return
	}
	n := len(h.c.Keys(f))
	var err error
	switch action {
	case "invalidate":
		err = h.c.Invalidate(r.Context(), f)
	case "refetch":
		err = h.c.Refetch(r.Context(), f)
	case "remove":
		h.c.Remove(f)
	}
	h.log.InfoContext(r.Context(), "qcache inspect: action",
		append([]any{"action", action, "entries", n, "remote", r.RemoteAddr}, what...)...)
	res := ActionResult{Action: action, Entries: n}
	if err != nil && !errors.Is(err, qcache.ErrClosed) {
		res.Error = cut(err.Error(), 512)
	}
	writeJSON(w, res)
}

// ---------- answers ----------

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	_, _ = w.Write(append(b, '\n'))
}

func httpStatusText(code int) string { return http.StatusText(code) }
