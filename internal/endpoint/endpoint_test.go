package endpoint

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type UserID int64

type Status int

func (s Status) String() string { return [...]string{"inactive", "active"}[s] }

type ptrStringer struct{}

func (*ptrStringer) String() string { return "x" }

type P struct {
	UserId string
}

type postP struct {
	User   UserID `path:"userId"`
	PostID uint16 `path:"postId"`
	Page   int    `query:"page,omitempty"`
	Q      string `query:"q"`
	Ignore string `path:"-"`
	Skip   int    `qcache:"-"`
	NoQ    bool   `query:"-"`
	hidden chan int
}

type allKinds struct {
	S   string
	B   bool
	I8  int8
	U   uint
	F   float64
	F32 float32
	St  Status
	Qf  float64 `query:"qf"`
	Qb  bool    `query:"qb,omitempty"`
}

type caseP struct {
	USERID  string
	PostID  int
	Extra   int `query:"extra,omitempty"`
	private string
}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		tmpl string
		typ  reflect.Type
		want []string // substrings of the error
	}{
		{"unbound var", "/users/$userId", typeOf[struct{}](), []string{`template variable "userId" is not bound by type struct {}`, `endpoint "/users/$userId"`}},
		{"unbound var named type", "/users/$userId/$x", typeOf[P](), []string{`"x"`, "endpoint.P"}},
		{"dollar no name", "/users/$", typeOf[struct{}](), []string{"'$'"}},
		{"dollar digit", "/users/$1", typeOf[struct{}](), []string{"'$'"}},
		{"unclosed brace", "/users/{id", typeOf[struct{}](), []string{"unclosed"}},
		{"empty brace", "/users/{}", typeOf[struct{}](), []string{"empty"}},
		{"bad brace name", "/users/{a-b}", typeOf[struct{}](), []string{`"a-b"`}},
		{"stray close", "/users/a}", typeOf[struct{}](), []string{"'}'"}},
		{"brace with slash", "/users/{a/b}", typeOf[struct{}](), []string{"unclosed"}},
		{"repeated var", "/a/$id/b/{id}", typeOf[struct{ ID string }](), []string{`"id" repeated`}},
		{"var in query", "/a?x=$id", typeOf[struct{}](), []string{`"id"`, "query"}},
		{"brace var in query", "/a?x={id}", typeOf[struct{}](), []string{`"id"`, "query"}},
		{"bad query", "/a?x=%zz", typeOf[struct{}](), []string{"query"}},
		{"bad url", "http://[::1/a", typeOf[struct{}](), []string{"invalid URL"}},
		{"bad port", "http://host:port/a", typeOf[struct{}](), []string{"invalid URL"}},
		{"no host", "http:///a", typeOf[struct{}](), []string{"host"}},
		{"ftp scheme", "ftp://host/a", typeOf[struct{}](), []string{`"ftp"`}},
		{"relative", "users/$id", typeOf[string](), []string{"must be a path"}},
		{"empty", "", typeOf[struct{}](), []string{"empty"}},
		{"var in host", "http://$host/a", typeOf[string](), []string{"only allowed in the path"}},
		{"userinfo", "http://u:p@host/a", typeOf[struct{}](), []string{"user info"}},
		{"fragment", "/a#b", typeOf[struct{}](), []string{"fragment"}},
		{"space", "/a b", typeOf[struct{}](), []string{"invalid character"}},
		{"bad literal escape", "/a%zz/$x", typeOf[string](), []string{"percent-escape"}},
		{"truncated literal escape", "/a/$x%2", typeOf[string](), []string{"percent-escape"}},
		{"non-ascii literal", "/café", typeOf[struct{}](), []string{"invalid character"}},
		{"angle literal", "/a<b", typeOf[struct{}](), []string{"invalid character"}},
		{"dot segment", "/a/../b", typeOf[struct{}](), []string{"dot segment"}},
		{"scalar no var", "/users", typeOf[string](), []string{"type string", "0 variables"}},
		{"scalar two vars", "/a/$x/$y", typeOf[UserID](), []string{"endpoint.UserID", "2 variables"}},
		{"float scalar", "/a/$x", typeOf[float64](), []string{"unsupported parameter type float64"}},
		{"pointer P", "/a/$x", typeOf[*P](), []string{"unsupported parameter type *endpoint.P"}},
		{"untagged extra field", "/users/$userId", typeOf[struct {
			UserId string
			Other  string
		}](), []string{"field Other", "matches no template variable"}},
		{"tag names missing var", "/users/$userId", typeOf[struct {
			U string `path:"user"`
		}](), []string{"field U", `"user"`}},
		{"tag is case-sensitive", "/users/$userId", typeOf[struct {
			U string `path:"userid"`
		}](), []string{`"userid"`}},
		{"bound twice", "/users/$userId", typeOf[struct {
			UserId string
			U      string `path:"userId"`
		}](), []string{`"userId"`, "more than once", "UserId", "U"}},
		{"unsupported field kind", "/users/$userId", typeOf[struct {
			UserId []string
		}](), []string{"field UserId", "[]string", "struct {"}},
		{"unsupported query kind", "/users", typeOf[struct {
			M map[string]int `query:"m"`
		}](), []string{"field M", "map[string]int"}},
		{"pointer stringer", "/a/$x", typeOf[struct {
			X *ptrStringer
		}](), []string{"field X", "*endpoint.ptrStringer"}},
		{"interface stringer", "/a/$x", typeOf[struct {
			X fmt.Stringer
		}](), []string{"field X", "fmt.Stringer"}},
		{"both tags", "/a/$x", typeOf[struct {
			X string `path:"x" query:"x"`
		}](), []string{"both path and query"}},
		{"bad query option", "/a", typeOf[struct {
			X string `query:"x,bogus"`
		}](), []string{`"bogus"`}},
		{"dup query", "/a", typeOf[struct {
			X string `query:"x"`
			Y string `query:"x"`
		}](), []string{`"x"`, "field Y"}},
		{"query dup of literal", "/a?x=1", typeOf[struct {
			X string `query:"x"`
		}](), []string{`"x"`, "template query"}},
		{"ambiguous case", "/a/$id/$ID", typeOf[struct {
			Id  string
			ID  string
			IDs string
		}](), []string{"IDs"}},
		{"ambiguous fold", "/a/$id/$ID", typeOf[struct {
			Id string
		}](), []string{"field Id", "ambiguous"}},
		{"nil type", "/a", nil, []string{"nil parameter type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Compile(tt.tmpl, tt.typ)
			require.Error(t, err, "Compile(%q, %v) = %v, want error", tt.tmpl, tt.typ, b)
			assert.True(t, strings.HasPrefix(err.Error(), "qcache: endpoint "), "error %q lacks prefix", err)
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestCompileExactMessage(t *testing.T) {
	type P struct{}
	_, err := Compile("/users/$userId", reflect.TypeFor[P]())
	want := `qcache: endpoint "/users/$userId": template variable "userId" is not bound by type endpoint.P`
	require.EqualError(t, err, want)
}

func TestParseVars(t *testing.T) {
	tests := []struct {
		tmpl     string
		vars     []string
		absolute bool
	}{
		{"/users", nil, false},
		{"/", nil, false},
		{"/users/$userId", []string{"userId"}, false},
		{"/users/$userId/posts/{postId}", []string{"userId", "postId"}, false},
		{"/files/$id.json", []string{"id"}, false},
		{"/files/{id}.json", []string{"id"}, false},
		{"/x/$a$b", []string{"a", "b"}, false},
		{"/x/{a}{b}-$_c9", []string{"a", "b", "_c9"}, false},
		{"/users/$userId?active=true", []string{"userId"}, false},
		{"https://api.example.com/v1/$x", []string{"x"}, true},
		{"http://api.example.com:8080/$x/", []string{"x"}, true},
		{"HTTPS://api.example.com", nil, true},
		{"http://[::1]:80/a/{b}?c=d", []string{"b"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			fields := make([]reflect.StructField, len(tt.vars))
			for i, v := range tt.vars {
				fields[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[string](), Tag: reflect.StructTag(fmt.Sprintf(`path:"%s"`, v))}
			}
			b, err := Compile(tt.tmpl, reflect.StructOf(fields))
			require.NoError(t, err)
			got := b.Vars()
			assert.True(t, slices.Equal(got, tt.vars), "Vars() = %q, want %q", got, tt.vars) // nil and empty alike
			assert.Equal(t, tt.absolute, b.Absolute(), "Absolute()")
		})
	}
}

func TestBind(t *testing.T) {
	tests := []struct {
		name  string
		tmpl  string
		p     any
		path  string
		query string
		key   []string
	}{
		{"empty struct", "/health", struct{}{}, "/health", "", []string{"health"}},
		{"root", "/", struct{}{}, "/", "", []string{}},
		{"string scalar", "/users/$userId", "42", "/users/42", "", []string{"users", "42"}},
		{"named int scalar", "/users/$userId", UserID(-7), "/users/-7", "", []string{"users", "-7"}},
		{"uint scalar", "/users/{id}", uint8(255), "/users/255", "", []string{"users", "255"}},
		{"bool scalar", "/flags/$on", true, "/flags/true", "", []string{"flags", "true"}},
		{"stringer scalar", "/status/$s", Status(1), "/status/active", "", []string{"status", "active"}},
		{"struct untagged", "/users/$userId", P{UserId: "42"}, "/users/42", "", []string{"users", "42"}},
		{"case-insensitive", "/users/$userId/posts/$postId", caseP{USERID: "u", PostID: 3}, "/users/u/posts/3", "", []string{"users", "u", "posts", "3"}},
		{"omitempty dropped", "/users/$userId/posts/$postId", caseP{USERID: "u", PostID: 3, Extra: 0}, "/users/u/posts/3", "", []string{"users", "u", "posts", "3"}},
		{"omitempty kept", "/users/$userId/posts/$postId", caseP{USERID: "u", PostID: 3, Extra: 9}, "/users/u/posts/3", "extra=9", []string{"users", "u", "posts", "3", "?extra=9"}},
		{"tags and literal query", "/users/$userId/posts/{postId}?z=last&active=true", postP{User: 1, PostID: 2, Page: 3, Q: "a b&c", Ignore: "x", Skip: 1, NoQ: true},
			"/users/1/posts/2", "active=true&page=3&q=a+b%26c&z=last", []string{"users", "1", "posts", "2", "?active=true&page=3&q=a+b%26c&z=last"}},
		{"non-omitempty empty query", "/users/$userId/posts/{postId}", postP{User: 1, PostID: 2}, "/users/1/posts/2", "q=", []string{"users", "1", "posts", "2", "?q="}},
		{"all kinds", "/$s/$b/$i8/$u/$f/$f32/$st", allKinds{S: "s", B: false, I8: -8, U: 8, F: 1.5e300, F32: 0.1, St: 0, Qf: 2.25},
			"/s/false/-8/8/1.5e+300/0.1/inactive", "qf=2.25", []string{"s", "false", "-8", "8", "1.5e+300", "0.1", "inactive", "?qf=2.25"}},
		{"escaped literal", "/a%20b/$x/:@!,;=", "1", "/a%20b/1/:@!,;=", "", []string{"a%20b", "1", ":@!,;="}},
		{"partial segment", "/files/$id.json", "report", "/files/report.json", "", []string{"files", "report.json"}},
		{"adjacent vars", "/x/{a}{b}", struct{ A, B string }{"1", "2"}, "/x/12", "", []string{"x", "12"}},
		{"trailing slash", "/users/$userId/", "42", "/users/42/", "", []string{"users", "42"}},
		{"literal query only", "/users?b=2&a=1", struct{}{}, "/users", "a=1&b=2", []string{"users", "?a=1&b=2"}},
		{"absolute", "https://api.example.com/v1/users/$userId?active=true", "42", "https://api.example.com/v1/users/42", "active=true", []string{"v1", "users", "42", "?active=true"}},
		{"absolute no path", "https://api.example.com", struct{}{}, "https://api.example.com", "", []string{}},
		{"absolute scheme lowercased", "HTTP://api.example.com/$x", "1", "http://api.example.com/1", "", []string{"1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Compile(tt.tmpl, reflect.TypeOf(tt.p))
			require.NoError(t, err)
			path, query, key, err := b.Bind(tt.p)
			require.NoError(t, err)
			assert.Equal(t, tt.path, path, "path")
			assert.Equal(t, tt.query, query, "query")
			assert.True(t, slices.Equal(key, tt.key), "key = %q, want %q", key, tt.key) // nil and empty alike
		})
	}
}

func TestKeysSpecExamples(t *testing.T) {
	type Q struct {
		UserID int `path:"userId"`
		Page   int `query:"page,omitempty"`
	}
	b, err := Compile("/users/$userId", reflect.TypeFor[Q]())
	require.NoError(t, err)
	_, _, key, err := b.Bind(Q{UserID: 42})
	require.NoError(t, err)
	require.Equal(t, []string{"users", "42"}, key)
	_, _, key, err = b.Bind(Q{UserID: 42, Page: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"users", "42", "?page=2"}, key)
}

func TestBindErrors(t *testing.T) {
	b, err := Compile("/users/$userId", reflect.TypeFor[P]())
	require.NoError(t, err)
	_, _, _, err = b.Bind(P{})
	assert.EqualError(t, err, `qcache: empty value for path variable "userId"`, "empty value")
	_, _, _, err = b.Bind("42")
	assert.ErrorContains(t, err, "want endpoint.P", "wrong type")
	_, _, _, err = b.Bind(&P{UserId: "1"})
	assert.Error(t, err, "pointer")
	_, _, _, err = b.Bind(nil)
	assert.Error(t, err, "nil")
	type SP struct{ S emptyStringer }
	bs, err := Compile("/status/$s", reflect.TypeFor[SP]())
	require.NoError(t, err)
	_, _, _, err = bs.Bind(SP{})
	assert.ErrorContains(t, err, `"s"`, "empty stringer")
}

type emptyStringer struct{}

func (emptyStringer) String() string { return "" }

func TestCompileFunc(t *testing.T) {
	type F struct {
		Region string
		ID     int    `path:"ignored-name"`
		Limit  int    `query:"limit,omitempty"`
		Sort   string `query:"sort"`
		Skip   string `qcache:"-"`
		Skip2  string `path:"-"`
		inner  string
	}
	tests := []struct {
		name  string
		p     any
		query string
		key   []string
	}{
		{"empty struct", struct{}{}, "", []string{}},
		{"scalar", UserID(5), "", []string{"5"}},
		{"string scalar raw", "a/b?c", "", []string{"a/b?c"}},
		{"struct", F{Region: "eu/west", ID: 7, Sort: "name", Skip: "x", Skip2: "y", inner: "z"}, "sort=name", []string{"eu/west", "7", "?sort=name"}},
		{"struct omitempty", F{Region: "", ID: 0, Limit: 10, Sort: "b"}, "limit=10&sort=b", []string{"", "0", "?limit=10&sort=b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := CompileFunc(reflect.TypeOf(tt.p))
			require.NoError(t, err)
			assert.False(t, b.Absolute(), "Absolute()")
			assert.Nil(t, b.Vars(), "Vars()")
			path, query, key, err := b.Bind(tt.p)
			require.NoError(t, err)
			assert.Empty(t, path, "Bind path")
			assert.Equal(t, tt.query, query, "Bind query")
			assert.True(t, slices.Equal(key, tt.key), "Bind key = %q, want %q", key, tt.key) // nil and empty alike
		})
	}

	for _, typ := range []reflect.Type{
		reflect.TypeFor[float64](),
		reflect.TypeFor[*F](),
		reflect.TypeFor[struct{ X []int }](),
		reflect.TypeFor[struct {
			X int `query:"x"`
			Y int `query:"x"`
		}](),
		nil,
	} {
		_, err := CompileFunc(typ)
		if assert.Error(t, err, "CompileFunc(%v)", typ) {
			assert.True(t, strings.HasPrefix(err.Error(), "qcache: function query: "), "CompileFunc(%v): err = %v", typ, err)
		}
	}
}

// hostile path values and the exact escaped segment expected. Values that
// are dot segments are refused instead (TestBindRefusesDotAndEmptyValues).
var hostile = []struct{ in, want string }{
	{"../admin", "..%2Fadmin"},
	{"...", "..."},
	{"42?x=1", "42%3Fx=1"},
	{"42#f", "42%23f"},
	{"a/b", "a%2Fb"},
	{"/", "%2F"},
	{"//evil.test", "%2F%2Fevil.test"},
	{"%2F", "%252F"},
	{"a\r\nHost: evil", "a%0D%0AHost:%20evil"},
	{"\n", "%0A"},
	{"\x00", "%00"},
	{"héllo", "h%C3%A9llo"},
	{"日本", "%E6%97%A5%E6%9C%AC"},
	{"\\..\\x", "%5C..%5Cx"},
	{"@evil.test", "@evil.test"},
	{"a;b,c", "a%3Bb%2Cc"},
	{" ", "%20"},
	{"+", "+"},
	{"\xff", "%FF"},
}

func TestEscapingHostile(t *testing.T) {
	b, err := Compile("/a/$x/b", reflect.TypeFor[struct{ X string }]())
	require.NoError(t, err)
	abs, err := Compile("http://api.test/a/$x/b", reflect.TypeFor[string]())
	require.NoError(t, err)
	for _, h := range hostile {
		t.Run(fmt.Sprintf("%q", h.in), func(t *testing.T) {
			path, query, key, err := b.Bind(struct{ X string }{h.in})
			require.NoError(t, err)
			assert.Empty(t, query, "query")
			wantPath := "/a/" + h.want + "/b"
			assert.Equal(t, wantPath, path, "path")
			checkSafePath(t, path, h.in)
			assert.Equal(t, []string{"a", h.want, "b"}, key, "key")

			apath, _, akey, err := abs.Bind(h.in)
			require.NoError(t, err)
			assert.Equal(t, "http://api.test"+wantPath, apath, "absolute: path")
			assert.Equal(t, key, akey, "absolute: key")
			u, err := url.Parse(apath)
			if assert.NoError(t, err, "absolute: parse %q", apath) {
				assert.Equal(t, "api.test", u.Host, "absolute: parse %q", apath)
				assert.Equal(t, "http", u.Scheme, "absolute: parse %q", apath)
				assert.Equal(t, wantPath, u.EscapedPath(), "absolute: parse %q", apath)
			}
		})
	}
}

// checkSafePath asserts path is /a/<seg>/b with seg decoding to value, and
// that joining it to a base URL keeps the host and the segment count.
func checkSafePath(t *testing.T, path, value string) {
	t.Helper()
	segs := strings.Split(path, "/")
	require.Len(t, segs, 4, "path %q: segments %q", path, segs)
	require.Equal(t, "", segs[0], "path %q: segments %q", path, segs)
	require.Equal(t, "a", segs[1], "path %q: segments %q", path, segs)
	require.Equal(t, "b", segs[3], "path %q: segments %q", path, segs)
	seg := segs[2]
	assert.False(t, strings.ContainsAny(seg, "?#/\r\n\x00 "), "segment %q contains a raw special character", seg)
	assert.False(t, seg == "." || seg == "..", "segment %q is a dot segment", seg)
	for i := 0; i < len(seg); i++ {
		if seg[i] >= 0x80 || seg[i] < 0x20 {
			assert.Failf(t, "raw byte in a segment", "segment %q contains a raw non-ASCII or control byte", seg)
			break
		}
	}
	got, err := url.PathUnescape(seg)
	assert.NoError(t, err, "PathUnescape(%q)", seg)
	assert.Equal(t, value, got, "PathUnescape(%q)", seg)
	u, err := url.Parse("http://api.test" + path)
	require.NoError(t, err, "url.Parse")
	assert.Equal(t, "api.test", u.Host, "url %q: host", path)
	assert.Empty(t, u.RawQuery, "url %q: query", path)
	assert.Empty(t, u.Fragment, "url %q: fragment", path)
	assert.Nil(t, u.User, "url %q: user", path)
	ep := u.EscapedPath()
	assert.Len(t, strings.Split(ep, "/"), 4, "url %q: escaped path %q has wrong segment count", path, ep)
	ref, err := url.Parse(path)
	require.NoError(t, err, "url.Parse(%q)", path)
	base, _ := url.Parse("http://api.test/base/")
	assert.Equal(t, "api.test", base.ResolveReference(ref).Host, "ResolveReference(%q) host", path)
}

func TestEscapingQuery(t *testing.T) {
	type Q struct {
		Q string `query:"q"`
		A string `query:"a"`
	}
	b, err := Compile("/s", reflect.TypeFor[Q]())
	require.NoError(t, err)
	path, query, key, err := b.Bind(Q{Q: "x&admin=1#f\r\n", A: "é /?"})
	require.NoError(t, err)
	want := "a=%C3%A9+%2F%3F&q=x%26admin%3D1%23f%0D%0A"
	require.Equal(t, "/s", path)
	require.Equal(t, want, query)
	require.Equal(t, []string{"s", "?" + want}, key)
	v, err := url.ParseQuery(query)
	require.NoError(t, err, "ParseQuery(%q)", query)
	require.Len(t, v, 2, "ParseQuery(%q)", query)
	require.Equal(t, "x&admin=1#f\r\n", v.Get("q"), "ParseQuery(%q)", query)
	require.Equal(t, "é /?", v.Get("a"), "ParseQuery(%q)", query)
}

func TestConcurrentBind(t *testing.T) {
	b, err := Compile("/users/$userId/posts/{postId}?active=true", reflect.TypeFor[postP]())
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				p := postP{User: UserID(i), PostID: uint16(j), Page: j, Q: "x"}
				path, query, key, err := b.Bind(p)
				if !assert.NoError(t, err) { // not require: this is not the test's goroutine
					return
				}
				assert.Equal(t, fmt.Sprintf("/users/%d/posts/%d", i, j), path)
				if assert.Len(t, key, 5) {
					assert.Equal(t, "?"+query, key[4], "key = %q", key)
				}
			}
		}()
	}
	wg.Wait()
}

func TestVarsIsCopy(t *testing.T) {
	b, err := Compile("/a/$x", reflect.TypeFor[string]())
	require.NoError(t, err)
	b.Vars()[0] = "mutated"
	require.Equal(t, "x", b.Vars()[0], "Vars() exposes internal slice")
}

// TestBindRefusesDotAndEmptyValues: a path value that is "." or ".." in any
// escaping would be resolved as a path step by a server that parses URLs the
// WHATWG way ("%2E%2E" is ".." there), and an empty one collapses the
// segment: Bind refuses them, naming the variable.
func TestBindRefusesDotAndEmptyValues(t *testing.T) {
	type X struct{ X string }
	type Two struct {
		A string `path:"a"`
		B string `path:"b"`
	}
	one, err := Compile("/a/$x/b", reflect.TypeFor[X]())
	require.NoError(t, err)
	abs, err := Compile("https://api.test/a/$x/b", reflect.TypeFor[string]())
	require.NoError(t, err)
	affix, err := Compile("/a/v$x.json", reflect.TypeFor[string]())
	require.NoError(t, err)
	two, err := Compile("/a/{a}{b}/c", reflect.TypeFor[Two]())
	require.NoError(t, err)
	tests := []struct {
		name  string
		b     *Binding
		p     any
		refer string // variable named in the error; "" if the value is sent
	}{
		{"dot", one, X{"."}, "x"},
		{"dot dot", one, X{".."}, "x"},
		{"encoded dot", one, X{"%2E"}, "x"},
		{"encoded dot lower", one, X{"%2e"}, "x"},
		{"encoded dots", one, X{"%2E%2E"}, "x"},
		{"encoded dots mixed case", one, X{"%2e%2E"}, "x"},
		{"half encoded", one, X{".%2E"}, "x"},
		{"half encoded other half", one, X{"%2e."}, "x"},
		{"double encoded", one, X{"%252E%252e"}, "x"},
		{"triple encoded", one, X{"%25252e"}, "x"},
		{"double encoded half", one, X{".%252E"}, "x"},
		{"empty", one, X{""}, "x"},
		{"absolute dot dot", abs, "..", "x"},
		{"absolute encoded", abs, "%2E%2e", "x"},
		{"absolute empty", abs, "", "x"},
		{"dot beside a literal", affix, ".", "x"},
		{"encoded dots beside a literal", affix, "%2E%2E", "x"},
		{"two dots in one segment", two, Two{".", "."}, "a"},
		{"a dot split across variables", two, Two{"%2", "E"}, "b"},
		{"dots split across variables", two, Two{"%252", "E%252E"}, "b"},
		{"two empties", two, Two{"", ""}, "a"},
		{"one empty", two, Two{"x", ""}, "b"},

		{"three dots", one, X{"..."}, ""},
		{"dot and letter", one, X{".a"}, ""},
		{"dots and slash", one, X{"..%2F"}, ""},
		{"encoded dots and slash", one, X{"%2E%2E%2F"}, ""},
		{"encoded three dots", one, X{"%2E%2E."}, ""},
		{"fullwidth dots", one, X{"．．"}, ""},
		{"bad escape", one, X{"%2"}, ""},
		{"dots beside a literal", affix, "..", "x"},
		{"one dot of two", two, Two{".", "a"}, "a"},
		{"dots in a value", affix, "a..b", ""},
		{"one empty of two", two, Two{"", "a"}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _, key, err := tt.b.Bind(tt.p)
			if tt.refer == "" {
				require.NoError(t, err, "Bind(%#v)", tt.p)
				return
			}
			require.Error(t, err, "Bind(%#v) = %q, key %q: want an error", tt.p, path, key)
			assert.ErrorContains(t, err, fmt.Sprintf("%q", tt.refer), "the error names the variable")
			assert.ErrorIs(t, err, ErrInvalidPathValue)
		})
	}
}

func TestWrapValueErrors(t *testing.T) {
	type wrapped struct{ error }
	b, err := Compile("/a/$x", reflect.TypeFor[string](), WrapValueErrors(func(err error) error { return wrapped{err} }))
	require.NoError(t, err)
	for _, v := range []string{"", "..", "%2E"} {
		_, _, _, err := b.Bind(v)
		w, ok := err.(wrapped)
		if assert.True(t, ok, "Bind(%q): err = %#v, want it wrapped", v, err) {
			assert.ErrorIs(t, w.error, ErrInvalidPathValue, "Bind(%q)", v)
		}
	}
	_, _, _, err = b.Bind(42)
	if assert.Error(t, err, "wrong type") {
		_, ok := err.(wrapped)
		assert.False(t, ok, "wrong type: err = %v is not about a value, and is not wrapped", err)
	}
}
