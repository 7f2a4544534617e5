package qcache_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMECodeBlocksCompile builds every ```go block of README.md and
// docs/*.md, so that the docs cannot drift from the API. The line before
// each block's fence says what the block is (docs/contributing.md has the
// table):
//
//	<!-- go:program -->   a whole file: built alone, as it is
//	<!-- go:snippet -->   statements: the body of a func, after the preamble below
//	<!-- go:decls -->     top-level declarations: a file after the preamble
//	<!-- go:skip why -->  not built
//
// "module=qcacheprom,qcacheotel" after the kind builds the block against
// those sub-modules too. The blocks are written into a temporary module that
// replaces github.com/qcache-go/qcache (and the sub-modules) with this
// repository, and built with one "go test -run ^$" per set of sub-modules,
// offline (GOPROXY=off): the root module's dependencies are in the module
// cache whenever its own tests build; a sub-module's may not be, and then
// its blocks are skipped, saying why.
func TestREADMECodeBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the docs' code with the go command (seconds); skipped in -short mode")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH, so the docs' code cannot be built:", err)
	}
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	var blocks []docBlock
	for _, path := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		text, err := os.ReadFile(path)
		require.NoError(t, err)
		name, _ := filepath.Rel(root, path)
		bs, problems := goBlocks(filepath.ToSlash(name), string(text))
		for _, p := range problems {
			assert.Fail(t, p)
		}
		blocks = append(blocks, bs...)
	}
	require.NotEmpty(t, blocks, "no ```go blocks found in README.md and docs/*.md")

	groups := map[string][]docBlock{} // by sub-modules needed, "" for none
	for _, b := range blocks {
		if b.kind != "skip" {
			k := strings.Join(b.modules, ",")
			groups[k] = append(groups[k], b)
		}
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name := k
		if name == "" {
			name = "root"
		}
		t.Run(name, func(t *testing.T) {
			buildDocBlocks(t, goTool, root, groups[k])
		})
	}
}

// A docBlock is one ```go block of a markdown file.
type docBlock struct {
	file    string // markdown file, relative to the repository
	line    int    // line of the block's first line of code
	kind    string // program, snippet, decls or skip
	modules []string
	code    string
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

var docMarker = regexp.MustCompile(`^<!--\s*go:(\w+)(.*?)-->\s*$`)

// goBlocks returns the ```go blocks of a markdown file, and a problem for
// each block without a valid marker.
func goBlocks(file, text string) (blocks []docBlock, problems []string) {
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		end := i + 1
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if strings.TrimSpace(strings.TrimPrefix(fence, "```")) == "go" {
			b := docBlock{file: file, line: i + 2, code: strings.Join(lines[i+1:min(end, len(lines))], "\n")}
			var m []string
			if i > 0 {
				m = docMarker.FindStringSubmatch(strings.TrimSpace(lines[i-1]))
			}
			switch {
			case m == nil:
				problems = append(problems, fmt.Sprintf("%s:%d: a ```go block without a marker on the line before it "+
					"(<!-- go:program -->, <!-- go:snippet -->, <!-- go:decls --> or <!-- go:skip reason -->)", file, i+1))
				i = end
				continue
			case m[1] == "skip":
				if strings.TrimSpace(m[2]) == "" {
					problems = append(problems, fmt.Sprintf("%s:%d: <!-- go:skip --> without a reason", file, i))
				}
			case m[1] == "program" || m[1] == "snippet" || m[1] == "decls":
				for _, f := range strings.Fields(m[2]) {
					mods, ok := strings.CutPrefix(f, "module=")
					if !ok {
						problems = append(problems, fmt.Sprintf("%s:%d: unknown marker argument %q", file, i, f))
						continue
					}
					for _, mod := range strings.Split(mods, ",") {
						if _, known := subModuleImports[mod]; !known {
							problems = append(problems, fmt.Sprintf("%s:%d: unknown sub-module %q", file, i, mod))
							continue
						}
						b.modules = append(b.modules, mod)
					}
				}
				slices.Sort(b.modules)
				b.modules = slices.Compact(b.modules)
			default:
				problems = append(problems, fmt.Sprintf("%s:%d: unknown marker go:%s", file, i, m[1]))
				i = end
				continue
			}
			b.kind = m[1]
			blocks = append(blocks, b)
		}
		i = end
	}
	return blocks, problems
}

// A docImport is a package the preamble imports, with a use of it, so
// that a file whose code does not use it still compiles.
type docImport struct{ path, use string }

var rootImports = []docImport{
	{"context", "context.Background"},
	{"encoding/json", "json.Marshal"},
	{"errors", "errors.New"},
	{"fmt", "fmt.Sprint"},
	{"log/slog", "slog.Default"},
	{"net/http", "http.StatusOK"},
	{"time", "time.Second"},
	{"github.com/qcache-go/qcache", "qcache.NewClient"},
	{"github.com/qcache-go/qcache/qcachetest", "qcachetest.WaitIdle"},
	{"github.com/qcache-go/qcache/inspect", "inspect.Handler"},
}

var subModuleImports = map[string][]docImport{
	"qcacheprom": {
		{"github.com/qcache-go/qcache/qcacheprom", "qcacheprom.New"},
		{"github.com/prometheus/client_golang/prometheus", "prometheus.MustRegister"},
		{"github.com/prometheus/client_golang/prometheus/promhttp", "promhttp.Handler"},
	},
	"qcacheotel": {
		{"github.com/qcache-go/qcache/qcacheotel", "qcacheotel.New"},
		{"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "otelhttp.NewTransport"},
	},
	"redisbus": {
		{"github.com/qcache-go/qcache/redisbus", "redisbus.New"},
		{"github.com/redis/go-redis/v9", "redis.NewClient"},
	},
}

// A docDecl is one declaration of the preamble, with the names it
// declares: a decls block that declares one of them replaces it.
type docDecl struct {
	names  []string
	module string // "" for the root module
	src    string
}

var preambleDecls = []docDecl{
	{[]string{"User"}, "", "type User struct {\n\tID   string `json:\"id\"`\n\tName string `json:\"name\"`\n}"},
	{[]string{"Post"}, "", "type Post struct {\n\tID    string `json:\"id\"`\n\tTitle string `json:\"title\"`\n}"},
	{[]string{"Order"}, "", "type Order struct {\n\tID int64 `json:\"id\"`\n}"},
	{[]string{"Todo"}, "", "type Todo struct {\n\tID    int    `json:\"id\"`\n\tTitle string `json:\"title\"`\n\tDone  bool   `json:\"done\"`\n}"},
	{[]string{"database"}, "", "type database struct{}\n\nfunc (database) Order(ctx context.Context, id int64) (Order, error) { return Order{ID: id}, nil }"},
	{[]string{"db"}, "", "var db database"},
	{[]string{"client"}, "", "var client *qcache.Client"},
	{[]string{"ctx"}, "", "var ctx context.Context"},
	{[]string{"api"}, "", `var api = "https://api.example.com"`},
	{[]string{"ep"}, "", `var ep = qcache.Endpoint{URL: "/users/$userId"}`},
	{[]string{"userID"}, "", `var userID = "42"`},
	{[]string{"isActive"}, "", "var isActive bool"},
	{[]string{"getUser"}, "", "var getUser *qcache.Query[string, User]"},
	{[]string{"getTodo"}, "", "var getTodo *qcache.Query[int, Todo]"},
	{[]string{"obs"}, "", "var obs *qcache.Observer[User]"},
	{[]string{"render"}, "", "func render(User) {}"},
	{[]string{"Job"}, "", "type Job struct {\n\tStatus string `json:\"status\"`\n}"},
	{[]string{"getJob"}, "", "var getJob *qcache.Query[string, Job]"},
	{[]string{"jobID"}, "", `var jobID = "7"`},
	{[]string{"PostsParams"}, "", "type PostsParams struct {\n\tUserID string `path:\"userId\"`\n\tPage   int    `query:\"page,omitempty\"`\n}"},
	{[]string{"listPosts"}, "", "var listPosts *qcache.Query[PostsParams, []Post]"},
	{[]string{"metrics"}, "qcacheprom", "var metrics *qcacheprom.Collector"},
	{[]string{"mux"}, "", "var mux = http.NewServeMux()"},
}

// importBlock is the import declaration and the uses of a file of a
// package built against modules.
func importBlock(modules []string) string {
	imps := slices.Clone(rootImports)
	for _, m := range modules {
		imps = append(imps, subModuleImports[m]...)
	}
	var b strings.Builder
	b.WriteString("import (\n")
	for _, imp := range imps {
		fmt.Fprintf(&b, "\t%q\n", imp.path)
	}
	b.WriteString(")\n\nvar (\n")
	for _, imp := range imps {
		fmt.Fprintf(&b, "\t_ = %s\n", imp.use)
	}
	b.WriteString(")\n")
	return b.String()
}

// preamble is the file of shared declarations of a package built against
// modules, less those named in without.
func preamble(pkg string, modules []string, without []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "package %s\n\n%s", pkg, importBlock(modules))
	for _, d := range preambleDecls {
		if d.module != "" && !slices.Contains(modules, d.module) {
			continue
		}
		if slices.ContainsFunc(d.names, func(n string) bool { return slices.Contains(without, n) }) {
			continue
		}
		fmt.Fprintf(&b, "\n%s\n", d.src)
	}
	return b.String()
}

// topLevelNames returns the names a decls block declares; nil when it does
// not parse (the build then says why).
func topLevelNames(code string) []string {
	f, err := parser.ParseFile(token.NewFileSet(), "decls.go", "package p\n"+code, parser.SkipObjectResolution)
	if err != nil {
		return nil
	}
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				names = append(names, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					names = append(names, s.Name.Name)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	return names
}

// A genFile is a file written for a block: line offset of the file holds
// the block's first line.
type genFile struct {
	block  docBlock
	offset int
}

// buildDocBlocks writes blocks into a temporary module and builds them.
func buildDocBlocks(t *testing.T, goTool, root string, blocks []docBlock) {
	dir := t.TempDir()
	modules := blocks[0].modules
	var gomod strings.Builder
	gomod.WriteString("module readmecheck\n\ngo 1.25\n\nrequire github.com/qcache-go/qcache v0.0.0\n\n")
	fmt.Fprintf(&gomod, "replace github.com/qcache-go/qcache => %s\n", strconv.Quote(root))
	var sums []byte
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	sums = append(sums, sum...)
	for _, m := range modules {
		fmt.Fprintf(&gomod, "\nrequire github.com/qcache-go/qcache/%s v0.0.0\n", m)
		fmt.Fprintf(&gomod, "replace github.com/qcache-go/qcache/%s => %s\n", m, strconv.Quote(filepath.Join(root, m)))
		sum, err := os.ReadFile(filepath.Join(root, m, "go.sum"))
		require.NoError(t, err)
		sums = append(sums, sum...)
	}
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	write("go.mod", gomod.String())
	write("go.sum", string(sums))

	files := map[string]genFile{} // by path in dir, slash-separated
	nSnippets := 0
	for i, b := range blocks {
		tag := fmt.Sprintf("%s_%d", strings.NewReplacer("/", "_", ".", "_").Replace(b.file), b.line)
		switch b.kind {
		case "program":
			name := fmt.Sprintf("program%d/%s.go", i, tag)
			if f, err := parser.ParseFile(token.NewFileSet(), "", b.code, parser.PackageClauseOnly); err == nil &&
				strings.HasSuffix(f.Name.Name, "_test") {
				name = fmt.Sprintf("program%d/%s_test.go", i, tag)
			}
			write(name, b.code+"\n")
			files[name] = genFile{b, 1}
		case "decls":
			pkg := fmt.Sprintf("decls%d", i)
			write(pkg+"/preamble.go", preamble(pkg, modules, topLevelNames(b.code)))
			head := fmt.Sprintf("package %s\n\n%s\n", pkg, importBlock(modules))
			name := fmt.Sprintf("%s/%s.go", pkg, tag)
			write(name, head+b.code+"\n")
			files[name] = genFile{b, strings.Count(head, "\n") + 1}
		case "snippet":
			nSnippets++
			head := fmt.Sprintf("package snippets\n\n%s\nfunc _() error {\n", importBlock(modules))
			name := fmt.Sprintf("snippets/%s.go", tag)
			write(name, head+b.code+"\n\treturn nil\n}\n")
			files[name] = genFile{b, strings.Count(head, "\n") + 1}
		}
	}
	if nSnippets > 0 {
		write("snippets/preamble.go", preamble("snippets", modules, nil))
	}

	cmd := exec.Command(goTool, "test", "-count=1", "-run", "^$", "-vet=off", "-gcflags=-e", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "go test: %v\n%s", err, out)
	if len(modules) > 0 && (bytes.Contains(out, []byte("GOPROXY=off")) || bytes.Contains(out, []byte("missing go.sum entry"))) {
		t.Skipf("the dependencies of %s are not all in the module cache, and this test does not download: "+
			"run the sub-modules' tests once (.ci/run) to fetch them\n%s", strings.Join(modules, ", "), out)
	}
	reported := reportBuildErrors(t, string(out), files)
	require.NotZero(t, reported, "go test failed, and named no line of a block:\n%s", out)
}

var compileError = regexp.MustCompile(`^(\S+\.go):(\d+):(?:(\d+):)? (.*)$`)

// reportBuildErrors reports each compile error at its markdown line, and
// returns how many errors it saw, ignored ones included. Variables that
// snippets and declarations leave unused are ignored: examples declare
// what a reader will use.
func reportBuildErrors(t *testing.T, out string, files map[string]genFile) int {
	t.Helper()
	seen := 0
	for line := range strings.Lines(out) {
		m := compileError.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		seen++
		path := filepath.ToSlash(strings.TrimPrefix(m[1], "./"))
		f, ok := files[path]
		if !ok {
			assert.Failf(t, "a generated file does not build", "%s (in a generated file: the preamble of readme_test.go, or a block's imports)", strings.TrimSpace(line))
			continue
		}
		if f.block.kind != "program" && strings.HasPrefix(m[4], "declared and not used") {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		assert.Failf(t, "a docs block does not build", "%s:%d: %s (%s block)", f.block.file, f.block.line+n-f.offset, m[4], f.block.kind)
	}
	return seen
}
