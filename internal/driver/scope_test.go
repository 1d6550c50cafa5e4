package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockrelay/sockrelay/internal/policy"
)

func TestScopeOption(t *testing.T) {
	const sock = "/var/run"
	good := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"policy": "no-escalation", "scope": "project-a"}, "project-a"},
		{map[string]string{"policy": "full", "scope": "volume"}, "volume"},
		{map[string]string{"mode": "policy", "policy": "file:ci", "scope": "A.1_b"}, "A.1_b"},
	}
	for _, tt := range good {
		v, err := ParseOptions(tt.opts, sock, testModes)
		if err != nil || v.Mode != "policy" || v.Options["scope"] != tt.want {
			t.Errorf("ParseOptions(%v): got %+v, %v, want a policy volume of scope %s", tt.opts, v, err, tt.want)
		}
	}
	bad := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"scope": "a"}, "needs option policy"},
		{map[string]string{"mode": "relay", "scope": "a"}, "option scope does not apply to mode=relay"},
		{map[string]string{"mode": "idmap", "scope": "a"}, "option scope does not apply to mode=idmap"},
		{map[string]string{"policy": "full", "scope": ""}, "option scope"},
		{map[string]string{"policy": "full", "scope": "a=b"}, "option scope"},
		{map[string]string{"policy": "full", "scope": "-x"}, "option scope"},
		{map[string]string{"policy": "full", "scope": strings.Repeat("s", policy.MaxScope+1)}, "option scope"},
	}
	for _, tt := range bad {
		_, err := ParseOptions(tt.opts, sock, testModes)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseOptions(%v): got %v, want an error saying %q", tt.opts, err, tt.want)
			continue
		}
		if v := tt.opts["scope"]; len(v) > 1 && strings.Contains(err.Error(), v) {
			t.Errorf("ParseOptions(%v): %q repeats the value", tt.opts, err)
		}
	}
}

func TestEffectiveScope(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("scoped", "version: 1\nscope: from-file\nallow:\n  - {method: GET, path: /_ping}\n")
	write("plain", "version: 1\nallow:\n  - {method: GET, path: /_ping}\n")
	m := &PolicyMode{Policies: policy.Source{Dir: dir}}
	cases := []struct {
		name, pol, scope string
		want, err        string
	}{
		{"vol", "no-escalation", "", "", ""},
		{"vol", "no-escalation", "a", "a", ""},
		{"ci-7", "full", "volume", "ci-7", ""},
		{strings.Repeat("v", 80), "full", "volume", "", "scope=volume"},
		{"vol", "file:scoped", "", "from-file", ""},
		{"vol", "file:scoped", "from-file", "from-file", ""},
		{"vol", "file:scoped", "other", "", "sets scope from-file"},
		{"vol", "file:plain", "x", "x", ""},
	}
	for _, tc := range cases {
		v := &Volume{Name: tc.name, Mode: "policy", Options: map[string]string{"policy": tc.pol, "uid": "0", "gid": "0", "perm": "0660"}}
		if tc.scope != "" {
			v.Options["scope"] = tc.scope
		}
		err := m.Check(v)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %s scope=%s: Check got %v, want an error saying %q", tc.name, tc.pol, tc.scope, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s scope=%s: Check: %v", tc.name, tc.pol, tc.scope, err)
			continue
		}
		p, _ := m.Policies.Load(tc.pol)
		if got, err := effectiveScope(v, p); err != nil || got != tc.want {
			t.Errorf("%s %s scope=%s: got %q, %v, want %q", tc.name, tc.pol, tc.scope, got, err, tc.want)
		}
	}
}

// The volumes of one daemon socket share a resolver; the last to go
// stops its watch.
func TestResolversShared(t *testing.T) {
	var rs resolvers
	a, relA := rs.acquire("/nonexistent/a.sock", nil)
	b, relB := rs.acquire("/nonexistent/a.sock", nil)
	c, relC := rs.acquire("/nonexistent/c.sock", nil)
	if a != b || a == c {
		t.Fatalf("got %p %p %p, want the first two the same and the third another", a, b, c)
	}
	relA()
	relA() // twice is once
	if d, relD := rs.acquire("/nonexistent/a.sock", nil); d != a {
		t.Errorf("after one of two releases: got another resolver")
	} else {
		relD()
	}
	relB()
	relC()
	if len(rs.m) != 0 {
		t.Errorf("after every release: %d resolvers left", len(rs.m))
	}
}
