package inspect

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"

	"github.com/qcache-go/qcache"
)

// KeyPath returns k as the inspector writes it in URLs, /entries/{key}:
// its segments, each percent-encoded as a URL path segment (so "/" in a
// segment is %2F and "?" is %3F), joined by "/". The segments a URL path
// cannot carry as they are, which routers and browsers would resolve or
// drop, are written with a "~": an empty segment is "~", "." is "~." and
// ".." is "~.."; "~" itself is always written %7E; and the key with no
// segments at all is "~~". So Key{"users", "42", "?page=2"} is
// "users/42/%3Fpage=2", and every key has exactly one form.
func KeyPath(k qcache.Key) string {
	if len(k) == 0 {
		return "~~"
	}
	var b strings.Builder
	for i, s := range k {
		if i > 0 {
			b.WriteByte('/')
		}
		switch s {
		case "", ".", "..":
			b.WriteByte('~')
			b.WriteString(s)
		default:
			b.WriteString(strings.ReplaceAll(url.PathEscape(s), "~", "%7E"))
		}
	}
	return b.String()
}

var errBadKey = errors.New("malformed key")

// parseKeyPath is the inverse of KeyPath, for an escaped path.
func parseKeyPath(p string) (qcache.Key, error) {
	if p == "" {
		return nil, errBadKey
	}
	if p == "~~" {
		return qcache.Key{}, nil
	}
	parts := strings.Split(p, "/")
	k := make(qcache.Key, len(parts))
	for i, s := range parts {
		switch {
		case s == "~" || s == "~." || s == "~..":
			k[i] = s[1:]
			continue
		case s == "" || strings.Contains(s, "~"):
			return nil, errBadKey
		}
		v, err := url.PathUnescape(s)
		if err != nil {
			return nil, errBadKey
		}
		k[i] = v
	}
	return k, nil
}

// keyText is k as Key.String writes it: segments joined by "/", a query
// segment ("?…") appended directly.
func keyText(k []string) string { return qcache.Key(k).String() }

// hasTextPrefix reports whether keyText(k) starts with prefix, without
// building it: the inspector's filter is a text prefix of the key as it
// prints, so "users/4" selects users/4 and users/42.
func hasTextPrefix(k []string, prefix string) bool {
	for i, s := range k {
		if prefix == "" {
			return true
		}
		if i > 0 && !strings.HasPrefix(s, "?") {
			if prefix[0] != '/' {
				return false
			}
			prefix = prefix[1:]
		}
		if len(prefix) <= len(s) {
			return strings.HasPrefix(s, prefix)
		}
		if prefix[:len(s)] != s {
			return false
		}
		prefix = prefix[len(s):]
	}
	return prefix == ""
}

// pos is a place in the inspector's order: by key, segment by segment, then
// by query name for entries of two queries that share a key.
type pos struct {
	key   []string
	query string
}

func cmpPos(a, b pos) int {
	if c := slices.Compare(a.key, b.key); c != 0 {
		return c
	}
	return strings.Compare(a.query, b.query)
}

// A cursor is opaque to its users: base64url of a JSON array, the query
// name then the key's segments.
func encodeCursor(p pos) string {
	b, _ := json.Marshal(append([]string{p.query}, p.key...))
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*pos, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("malformed cursor")
	}
	var parts []string
	if err := json.Unmarshal(b, &parts); err != nil || len(parts) == 0 {
		return nil, errors.New("malformed cursor")
	}
	return &pos{query: parts[0], key: parts[1:]}, nil
}
