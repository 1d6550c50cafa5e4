package policy

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	good := []struct {
		target, path, query string
	}{
		{"/_ping", "/_ping", ""},
		{"/", "/", ""},
		{"/v1.41/containers/json", "/containers/json", ""},
		{"/v1.41/containers/json?all=1&filters=%7B%7D", "/containers/json", "all=1&filters=%7B%7D"},
		{"/v1.41/containers/create?name=x", "/containers/create", "name=x"},
		{"/containers/json", "/containers/json", ""},
		{"/v1.41/v1.41/x", "/v1.41/x", ""},                       // a second prefix stays, and matches no route
		{"/v1.41.0/containers/create", "/containers/create", ""}, // dockerd's router takes /v{[0-9.]+}
		{"/v1/containers/json", "/containers/json", ""},
		{"/v1.41", "/v1.41", ""}, // no path after it: not a prefix
		{"/v/containers/json", "/v/containers/json", ""},
		{"/V1.41/containers/json", "/V1.41/containers/json", ""},
		{"/images/registry.example:5000/team/app:1.2/json", "/images/registry.example:5000/team/app:1.2/json", ""},
		{"/images/alpine@sha256:0123abcd/json", "/images/alpine@sha256:0123abcd/json", ""},
		{"/networks/my%20net", "/networks/my%20net", ""},
		{"/networks/my%2cnet", "/networks/my,net", ""}, // an encoded sub-delim has one reading
		{"/networks/caf%c3%a9", "/networks/caf%C3%A9", ""},
		{"/a/...", "/a/...", ""},
		{"/a/.b", "/a/.b", ""},
		{"/a?", "/a", ""},
		{"/a?b?c", "/a", "b?c"},
	}
	for _, tc := range good {
		p, q, err := NormalizePath(tc.target)
		if err != nil || p != tc.path || q != tc.query {
			t.Errorf("NormalizePath(%q): got %q, %q, %v, want %q, %q, nil", tc.target, p, q, err, tc.path, tc.query)
		}
	}

	bad := []struct {
		target, why string
	}{
		{"", "empty"},
		{"?a=b", "empty"},
		{"containers/json", "does not start with /"},
		{"*", "does not start with /"},
		{"http://docker/containers/json", "does not start with /"},
		{"/containers/../x", ". or .."},
		{"/containers/./x", ". or .."},
		{"/..", ". or .."},
		{"/v1.41/..", ". or .."},
		{"/containers/%2e%2e/x", "percent-encodes a letter"},
		{"/containers/%2E/x", "percent-encodes a letter"},
		{"/a//b", "empty segment"},
		{"//containers/json", "empty segment"},
		{"/containers/json/", "ends with /"},
		{"/v1.41/", "ends with /"},
		{"/a%2Fb", "encoded slash"},
		{"/a%2fb", "encoded slash"},
		{"/a%00", "encoded NUL"},
		{"/a\x00", "NUL byte"},
		{"/a\\b", "backslash"},
		{"/a%5cb", "encoded backslash"},
		{"/a%5Cb", "encoded backslash"},
		{"/a%", "invalid percent-encoding"},
		{"/a%2", "invalid percent-encoding"},
		{"/a%zz", "invalid percent-encoding"},
		{"/a%%41", "invalid percent-encoding"},
		{"/containers/%61bc/json", "percent-encodes a letter"},
		{"/containers/cr%65ate", "percent-encodes a letter"},
		{"/a%7e", "percent-encodes a letter"},
		{"/a%0a", "encoded control"},
		{"/a%7F", "encoded control"},
		{"/a\tb", "control character"},
		{"/a b", "must be percent-encoded"},
		{"/a#b", "must be percent-encoded"},
		{"/a\"b", "must be percent-encoded"},
		{"/caf\xc3\xa9", "must be percent-encoded"},
		{"/a%ff", "not UTF-8"},
		{"/" + strings.Repeat("a", maxPath), "longer than"},
		{"/_ping?a=\x01", "control character"},
		{"/_ping?a=\x7f", "control character"},
	}
	for _, tc := range bad {
		p, _, err := NormalizePath(tc.target)
		if err == nil || p != "" || !errors.Is(err, ErrPath) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("NormalizePath(%q): got %q, %v, want an ErrPath saying %q", tc.target, p, err, tc.why)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		pat, path string
		want      bool
	}{
		{"/", "/", true},
		{"/", "/a", false},
		{"/*", "/", true},
		{"/*", "/a/b/c", true},
		{"/_ping", "/_ping", true},
		{"/_ping", "/_ping/x", false},
		{"/containers/{id}/json", "/containers/abc/json", true},
		{"/containers/{id}/json", "/containers/a/b/json", true}, // as dockerd's {name:.*}
		{"/containers/{id}/json", "/containers/json", false},
		{"/containers/{id}/json", "/containers/abc/export", false},
		{"/containers/{id}/json", "/containers/abc/json/x", false},
		{"/containers/{id}", "/containers/abc", true},
		{"/containers/{id}", "/containers", false},
		{"/plugins/*", "/plugins", true},
		{"/plugins/*", "/plugins/vieux/sshfs/enable", true},
		{"/plugins/*", "/pluginsx", false},
		{"/plugins/{name}/enable", "/plugins/vieux/sshfs:latest/enable", true},
		{"/plugins/{name}/enable", "/plugins/enable", false},
		{"/containers/{id}/attach", "/containers/x/attach/ws", false},
		{"/containers/{id}/attach/ws", "/containers/x/attach/ws", true},
		{"/a/{x}/b/{y}/c", "/a/1/2/b/3/b/4/c", true},
		{"/a/{x}/b/{y}/c", "/a/b/c", false},
		{"/a/{x}/b/*", "/a/1/b", true},
		{"/a/{x}/b/*", "/a/1/b/2/3", true},
		{"/Containers/json", "/containers/json", false},
	}
	for _, tc := range cases {
		pt, err := compilePattern(tc.pat)
		if err != nil {
			t.Fatalf("compilePattern(%q): %v", tc.pat, err)
		}
		if got := pt.match(tc.path); got != tc.want {
			t.Errorf("pattern %q on %q: got %v, want %v", tc.pat, tc.path, got, tc.want)
		}
	}
}

func TestCompilePatternErrors(t *testing.T) {
	cases := []struct{ pat, why string }{
		{"", "empty"},
		{"containers/json", `start with "/"`},
		{"/a//b", "empty segment"},
		{"/a/", `end with "/"`},
		{"/a/../b", `"." or ".."`},
		{"/a/*/b", `"*" is allowed only`},
		{"/a*", `"*" is allowed only`},
		{"/{id", "placeholder"},
		{"/{i-d}", "placeholder"},
		{"/{}", "placeholder"},
		{"/v1.41/containers/json", "API version"},
		{"/a b", "not allowed in a path"},
		{"/%61", "canonical"},
		{"/%2F", "canonical"},
		{"/" + strings.Repeat("a/", 40) + "a", "segments"},
		{"/" + strings.Repeat("a", 300), "longer"},
	}
	for _, tc := range cases {
		_, err := compilePattern(tc.pat)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("compilePattern(%q): got %v, want an error saying %q", tc.pat, err, tc.why)
		}
	}
}

// checkCanonical asserts what NormalizePath promises of an accepted path.
func checkCanonical(t *testing.T, target, p string) {
	t.Helper()
	if p == "" || p[0] != '/' {
		t.Fatalf("NormalizePath(%q) = %q: not absolute", target, p)
	}
	if p != "/" && strings.HasSuffix(p, "/") {
		t.Fatalf("NormalizePath(%q) = %q: trailing /", target, p)
	}
	if strings.Contains(p, "//") {
		t.Fatalf("NormalizePath(%q) = %q: has //", target, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			t.Fatalf("NormalizePath(%q) = %q: has a dot segment", target, p)
		}
	}
	if c, err := canonical(p); err != nil || c != p {
		t.Fatalf("NormalizePath(%q) = %q: its canonical form is %q, %v", target, p, c, err)
	}
	if p == "/" {
		return // "/v1.41/" ends with a slash
	}
	again, _, err := NormalizePath("/v1.41" + p)
	if err != nil || again != p {
		t.Fatalf("NormalizePath(%q) = %q, but with a version prefix: got %q, %v", target, p, again, err)
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/v1.41/containers/json", "/containers/../x", "/containers/%2e%2e/x",
		"/a//b", "/a%2Fb", "/a%00", "/v1.41/v1.41/x", "", "/networks/my%20net?x=1", "/images/a:b@c/json",
		"/v1.41", "/%c3%a9", "/a%2cb", "/v1..2/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		p, q, err := NormalizePath(target)
		if err != nil {
			if p != "" || !errors.Is(err, ErrPath) {
				t.Fatalf("NormalizePath(%q): got %q, %v on error", target, p, err)
			}
			return
		}
		checkCanonical(t, target, p)
		// Go's URL parser, as dockerd's server uses it, reads the same
		// decoded path, give or take the version prefix.
		u, uerr := url.ParseRequestURI(target)
		if uerr != nil {
			t.Fatalf("NormalizePath(%q) accepted what net/url refuses: %v", target, uerr)
		}
		dec := decode(p)
		prefix, ok := strings.CutSuffix(u.Path, dec)
		if !ok || prefix != "" && !(prefix[0] == '/' && isVersion(prefix[1:])) {
			t.Fatalf("NormalizePath(%q) = %q (decoded %q), net/url reads %q", target, p, dec, u.Path)
		}
		if _, after, _ := strings.Cut(target, "?"); q != after {
			t.Fatalf("NormalizePath(%q): got query %q, want %q", target, q, after)
		}
	})
}
