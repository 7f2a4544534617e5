package inspect_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/inspect"
)

// Mount the inspector under /debug/qcache/ and read its JSON API.
func ExampleHandler() {
	client := qcache.NewClient()
	defer client.Close()
	users := qcache.NewQueryFunc(client, qcache.Key{"users"}, func(ctx context.Context, id string) (string, error) {
		return "user " + id, nil
	})
	users.SetData("42", "Ada")

	mux := http.NewServeMux()
	mux.Handle("/debug/qcache/", http.StripPrefix("/debug/qcache", inspect.Handler(client)))
	srv := httptest.NewServer(mux) // in a service: behind its own authentication
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/debug/qcache/entries?prefix=users/")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var page inspect.Page
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		panic(err)
	}
	for _, r := range page.Rows {
		fmt.Println(r.KeyText, r.Status, r.FetchStatus, r.DataSize, "bytes")
	}
	fmt.Println(inspect.KeyPath(qcache.Key{"users", "42", "?page=2"}))
	// Output:
	// users/42 success idle 5 bytes
	// users/42/%3Fpage=2
}
