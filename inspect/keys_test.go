package inspect

import (
	"testing"

	"github.com/qcache-go/qcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyPath(t *testing.T) {
	for _, tc := range []struct {
		key  qcache.Key
		path string
	}{
		{qcache.Key{"users", "42"}, "users/42"},
		{qcache.Key{"users", "42", "?page=2"}, "users/42/%3Fpage=2"},
		{qcache.Key{"a/b", "c d"}, "a%2Fb/c%20d"},
		{qcache.Key{"", ".", "..", "~", "~x", "..."}, "~/~./~../%7E/%7Ex/..."},
		{qcache.Key{}, "~~"},
		{qcache.Key{"é"}, "%C3%A9"},
	} {
		assert.Equal(t, tc.path, KeyPath(tc.key), "%q", tc.key)
		k, err := parseKeyPath(tc.path)
		require.NoError(t, err, tc.path)
		assert.Equal(t, tc.key, k, tc.path)
	}
	for _, bad := range []string{"", "a//b", "a/~b", "~~/a", "a/%zz", "~.x"} {
		_, err := parseKeyPath(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzKeyPath(f *testing.F) {
	f.Add("users", "42", "?page=2")
	f.Add("", ".", "..")
	f.Add("~", "a/b", "%2F")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for _, k := range []qcache.Key{{a}, {a, b}, {a, b, c}} {
			got, err := parseKeyPath(KeyPath(k))
			require.NoError(t, err, "%q", k)
			require.Equal(t, k, got)
		}
	})
}

func TestHasTextPrefix(t *testing.T) {
	k := []string{"users", "42", "?page=2"}
	for prefix, want := range map[string]bool{
		"": true, "u": true, "users": true, "users/": true, "users/4": true, "users/42": true,
		"users/42?": true, "users/42?page=2": true, "users/42?page=22": false, "users/42/": false,
		"users/5": false, "usersx": false, "/users": false,
	} {
		assert.Equal(t, want, hasTextPrefix(k, prefix), "%q", prefix)
		assert.Equal(t, want, len(prefix) <= len(keyText(k)) && keyText(k)[:len(prefix)] == prefix, "the definition, %q", prefix)
	}
	assert.True(t, hasTextPrefix(nil, ""))
	assert.False(t, hasTextPrefix(nil, "a"))
	assert.True(t, hasTextPrefix([]string{"?q=1"}, "?q"))
}
