package policy

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/policy.md lists the presets' rules in sections that these tests
// make from the compiled presets, so the page cannot drift from the code:
// a changed preset fails TestDocsPresetTables until the page is rewritten
// with
//
//	go test ./internal/policy -run TestDocs -update
var updateDocs = flag.Bool("update", false, "rewrite the generated sections of docs/policy.md")

const policyDoc = "../../docs/policy.md"

// A generated section is the text between
//
//	<!-- generated: NAME -->
//
// and the next "<!-- end generated -->" line.
const (
	genStart = "<!-- generated: "
	genEnd   = "<!-- end generated -->"
)

// docSections are the generated sections of docs/policy.md, by name.
func docSections() map[string]string {
	return map[string]string{
		"read-only allow":    allowTable(readOnly.allow),
		"read-only deny":     denyTable(readOnly.deny),
		"no-escalation deny": denyTable(noEscalation.deny),
	}
}

// allowTable renders allow rules, one row per path family (first path
// segment) and method set, in the preset's order.
func allowTable(rules []rule) string {
	var b strings.Builder
	b.WriteString("| Methods | Paths |\n|---|---|\n")
	for i := 0; i < len(rules); {
		j := i + 1
		for j < len(rules) && rules[j].methods == rules[i].methods && family(rules[j].pat.src) == family(rules[i].pat.src) {
			j++
		}
		var pats []string
		for _, r := range rules[i:j] {
			pats = append(pats, "`"+r.pat.src+"`")
		}
		b.WriteString("| " + methodsText(rules[i].methods) + " | " + strings.Join(pats, ", ") + " |\n")
		i = j
	}
	return b.String()
}

// denyTable renders deny rules, one row each: what the rule matches, its
// rule id, and its reason without the "is not allowed by policy X: "
// that every reason starts with.
func denyTable(rules []rule) string {
	var b strings.Builder
	b.WriteString("| Methods | Path | Rule | Why |\n|---|---|---|---|\n")
	for _, r := range rules {
		why := r.why
		if _, after, ok := strings.Cut(why, ": "); ok {
			why = after
		}
		b.WriteString("| " + methodsText(r.methods) + " | `" + r.pat.src + "` | `" + r.id + "` | " + why + " |\n")
	}
	return b.String()
}

// family is a pattern's first segment: "/containers/{name}/json" is of
// "containers".
func family(pat string) string {
	f, _, _ := strings.Cut(strings.TrimPrefix(pat, "/"), "/")
	return f
}

func methodsText(m methodSet) string {
	if m == mAll {
		return "any"
	}
	var names []string
	for _, x := range []struct {
		name string
		bit  methodSet
	}{{"GET", mGET}, {"HEAD", mHEAD}, {"POST", mPOST}, {"PUT", mPUT}, {"DELETE", mDELETE}, {"OPTIONS", mOPTIONS}, {"PATCH", mPATCH}} {
		if m&x.bit != 0 {
			names = append(names, "`"+x.name+"`")
		}
	}
	return strings.Join(names, ", ")
}

// TestDocsPresetTables fails when a generated section of docs/policy.md
// is not what the presets render, printing what it should be; with
// -update it rewrites them.
func TestDocsPresetTables(t *testing.T) {
	data, err := os.ReadFile(policyDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	want := docSections()
	var out strings.Builder
	seen := map[string]bool{}
	rest := doc
	for {
		before, after, ok := strings.Cut(rest, genStart)
		out.WriteString(before)
		if !ok {
			break
		}
		name, body, ok := strings.Cut(after, " -->\n")
		if !ok {
			t.Fatalf("%s: a %q line without its closing \" -->\"", policyDoc, genStart)
		}
		got, tail, ok := strings.Cut(body, genEnd)
		if !ok {
			t.Fatalf("%s: section %q has no %q line", policyDoc, name, genEnd)
		}
		table, known := want[name]
		if !known {
			t.Errorf("%s: unknown generated section %q", policyDoc, name)
			table = got
		}
		if seen[name] {
			t.Errorf("%s: section %q appears twice", policyDoc, name)
		}
		seen[name] = true
		if known && got != table && !*updateDocs {
			t.Errorf("%s: section %q is not what the presets say; run\n\tgo test ./internal/policy -run TestDocs -update\nor make it:\n%s", policyDoc, name, table)
		}
		out.WriteString(genStart + name + " -->\n" + table + genEnd)
		rest = tail
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s: no generated section %q; add the lines\n%s%s -->\n%s", policyDoc, name, genStart, name, genEnd)
		}
	}
	if *updateDocs && out.String() != doc {
		if err := os.WriteFile(policyDoc, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the generated sections of %s", policyDoc)
	}
}

// ruleIDs are the values of the package's Rule* constants, read from its
// source so that a new rule needs no list kept here.
func ruleIDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var ids []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Rule") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: %s is not a string literal", e.Name(), n.Name)
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, v)
				}
			}
		}
	}
	if len(ids) < 20 {
		t.Fatalf("found %d Rule constants, want the package's whole list", len(ids))
	}
	return ids
}

var backticked = regexp.MustCompile("`([^`]+)`")

// TestDocsRuleIDs checks that every rule id in a "Rule" column of
// docs/policy.md is one of the Rule constants, and that every Rule
// constant is on the page.
func TestDocsRuleIDs(t *testing.T) {
	data, err := os.ReadFile(policyDoc)
	if err != nil {
		t.Fatal(err)
	}
	ids := ruleIDs(t)
	doc := string(data)
	inTable, col, rows := false, -1, 0
	for n, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := tableCells(line)
		if !inTable { // the header row
			inTable, col = true, slices.Index(cells, "Rule")
			continue
		}
		if col < 0 || col >= len(cells) || strings.HasPrefix(line, "|---") {
			continue
		}
		rows++
		for _, m := range backticked.FindAllStringSubmatch(cells[col], -1) {
			if !slices.Contains(ids, m[1]) {
				t.Errorf("%s:%d: rule %q is not a Rule constant of package policy", policyDoc, n+1, m[1])
			}
		}
	}
	if rows < 20 {
		t.Errorf("%s: found %d rows with a Rule column, want the page's tables", policyDoc, rows)
	}
	for _, id := range ids {
		if !strings.Contains(doc, "`"+id+"`") {
			t.Errorf("%s does not mention rule `%s`", policyDoc, id)
		}
	}
}

// tableCells splits a Markdown table row into its trimmed cells; a "|"
// inside backticks does not split.
func tableCells(line string) []string {
	var cells []string
	var cur strings.Builder
	code := false
	for _, c := range strings.Trim(line, "|") {
		switch {
		case c == '`':
			code = !code
		case c == '|' && !code:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteRune(c)
	}
	return append(cells, strings.TrimSpace(cur.String()))
}
