package qcache

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// fuzzRouteKey carries, in the handler's context, the function a route
// calls to say it was chosen.
type fuzzRouteKey struct{}

func fuzzRecord(name string, h MessageHandler) MessageHandler {
	return func(ctx context.Context, msg []byte) error {
		ctx.Value(fuzzRouteKey{}).(func(string))(name)
		if h != nil {
			return h(ctx, msg)
		}
		return nil
	}
}

// FuzzRoute feeds arbitrary bytes to Route in front of the real handlers
// (SetDataHandler, InvalidateHandler) and recording ones. Nothing may panic;
// on valid UTF-8 JSON, the route chosen must be the one encoding/json sees
// in the top-level "type" string (the last one when it is repeated), and no
// route may be chosen for anything else. Seeds are in
// testdata/fuzz/FuzzRoute.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{
		`{"type":"user","id":"1","name":"a"}`,
		`{"type":"inv","key":["users","1"]}`,
		`{"type":""}`,
		`{"type":"\u00e9"}`,
		`{"type":"a\"b"}`,
		`{"typ\u0065":"user","id":"2"}`,
		`{"type":"user","type":"nope"}`,
		`{"meta":{"type":"user"},"type":"inv"}`,
		`{"type":["user"]}`,
		`{"type":"user","id":7}`,
		`[{"type":"user"}]`,
		`{"type":"user"`,
	} {
		f.Add([]byte(s))
	}
	c := NewClient()
	f.Cleanup(func() { c.Close() })
	q := NewQueryFunc(c, Key{"fuzz"}, func(context.Context, string) (wsUser, error) {
		return wsUser{}, errors.New("no fetching here")
	}, StaleTime(Forever), Retry(0))
	routes := map[string]MessageHandler{
		"user": fuzzRecord("user", SetDataHandler(q, func(u wsUser) string { return u.ID })),
		"inv": fuzzRecord("inv", InvalidateHandler(c, func(msg []byte) (Filter, error) {
			var m struct{ Key []string }
			err := json.Unmarshal(msg, &m)
			return Filter{Key: m.Key, Refetch: RefetchNone}, err
		})),
		"":    fuzzRecord("", nil),
		"é":   fuzzRecord("é", nil),
		`a"b`: fuzzRecord(`a"b`, nil),
	}
	h := Route("type", routes)
	f.Fuzz(func(t *testing.T, msg []byte) {
		var chosen []string
		ctx := context.WithValue(context.Background(), fuzzRouteKey{}, func(name string) { chosen = append(chosen, name) })
		err := h(ctx, msg)
		require.LessOrEqualf(t, len(chosen), 1, "%q: %d routes chosen: %q", msg, len(chosen), chosen)
		if !json.Valid(msg) || !utf8.Valid(msg) {
			return // Route does not validate what it skips: anything but a panic will do
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(msg, &m) != nil {
			require.Truef(t, len(chosen) == 0 && err != nil, "%q is not an object, yet routed to %q, err %v", msg, chosen, err)
			return
		}
		raw, ok := m["type"]
		var want string
		if ok && (raw[0] != '"' || json.Unmarshal(raw, &want) != nil) {
			ok = false
		}
		if _, known := routes[want]; !ok || !known {
			require.Truef(t, len(chosen) == 0 && err != nil,
				"%q: encoding/json sees type %q (present %v), yet routed to %q, err %v", msg, want, ok, chosen, err)
			return
		}
		require.Equalf(t, []string{want}, chosen, "%q: encoding/json sees type %q, routed to %q (err %v)", msg, want, chosen, err)
		require.Truef(t, err == nil || want == "user" || want == "inv", "%q: a handler that accepts everything failed: %v", msg, err)
	})
}
