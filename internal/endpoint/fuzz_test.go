package endpoint

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParse checks that the template parser never panics and that any
// template it accepts can be bound by a struct with one string field per
// variable, producing a path that parses as a URL.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"/users/$userId",
		"/users/$userId/posts/{postId}?active=true",
		"/files/$id.json",
		"https://api.example.com/v1/$a{b}/c",
		"http://[::1]:8080/$x?y=z&y=w",
		"/a/$",
		"/a/{",
		"/a/{}",
		"/a/$x/$x",
		"/a?x=$y",
		"ftp://x/$y",
		"/a/../b",
		"/",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		// Must not panic, whatever the type.
		if b, err := Compile(tmpl, reflect.TypeFor[struct{}]()); err == nil {
			require.Empty(t, b.Vars(), "Compile(%q, struct{}) accepted variables", tmpl)
			_, _, _, err := b.Bind(struct{}{})
			require.NoError(t, err, "Bind")
		}
		_, _ = Compile(tmpl, reflect.TypeFor[string]())

		var probe Binding
		if err := probe.parse(tmpl); err != nil {
			return
		}
		vars := probe.vars
		fields := make([]reflect.StructField, len(vars))
		for i, v := range vars {
			fields[i] = reflect.StructField{
				Name: fmt.Sprintf("F%d", i),
				Type: reflect.TypeFor[string](),
				Tag:  reflect.StructTag(fmt.Sprintf(`path:%q`, v)),
			}
		}
		typ := reflect.StructOf(fields)
		b, err := Compile(tmpl, typ)
		require.NoError(t, err, "parse accepted %q but Compile failed", tmpl)
		p := reflect.New(typ).Elem()
		for i := range vars {
			p.Field(i).SetString("v/?#" + fmt.Sprint(i))
		}
		path, query, key, err := b.Bind(p.Interface())
		require.NoError(t, err, "Bind(%q)", tmpl)
		full := path
		if !b.Absolute() {
			full = "http://api.test" + path
		}
		u, err := url.Parse(full)
		require.NoError(t, err, "bound URL %q does not parse", full)
		if !b.Absolute() {
			require.Equal(t, "api.test", u.Host, "bound URL %q: host", full)
		}
		require.Empty(t, u.RawQuery, "bound URL %q has a query", full)
		require.Empty(t, u.Fragment, "bound URL %q has a fragment", full)
		if query != "" {
			require.Equal(t, "?"+query, key[len(key)-1], "key %q does not end in query %q", key, query)
		}
	})
}

// FuzzBind binds arbitrary strings into /a/$x/b and checks the path has
// exactly three segments, that the value round-trips, and that the host is
// unchanged.
func FuzzBind(f *testing.F) {
	for _, h := range hostile {
		f.Add(h.in)
	}
	f.Add("")
	f.Add("%")
	f.Add("%%2F")
	type X struct{ X string }
	b, err := Compile("/a/$x/b", reflect.TypeFor[X]())
	require.NoError(f, err)
	abs, err := Compile("https://api.test/a/$x/b", reflect.TypeFor[X]())
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, x string) {
		path, query, key, err := b.Bind(X{x})
		if x == "" || dotAfterUnescaping(x) {
			require.ErrorIs(t, err, ErrInvalidPathValue, "value %q: want it refused", x)
			return
		}
		require.NoError(t, err)
		require.Empty(t, query, "query %q key %q", query, key)
		require.Len(t, key, 3, "query %q key %q", query, key)
		checkSafePath(t, path, x)
		u, err := url.Parse("http://api.test" + path)
		require.NoError(t, err)
		segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
		require.Len(t, segs, 3, "path %q: segments", path)
		got, err := url.PathUnescape(segs[1])
		require.NoError(t, err, "segment %q", segs[1])
		require.Equal(t, x, got, "segment %q decodes", segs[1])

		apath, _, akey, err := abs.Bind(X{x})
		require.NoError(t, err)
		au, err := url.Parse(apath)
		require.NoError(t, err, "absolute %q", apath)
		require.Equal(t, "api.test", au.Host, "absolute %q", apath)
		require.Equal(t, "https", au.Scheme, "absolute %q", apath)
		require.Equal(t, path, au.EscapedPath(), "absolute %q", apath)
		require.Equal(t, strings.Join(key, "\x00"), strings.Join(akey, "\x00"), "absolute key %q != %q", akey, key)
	})
}

// FuzzKey checks key segment counts and that keys round-trip to the bound
// values (so distinct parameters never share a key).
func FuzzKey(f *testing.F) {
	f.Add("42", "7", 0, "")
	f.Add("42", "7", 2, "x y")
	f.Add("..", ".", -1, "&q=1")
	f.Add("a/b", "?c", 3, "#")
	type K struct {
		A    string
		B    string `path:"b"`
		Page int    `query:"page,omitempty"`
		Q    string `query:"q,omitempty"`
	}
	b, err := Compile("/users/$a/posts/{b}?v=1", reflect.TypeFor[K]())
	require.NoError(f, err)
	fb, err := CompileFunc(reflect.TypeFor[K]())
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, a, bv string, page int, q string) {
		p := K{A: a, B: bv, Page: page, Q: q}

		// Function query: raw values, then the query segment.
		_, fq, fkey, err := fb.Bind(p)
		require.NoError(t, err)
		wantN := 2
		if fq != "" {
			wantN++
		}
		require.Len(t, fkey, wantN, "func key %q", fkey)
		require.Equal(t, a, fkey[0], "func key %q", fkey)
		require.Equal(t, bv, fkey[1], "func key %q", fkey)
		checkQuery(t, fkey, fq, page, q, false)

		path, query, key, err := b.Bind(p)
		if a == "" || bv == "" || dotAfterUnescaping(a) || dotAfterUnescaping(bv) {
			require.ErrorIs(t, err, ErrInvalidPathValue, "values %q, %q: want them refused", a, bv)
			return
		}
		require.NoError(t, err)
		require.Len(t, key, 5, "key %q", key)
		require.Equal(t, "users", key[0], "key %q", key)
		require.Equal(t, "posts", key[2], "key %q", key)
		require.Equal(t, path, "/"+strings.Join(key[:4], "/"), "key %q does not match path", key)
		ga, err := url.PathUnescape(key[1])
		require.NoError(t, err, "key[1] %q", key[1])
		require.Equal(t, a, ga, "key[1] %q decodes", key[1])
		gb, err := url.PathUnescape(key[3])
		require.NoError(t, err, "key[3] %q", key[3])
		require.Equal(t, bv, gb, "key[3] %q decodes", key[3])
		checkQuery(t, key, query, page, q, true)
	})
}

// dotAfterUnescaping reports whether s is "." or ".." after unescaping it
// up to 8 times: the values Bind refuses besides the empty one.
func dotAfterUnescaping(s string) bool {
	for range 8 {
		if s == "." || s == ".." {
			return true
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return false
		}
		s = d
	}
	return s == "." || s == ".."
}

func checkQuery(t *testing.T, key []string, query string, page int, q string, literal bool) {
	t.Helper()
	if query == "" {
		require.Zero(t, page, "empty query for page=%d q=%q", page, q)
		require.Empty(t, q, "empty query for page=%d q=%q", page, q)
		require.False(t, literal, "empty query, and the template has a literal one")
		return
	}
	require.Equal(t, "?"+query, key[len(key)-1], "last key segment")
	v, err := url.ParseQuery(query)
	require.NoError(t, err)
	require.Equal(t, query, v.Encode(), "query not canonical")
	wantLen := 0
	if literal {
		wantLen++
		require.Equal(t, "1", v.Get("v"), "literal query lost: %q", query)
	}
	if page != 0 {
		wantLen++
		require.Equal(t, fmt.Sprint(page), v.Get("page"), "page lost: %q", query)
	}
	if q != "" {
		wantLen++
		require.Equal(t, q, v.Get("q"), "q lost: %q", query)
	}
	require.Len(t, v, wantLen, "query %q: names", query)
}
