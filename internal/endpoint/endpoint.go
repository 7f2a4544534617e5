// Package endpoint parses qcache endpoint templates such as
// "GET /users/$userId", checks a parameter type against them once, and binds
// parameter values into an escaped path, a query string and cache-key segments.
package endpoint

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
)

// ErrInvalidPathValue is wrapped by every error of Bind about a path value
// that cannot be sent: an empty one, or one that is "." or ".." in any
// escaping ("%2E", ".%2e", "%252E%252E"), which a server that parses URLs the
// WHATWG way resolves as a step up or across the path.
var ErrInvalidPathValue = errors.New("qcache: invalid path value")

// valueError is an error of Bind about a path value.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }
func (e *valueError) Unwrap() error { return ErrInvalidPathValue }

// An Option changes what Compile returns.
type Option func(*Binding)

// WrapValueErrors makes Bind pass each of its errors about a path value
// (those wrapping ErrInvalidPathValue) through wrap, so that the caller can
// give them a type of its own.
func WrapValueErrors(wrap func(error) error) Option {
	return func(b *Binding) { b.wrap = wrap }
}

// Binding is a compiled template bound to a parameter type. Safe for concurrent use.
//
// A Binding is immutable after Compile or CompileFunc returns.
type Binding struct {
	tmpl     string            // original template, for error messages ("" for function queries)
	typ      reflect.Type      // parameter type P
	fn       bool              // function query (no template)
	absolute bool              // template was an absolute URL
	base     string            // "scheme://host" for absolute templates
	segs     [][]piece         // path segments (split on "/"), each a list of pieces
	vars     []string          // template variables in order of appearance
	litQuery url.Values        // literal query values from the template
	pathVals []getter          // one per template variable (indexed by variable), or path values for function queries
	queries  []queryField      // query parameters from struct fields
	wrap     func(error) error // WrapValueErrors; nil: as they are
}

// piece is a literal or a variable reference inside a path segment.
type piece struct {
	lit    string
	varIdx int // -1 for a literal
}

// getter extracts and formats one value from a P value.
type getter struct {
	field  int // struct field index, -1 when P itself is the value
	name   string
	format func(reflect.Value) string
}

func (g getter) get(v reflect.Value) string {
	if g.field >= 0 {
		v = v.Field(g.field)
	}
	return g.format(v)
}

type queryField struct {
	getter
	omitempty bool
}

// Compile parses tmpl and checks that type t can bind it. tmpl is either a path
// ("/users/$userId/posts/{postId}", optionally with a literal query "?active=true")
// or an absolute http/https URL with such a path. Errors name the offending variable
// and the type, e.g. `qcache: endpoint "/users/$userId": template variable "userId" is not bound by type main.P`.
func Compile(tmpl string, t reflect.Type, opts ...Option) (*Binding, error) {
	b := &Binding{tmpl: tmpl, typ: t}
	for _, o := range opts {
		o(b)
	}
	errf := func(format string, args ...any) error {
		return fmt.Errorf("qcache: endpoint %q: %s", tmpl, fmt.Sprintf(format, args...))
	}
	if err := b.parse(tmpl); err != nil {
		return nil, errf("%s", err.Error())
	}
	if t == nil {
		return nil, errf("nil parameter type")
	}
	b.pathVals = make([]getter, len(b.vars))
	bound := make([]string, len(b.vars)) // which field bound each variable
	switch {
	case isScalar(t):
		if len(b.vars) != 1 {
			return nil, errf("type %s binds exactly one template variable, but the template has %d variables", t, len(b.vars))
		}
		f, _ := formatter(t)
		b.pathVals[0] = getter{field: -1, name: b.vars[0], format: f}
		return b, nil
	case t.Kind() == reflect.Struct:
	default:
		return nil, errf("unsupported parameter type %s (want struct, string, bool, or integer)", t)
	}

	queryNames := map[string]string{}
	for name := range b.litQuery {
		queryNames[name] = "the template query"
	}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fk, err := classifyField(sf, t)
		if err != nil {
			return nil, errf("%s", err.Error())
		}
		switch fk.kind {
		case fieldIgnored:
			continue
		case fieldQuery:
			if prev, dup := queryNames[fk.name]; dup {
				return nil, errf("query parameter %q of field %s in type %s is also set by %s", fk.name, sf.Name, t, prev)
			}
			queryNames[fk.name] = "field " + sf.Name
			b.queries = append(b.queries, queryField{getter: getter{field: i, name: fk.name, format: fk.format}, omitempty: fk.omitempty})
			continue
		}
		// Path-bound field.
		idx := -1
		if fk.tagged {
			for j, v := range b.vars {
				if v == fk.name {
					idx = j
					break
				}
			}
			if idx < 0 {
				return nil, errf("field %s of type %s has tag path:%q, but the template has no variable %q", sf.Name, t, fk.name, fk.name)
			}
		} else {
			var err error
			idx, err = matchVar(b.vars, sf.Name)
			if err != nil {
				return nil, errf("field %s of type %s: %s", sf.Name, t, err.Error())
			}
			if idx < 0 {
				return nil, errf("field %s of type %s matches no template variable (tag it with query:\"name\" or qcache:\"-\")", sf.Name, t)
			}
		}
		if bound[idx] != "" {
			return nil, errf("template variable %q is bound more than once by type %s (fields %s and %s)", b.vars[idx], t, bound[idx], sf.Name)
		}
		bound[idx] = sf.Name
		b.pathVals[idx] = getter{field: i, name: b.vars[idx], format: fk.format}
	}
	for j, v := range b.vars {
		if bound[j] == "" {
			return nil, errf("template variable %q is not bound by type %s", v, t)
		}
	}
	return b, nil
}

// CompileFunc checks type t for a query with no template (a function query):
// its key segments are one per path-bound value of P (see below) then the query segment.
//
// For a struct P, exported untagged and path-tagged fields are path values in
// declaration order; query-tagged fields are query parameters. A string, bool
// or integer P is a single path value; struct{} has none.
func CompileFunc(t reflect.Type) (*Binding, error) {
	errf := func(format string, args ...any) error {
		return fmt.Errorf("qcache: function query: %s", fmt.Sprintf(format, args...))
	}
	if t == nil {
		return nil, errf("nil parameter type")
	}
	b := &Binding{typ: t, fn: true}
	switch {
	case isScalar(t):
		f, _ := formatter(t)
		b.pathVals = []getter{{field: -1, format: f}}
		return b, nil
	case t.Kind() == reflect.Struct:
	default:
		return nil, errf("unsupported parameter type %s (want struct, string, bool, or integer)", t)
	}
	queryNames := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fk, err := classifyField(sf, t)
		if err != nil {
			return nil, errf("%s", err.Error())
		}
		switch fk.kind {
		case fieldIgnored:
		case fieldQuery:
			if prev, dup := queryNames[fk.name]; dup {
				return nil, errf("query parameter %q of field %s in type %s is also set by field %s", fk.name, sf.Name, t, prev)
			}
			queryNames[fk.name] = sf.Name
			b.queries = append(b.queries, queryField{getter: getter{field: i, name: fk.name, format: fk.format}, omitempty: fk.omitempty})
		default:
			b.pathVals = append(b.pathVals, getter{field: i, name: sf.Name, format: fk.format})
		}
	}
	return b, nil
}

// Absolute reports whether the template was an absolute URL.
func (b *Binding) Absolute() bool { return b.absolute }

// Vars returns the template variables in order of appearance.
// The returned slice is a copy; it is nil for a function query.
func (b *Binding) Vars() []string {
	if len(b.vars) == 0 {
		return nil
	}
	return append([]string(nil), b.vars...)
}

// Bind binds p (whose dynamic type must be the t given to Compile) and returns:
//
//   - path: the escaped path (for an absolute template: the whole absolute URL
//     without the query; for a function query: ""),
//   - query: the encoded query string, names sorted, without "?" ("" when
//     empty); literal template query values are included,
//   - key: the cache-key segments: the non-empty segments of the escaped path
//     (path part only for an absolute template), or for a function query the
//     raw string forms of its path values, followed by "?"+query when query is
//     not empty.
//
// err is non-nil for a value that cannot be sent, e.g. an empty path value
// (`qcache: empty value for path variable "userId"`), or one that is "." or
// ".." in any escaping, alone or together with the rest of its segment; such
// errors wrap ErrInvalidPathValue. A function query has no such errors: its
// values only make keys.
func (b *Binding) Bind(p any) (path, query string, key []string, err error) {
	v := reflect.ValueOf(p)
	if !v.IsValid() || v.Type() != b.typ {
		got := "nil"
		if v.IsValid() {
			got = v.Type().String()
		}
		return "", "", nil, fmt.Errorf("qcache: cannot bind value of type %s, want %s", got, b.typ)
	}

	vals := make([]string, len(b.pathVals))
	for i, g := range b.pathVals {
		vals[i] = g.get(v)
		if b.fn {
			continue
		}
		if vals[i] == "" {
			return "", "", nil, b.valueErr(fmt.Sprintf("qcache: empty value for path variable %q", g.name))
		}
		if isDotSegment(vals[i]) {
			return "", "", nil, b.valueErr(fmt.Sprintf("qcache: path variable %q: value %q is a dot segment once unescaped, which servers resolve as a path step", g.name, vals[i]))
		}
	}

	q := make(url.Values, len(b.litQuery)+len(b.queries))
	for name, vs := range b.litQuery {
		q[name] = append([]string(nil), vs...)
	}
	for _, qf := range b.queries {
		fv := v.Field(qf.field)
		if qf.omitempty && fv.IsZero() {
			continue
		}
		q.Add(qf.name, qf.format(fv))
	}
	query = q.Encode()

	if b.fn {
		key = make([]string, 0, len(vals)+1)
		key = append(key, vals...)
	} else {
		var sb strings.Builder
		sb.WriteString(b.base)
		key = make([]string, 0, len(b.segs)+1)
		for i, seg := range b.segs {
			if i > 0 {
				sb.WriteByte('/')
			}
			start := sb.Len()
			var names []string // the variables of the segment
			for _, pc := range seg {
				if pc.varIdx < 0 {
					sb.WriteString(pc.lit)
				} else {
					sb.WriteString(escapePathValue(vals[pc.varIdx]))
					names = append(names, fmt.Sprintf("%q", b.vars[pc.varIdx]))
				}
			}
			s := sb.String()[start:]
			if names != nil && isDotSegment(s) {
				return "", "", nil, b.valueErr(fmt.Sprintf("qcache: path variables %s: together they make segment %q, a dot segment once unescaped, which servers resolve as a path step", strings.Join(names, ", "), s))
			}
			if s != "" {
				key = append(key, s)
			}
		}
		path = sb.String()
	}
	if query != "" {
		key = append(key, "?"+query)
	}
	return path, query, key, nil
}

// valueErr returns the error of Bind about a path value.
func (b *Binding) valueErr(msg string) error {
	var err error = &valueError{msg}
	if b.wrap != nil {
		err = b.wrap(err)
	}
	return err
}

// isDotSegment reports whether s is "." or ".." once percent-decoded, as
// many times as it decodes: "%2E", ".%2e" and "%252E%252E" all are. (A
// WHATWG URL parser takes "%2E" for "." in a path; a server or proxy that
// decodes the path once more before routing takes "%252E" for it too.)
func isDotSegment(s string) bool {
	for {
		if s == "." || s == ".." {
			return true
		}
		if !strings.Contains(s, "%") || strings.Trim(s, ".%0123456789abcdefABCDEF") != "" {
			return false
		}
		d, err := url.PathUnescape(s)
		if err != nil || d == s {
			return false
		}
		s = d // shorter: the loop ends
	}
}

// escapePathValue escapes s for use inside one path segment: it applies
// url.PathEscape and additionally encodes the dot segments "." and ".." as
// "%2E" and "%2E%2E", so the result can never change the path structure
// for a parser that does not decode dots (Bind refuses those values first,
// because WHATWG parsers do decode them).
func escapePathValue(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

// parse fills b.segs, b.vars, b.litQuery, b.base and b.absolute from tmpl.
func (b *Binding) parse(tmpl string) error {
	if tmpl == "" {
		return errors.New("empty template")
	}
	if strings.ContainsRune(tmpl, '#') {
		return errors.New("fragment ('#') not allowed in template")
	}
	for _, r := range tmpl {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("invalid character %q in template", r)
		}
	}
	rest := tmpl
	rawQuery := ""
	hasQuery := false
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, rawQuery, hasQuery = rest[:i], rest[i+1:], true
	}
	if !strings.HasPrefix(rest, "/") {
		i := strings.Index(rest, "://")
		if i <= 0 {
			return errors.New("template must be a path starting with \"/\" or an absolute http(s) URL")
		}
		scheme := strings.ToLower(rest[:i])
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("unsupported URL scheme %q (want http or https)", rest[:i])
		}
		hostEnd := len(rest)
		if j := strings.IndexByte(rest[i+3:], '/'); j >= 0 {
			hostEnd = i + 3 + j
		}
		authority := rest[:hostEnd]
		if strings.ContainsAny(authority, "${}") {
			return errors.New("template variables are only allowed in the path")
		}
		u, err := url.Parse(authority)
		if err != nil {
			return fmt.Errorf("invalid URL: %v", err)
		}
		if u.Host == "" {
			return errors.New("invalid URL: missing host")
		}
		if u.User != nil {
			return errors.New("invalid URL: user info not allowed")
		}
		if u.Path != "" || u.RawQuery != "" || u.Opaque != "" {
			return errors.New("invalid URL")
		}
		b.absolute = true
		b.base = u.Scheme + "://" + u.Host
		rest = rest[hostEnd:]
	}

	seen := map[string]bool{}
	if rest != "" {
		for _, s := range strings.Split(rest, "/") {
			pieces, names, err := scan(s)
			if err != nil {
				return err
			}
			for _, pc := range pieces {
				if err := checkLiteral(pc.lit); err != nil {
					return err
				}
			}
			if len(names) == 0 && isDotSegment(s) {
				return fmt.Errorf("dot segment %q not allowed in template path", s)
			}
			for k, pc := range pieces {
				if pc.varIdx < 0 {
					continue
				}
				name := names[pc.varIdx]
				if seen[name] {
					return fmt.Errorf("template variable %q repeated", name)
				}
				seen[name] = true
				b.vars = append(b.vars, name)
				pieces[k].varIdx = len(b.vars) - 1
			}
			b.segs = append(b.segs, pieces)
		}
	}

	if hasQuery {
		_, names, err := scan(rawQuery)
		if err != nil {
			return fmt.Errorf("query: %v", err)
		}
		if len(names) > 0 {
			return fmt.Errorf("template variable %q in the query part (only literal query values are allowed)", names[0])
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return fmt.Errorf("invalid query: %v", err)
		}
		if len(q) > 0 {
			b.litQuery = q
		}
	}
	return nil
}

// scan splits one path segment (or the query) into literal and variable
// pieces. Variable pieces have varIdx indexing into names.
func scan(s string) (pieces []piece, names []string, err error) {
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			pieces = append(pieces, piece{lit: lit.String(), varIdx: -1})
			lit.Reset()
		}
	}
	addVar := func(name string) {
		flush()
		names = append(names, name)
		pieces = append(pieces, piece{varIdx: len(names) - 1})
	}
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case '$':
			n := nameLen(s[i+1:])
			if n == 0 {
				return nil, nil, fmt.Errorf("'$' at offset %d is not followed by a variable name", i)
			}
			addVar(s[i+1 : i+1+n])
			i += 1 + n
		case '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, nil, fmt.Errorf("unclosed '{' at offset %d", i)
			}
			name := s[i+1 : i+1+end]
			if name == "" {
				return nil, nil, errors.New("empty variable name '{}'")
			}
			if nameLen(name) != len(name) {
				return nil, nil, fmt.Errorf("invalid variable name %q", name)
			}
			addVar(name)
			i += end + 2
		case '}':
			return nil, nil, fmt.Errorf("unexpected '}' at offset %d", i)
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	return pieces, names, nil
}

// checkLiteral reports an error unless lit consists only of characters allowed
// in a URL path segment (RFC 3986 pchar) and valid percent-escapes.
func checkLiteral(lit string) error {
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0:
		case c == '%':
			if i+2 >= len(lit) || !isHex(lit[i+1]) || !isHex(lit[i+2]) {
				return fmt.Errorf("invalid percent-escape in template path literal %q", lit)
			}
			i += 2
		default:
			return fmt.Errorf("invalid character %q in template path literal %q (percent-encode it)", c, lit)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// nameLen returns the length of the variable name ([A-Za-z_][A-Za-z0-9_]*) at
// the start of s, or 0.
func nameLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z'):
		case '0' <= c && c <= '9' && i > 0:
		default:
			return i
		}
	}
	return len(s)
}

// matchVar finds the template variable matching field name case-insensitively,
// preferring an exact match. It returns -1 when none matches.
func matchVar(vars []string, field string) (int, error) {
	idx := -1
	for j, v := range vars {
		if v == field {
			return j, nil
		}
		if strings.EqualFold(v, field) {
			if idx >= 0 {
				return -1, fmt.Errorf("ambiguous: matches template variables %q and %q case-insensitively", vars[idx], v)
			}
			idx = j
		}
	}
	return idx, nil
}

type fieldKind int

const (
	fieldIgnored fieldKind = iota
	fieldPath
	fieldQuery
)

type fieldInfo struct {
	kind      fieldKind
	name      string // variable or query name
	tagged    bool   // path variable named by a path tag
	omitempty bool
	format    func(reflect.Value) string
}

// classifyField reads the tags of the exported field sf of struct type t.
func classifyField(sf reflect.StructField, t reflect.Type) (fieldInfo, error) {
	pathTag, hasPath := sf.Tag.Lookup("path")
	queryTag, hasQuery := sf.Tag.Lookup("query")
	var fi fieldInfo
	switch {
	case hasPath && hasQuery:
		if pathTag == "-" && queryTag == "-" {
			return fieldInfo{kind: fieldIgnored}, nil
		}
		return fi, fmt.Errorf("field %s of type %s has both path and query tags", sf.Name, t)
	case hasPath:
		if pathTag == "-" {
			return fieldInfo{kind: fieldIgnored}, nil
		}
		if pathTag == "" || strings.Contains(pathTag, ",") {
			return fi, fmt.Errorf("field %s of type %s has invalid tag path:%q", sf.Name, t, pathTag)
		}
		fi = fieldInfo{kind: fieldPath, name: pathTag, tagged: true}
	case hasQuery:
		if queryTag == "-" {
			return fieldInfo{kind: fieldIgnored}, nil
		}
		name, opts, _ := strings.Cut(queryTag, ",")
		if name == "" {
			name = sf.Name
		}
		fi = fieldInfo{kind: fieldQuery, name: name}
		if opts != "" {
			for _, o := range strings.Split(opts, ",") {
				if o != "omitempty" {
					return fi, fmt.Errorf("field %s of type %s has unknown query tag option %q", sf.Name, t, o)
				}
				fi.omitempty = true
			}
		}
	default:
		if sf.Tag.Get("qcache") == "-" {
			return fieldInfo{kind: fieldIgnored}, nil
		}
		fi = fieldInfo{kind: fieldPath, name: sf.Name}
	}
	f, ok := formatter(sf.Type)
	if !ok {
		return fi, fmt.Errorf("field %s has unsupported type %s in type %s (want string, bool, integer, float, or fmt.Stringer)", sf.Name, sf.Type, t)
	}
	fi.format = f
	return fi, nil
}

var stringerType = reflect.TypeFor[fmt.Stringer]()

// isScalar reports whether t may be used directly as a single parameter value.
func isScalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// formatter returns the function formatting values of type t as strings.
// A non-pointer, non-interface type implementing fmt.Stringer uses String.
func formatter(t reflect.Type) (func(reflect.Value) string, bool) {
	if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && t.Implements(stringerType) {
		return func(v reflect.Value) string { return v.Interface().(fmt.Stringer).String() }, true
	}
	switch t.Kind() {
	case reflect.String:
		return reflect.Value.String, true
	case reflect.Bool:
		return func(v reflect.Value) string { return strconv.FormatBool(v.Bool()) }, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(v reflect.Value) string { return strconv.FormatInt(v.Int(), 10) }, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(v reflect.Value) string { return strconv.FormatUint(v.Uint(), 10) }, true
	case reflect.Float32:
		return func(v reflect.Value) string { return strconv.FormatFloat(v.Float(), 'g', -1, 32) }, true
	case reflect.Float64:
		return func(v reflect.Value) string { return strconv.FormatFloat(v.Float(), 'g', -1, 64) }, true
	}
	return nil, false
}
