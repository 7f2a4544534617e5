package qcache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/qcache-go/qcache"
)

type wsProfile struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ExampleClient_SubscribeWS shows the seed page's "WebSocket integration":
// a screen observes a profile and opens a socket for it; pushes land in the
// cache with SetData and reach the observer at once. The observer and the
// stream share one context, so they end together.
func ExampleClient_SubscribeWS() {
	srv, stop := startWSExampleServer()
	defer stop()

	c := qcache.NewClient(qcache.WithBaseURL(srv.URL))
	defer c.Close()
	profiles := qcache.NewQuery[string, wsProfile](c, qcache.Endpoint{URL: "/profiles/$id"},
		qcache.StaleTime(time.Minute))

	// The screen's lifetime: cancel it and both the observer and the stream end.
	ctx, cancel := context.WithCancel(context.Background())
	o := profiles.Use(ctx, "1")
	st := <-o.Changes()
	for !st.HasData {
		st = <-o.Changes()
	}
	fmt.Println("fetched:", st.Data.Name)

	s := c.SubscribeWS(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws",
		qcache.Route("type", map[string]qcache.MessageHandler{
			"profile": qcache.SetDataHandler(profiles, func(p wsProfile) string { return p.ID }),
		}),
		// After every connect, reconnects included: say what we want pushed.
		qcache.WSOnConnect(func(ctx context.Context, s *qcache.WSStream) error {
			return s.Send(ctx, []byte(`{"subscribe":"profiles/1"}`))
		}),
	)

	for st := range o.Changes() {
		if st.Data.Name != "Ada" {
			fmt.Println("pushed:", st.Data.Name)
			break
		}
	}

	cancel() // the screen goes away
	<-s.Done()
	fmt.Println("stream ended, connected:", s.Connected())
	// Output:
	// fetched: Ada
	// pushed: Ada Lovelace
	// stream ended, connected: false
}

// startWSExampleServer serves GET /profiles/{id} and, at /ws, pushes one
// change to whoever subscribes. stop waits for its handlers to return.
func startWSExampleServer() (*httptest.Server, func()) {
	var wg sync.WaitGroup
	mux := http.NewServeMux()
	mux.HandleFunc("GET /profiles/{id}", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wsProfile{ID: r.PathValue("id"), Name: "Ada"})
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := context.Background()
		for {
			_, msg, err := conn.Read(ctx) // also answers pings and the close frame
			if err != nil {
				return
			}
			var sub struct{ Subscribe string }
			if json.Unmarshal(msg, &sub) == nil && sub.Subscribe == "profiles/1" {
				conn.Write(ctx, websocket.MessageText, []byte(`{"type":"profile","id":"1","name":"Ada Lovelace"}`))
			}
		}
	})
	srv := httptest.NewServer(mux)
	return srv, func() {
		srv.Close()
		wg.Wait()
	}
}
