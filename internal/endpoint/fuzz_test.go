package endpoint

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
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
			if len(b.Vars()) != 0 {
				t.Fatalf("Compile(%q, struct{}) accepted variables %q", tmpl, b.Vars())
			}
			if _, _, _, err := b.Bind(struct{}{}); err != nil {
				t.Fatalf("Bind: %v", err)
			}
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
		if err != nil {
			t.Fatalf("parse accepted %q but Compile failed: %v", tmpl, err)
		}
		p := reflect.New(typ).Elem()
		for i := range vars {
			p.Field(i).SetString("v/?#" + fmt.Sprint(i))
		}
		path, query, key, err := b.Bind(p.Interface())
		if err != nil {
			t.Fatalf("Bind(%q): %v", tmpl, err)
		}
		full := path
		if !b.Absolute() {
			full = "http://api.test" + path
		}
		u, err := url.Parse(full)
		if err != nil {
			t.Fatalf("bound URL %q does not parse: %v", full, err)
		}
		if !b.Absolute() && u.Host != "api.test" {
			t.Fatalf("bound URL %q: host %q", full, u.Host)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("bound URL %q has query or fragment", full)
		}
		if query != "" && key[len(key)-1] != "?"+query {
			t.Fatalf("key %q does not end in query %q", key, query)
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
	if err != nil {
		f.Fatal(err)
	}
	abs, err := Compile("https://api.test/a/$x/b", reflect.TypeFor[X]())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, x string) {
		path, query, key, err := b.Bind(X{x})
		if x == "" || dotAfterUnescaping(x) {
			if !errors.Is(err, ErrInvalidPathValue) {
				t.Fatalf("value %q: err = %v, want it refused", x, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if query != "" || len(key) != 3 {
			t.Fatalf("query %q key %q", query, key)
		}
		checkSafePath(t, path, x)
		u, err := url.Parse("http://api.test" + path)
		if err != nil {
			t.Fatal(err)
		}
		segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
		if len(segs) != 3 {
			t.Fatalf("path %q: %d segments", path, len(segs))
		}
		if got, err := url.PathUnescape(segs[1]); err != nil || got != x {
			t.Fatalf("segment %q decodes to %q, %v; want %q", segs[1], got, err, x)
		}

		apath, _, akey, err := abs.Bind(X{x})
		if err != nil {
			t.Fatal(err)
		}
		au, err := url.Parse(apath)
		if err != nil || au.Host != "api.test" || au.Scheme != "https" || au.EscapedPath() != path {
			t.Fatalf("absolute %q: %v %+v", apath, err, au)
		}
		if strings.Join(akey, "\x00") != strings.Join(key, "\x00") {
			t.Fatalf("absolute key %q != %q", akey, key)
		}
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
	if err != nil {
		f.Fatal(err)
	}
	fb, err := CompileFunc(reflect.TypeFor[K]())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, bv string, page int, q string) {
		p := K{A: a, B: bv, Page: page, Q: q}

		// Function query: raw values, then the query segment.
		_, fq, fkey, err := fb.Bind(p)
		if err != nil {
			t.Fatal(err)
		}
		wantN := 2
		if fq != "" {
			wantN++
		}
		if len(fkey) != wantN || fkey[0] != a || fkey[1] != bv {
			t.Fatalf("func key %q", fkey)
		}
		checkQuery(t, fkey, fq, page, q, false)

		path, query, key, err := b.Bind(p)
		if a == "" || bv == "" || dotAfterUnescaping(a) || dotAfterUnescaping(bv) {
			if !errors.Is(err, ErrInvalidPathValue) {
				t.Fatalf("values %q, %q: err = %v, want them refused", a, bv, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(key) != 5 || key[0] != "users" || key[2] != "posts" {
			t.Fatalf("key %q", key)
		}
		if "/"+strings.Join(key[:4], "/") != path {
			t.Fatalf("key %q does not match path %q", key, path)
		}
		if ga, err := url.PathUnescape(key[1]); err != nil || ga != a {
			t.Fatalf("key[1] %q decodes to %q, want %q", key[1], ga, a)
		}
		if gb, err := url.PathUnescape(key[3]); err != nil || gb != bv {
			t.Fatalf("key[3] %q decodes to %q, want %q", key[3], gb, bv)
		}
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
		if page != 0 || q != "" || literal {
			t.Fatalf("empty query for page=%d q=%q", page, q)
		}
		return
	}
	if key[len(key)-1] != "?"+query {
		t.Fatalf("last key segment %q, query %q", key[len(key)-1], query)
	}
	v, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	if v.Encode() != query {
		t.Fatalf("query %q not canonical", query)
	}
	wantLen := 0
	if literal {
		wantLen++
		if v.Get("v") != "1" {
			t.Fatalf("literal query lost: %q", query)
		}
	}
	if page != 0 {
		wantLen++
		if v.Get("page") != fmt.Sprint(page) {
			t.Fatalf("page lost: %q", query)
		}
	}
	if q != "" {
		wantLen++
		if v.Get("q") != q {
			t.Fatalf("q lost: %q", query)
		}
	}
	if len(v) != wantLen {
		t.Fatalf("query %q has %d names, want %d", query, len(v), wantLen)
	}
}
