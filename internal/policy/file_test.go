package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	data, err := os.ReadFile("testdata/ci.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("ci", data)
	if err != nil {
		t.Fatalf("Parse: got %v, want nil", err)
	}
	if p.Name() != "file:ci" || len(p.Digest()) != 64 {
		t.Fatalf("got name %q digest %q, want file:ci and a SHA-256", p.Name(), p.Digest())
	}
	run := dockerRunBody(t)
	runCases(t, p, []reqCase{
		allowed("HEAD", "/_ping"),
		allowed("GET", "/v1.47/containers/json"),
		allowed("GET", "/v1.47/images/library/alpine:3.20/json"),
		allowedBody("docker run --rm alpine true", "POST", "/v1.47/containers/create", run),
		allowed("POST", "/v1.47/containers/3f2a/start"),
		upgraded("POST", "/v1.47/containers/3f2a/attach?stream=1&stdout=1"),
		upgraded("POST", "/v1.47/exec/9c1d/start"),
		allowedBody("exec", "POST", "/v1.47/containers/3f2a/exec", execBody),
		allowed("DELETE", "/v1.47/containers/3f2a?force=1"),
		allowed("GET", "/v1.47/plugins"),
		denied("POST", "/v1.47/plugins/pull", 403, "endpoint-denied"),
		denied("POST", "/v1.47/containers/3f2a/kill", 403, "endpoint-not-allowed"),
		denied("GET", "/v1.47/containers/3f2a/export", 403, "endpoint-not-allowed"),
		denied("POST", "/v1.47/build", 403, "endpoint-not-allowed"),
		denied("GET", "/v1.47/containers/3f2a/attach/ws", 403, "endpoint-not-allowed"),
		// Allowed by a rule but not in the (default) upgrade list.
		denied("POST", "/v1.47/session", 403, "upgrade-not-allowed"),
		// The create constraints.
		allowedBody("bind inside the allowlist", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache:/cache","/srv/ci/cache/go:/go:ro"]`)),
		allowedBody("mount inside the allowlist", "POST", "/v1.47/containers/create", hc(`"Mounts":[{"Type":"bind","Source":"/srv/ci/cache/x/","Target":"/x"}]`)),
		deniedBody("bind beside the allowlist", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache2:/c"]`), "bind-not-allowed"),
		deniedBody("bind out of the allowlist by ..", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache/../../../etc:/c"]`), "bind-not-allowed"),
		deniedBody("bind above the allowlist", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci:/c"]`), "bind-not-allowed"),
		allowedBody("local o=bind inside the allowlist", "POST", "/v1.47/volumes/create", `{"DriverOpts":{"type":"none","o":"bind","device":"/srv/ci/cache/v"}}`),
		deniedBody("local type nfs, not listed", "POST", "/v1.47/volumes/create", `{"DriverOpts":{"type":"nfs","o":"addr=1.2.3.4","device":":/x"}}`, "volume-type-not-allowed"),
		allowedBody("--cap-add NET_ADMIN", "POST", "/v1.47/containers/create", hc(`"CapAdd":["net_admin","CAP_NET_ADMIN"]`)),
		deniedBody("--cap-add SYS_ADMIN", "POST", "/v1.47/containers/create", hc(`"CapAdd":["NET_ADMIN","SYS_ADMIN"]`), "cap-add-not-allowed"),
		deniedBody("--privileged", "POST", "/v1.47/containers/create", hc(`"Privileged":true`), "no-privileged"),
		deniedBody("--userns host", "POST", "/v1.47/containers/create", `{"hostconfig":{"usernsmode":"host"}}`, "host-namespace-not-allowed"),
		deniedBody("exec --privileged", "POST", "/v1.47/containers/3f2a/exec", `{"Privileged":true}`, "no-privileged"),
	})
	d := p.Decide(Request{Method: "POST", Target: "/v1.47/containers/3f2a/kill"})
	if want := "POST /containers/{name}/kill is not allowed by policy file:ci"; d.Reason != want {
		t.Fatalf("got %q, want %q", d.Reason, want)
	}
	d = p.Decide(Request{Method: "POST", Target: "/v1.47/plugins/pull"})
	if want := "POST /plugins/pull is denied by policy file:ci (deny rule at line 23)"; d.Reason != want {
		t.Fatalf("got %q, want %q", d.Reason, want)
	}
}

func TestParseJSON(t *testing.T) {
	data, err := os.ReadFile("testdata/ci.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("file:ci", data)
	if err != nil {
		t.Fatalf("Parse: got %v, want nil", err)
	}
	if p.Name() != "file:ci" {
		t.Fatalf("Name(): got %q, want file:ci", p.Name())
	}
	runCases(t, p, []reqCase{
		upgraded("POST", "/session"),
		upgraded("POST", "/v1.47/containers/x/attach"),
		allowedBody("bind inside the allowlist", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache:/cache"]`)),
		denied("POST", "/grpc", 403, "endpoint-not-allowed"),
	})
}

func TestParseDefaults(t *testing.T) {
	// No create block: every switch off, no bind, no capability.
	p, err := Parse("min", []byte("allow:\n  - {method: POST, path: /containers/create}\n  - method: POST\n    path: /exec/{id}/start\n"))
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, p, []reqCase{
		deniedBody("--privileged", "POST", "/containers/create", hc(`"Privileged":true`), "no-privileged"),
		deniedBody("tmpfs volume", "POST", "/containers/create", hc(`"Mounts":[{"Type":"volume","Target":"/t","VolumeOptions":{"DriverConfig":{"Options":{"type":"tmpfs","device":"tmpfs"}}}}]`), "volume-type-not-allowed"),
		deniedBody("--cap-add", "POST", "/containers/create", hc(`"CapAdd":["CHOWN"]`), "cap-add-not-allowed"),
		upgraded("POST", "/exec/x/start"),
	})
	// An empty upgrade list turns the default off.
	p, err = Parse("min", []byte("allow: [{method: POST, path: \"/exec/{id}/start\"}]\nupgrade: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, p, []reqCase{denied("POST", "/exec/x/start", 403, "upgrade-not-allowed")})
	// Every switch on.
	p, err = Parse("all", []byte(`allow: [{method: "*", path: "/*"}]
create: {privileged: true, devices: true, host_namespaces: true, unconfined: true, sysctls: true,
  volumes_from: true, annotations: true, cap_add: [ALL], binds: ["/"], volume_types: [ext4]}
`))
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, p, []reqCase{
		allowedBody("everything", "POST", "/containers/create", hc(`"Privileged":true,"CapAdd":["SYS_ADMIN"],"Devices":[{"PathOnHost":"/dev/sda"}],
			"PidMode":"host","SecurityOpt":["seccomp=unconfined"],"Sysctls":{"a":"b"},"VolumesFrom":["x"],"Annotations":{"a":"b"},
			"Binds":["/:/host"],"VolumeDriver":"sockrelay","Mounts":[{"Type":"volume","Target":"/d","VolumeOptions":{"DriverConfig":{"Options":{"type":"ext4","device":"/dev/sda1"}}}}]`)),
		denied("POST", "/session", 403, "upgrade-not-allowed"),
	})
}

func TestParseInvalid(t *testing.T) {
	cases := []struct {
		name, data string
		line       int
		why        string
	}{
		{"empty", "", 1, "empty"},
		{"comments only", "# nothing\n", 1, "empty"},
		{"not a mapping", "- a\n- b\n", 1, "must be a mapping"},
		{"unknown key", "allow:\n  - {method: GET, path: /_ping}\nallw: []\n", 3, `unknown key "allw"; known keys are version, allow, deny, create, upgrade`},
		{"duplicate key", "allow: [{method: GET, path: /_ping}]\nallow: [{method: GET, path: /info}]\n", 2, "duplicate key allow"},
		{"no allow", "deny: [{method: GET, path: /_ping}]\n", 1, "no allow list"},
		{"empty allow", "version: 1\nallow: []\n", 2, "allow: the list is empty"},
		{"allow not a list", "allow: {method: GET, path: /_ping}\n", 1, "must be a list"},
		{"unknown rule key", "allow:\n  - method: GET\n    path: /_ping\n    paths: [/info]\n", 4, `unknown key "paths"`},
		{"rule without path", "allow:\n  - {method: GET, path: /_ping}\n  - {method: GET}\n", 3, "needs both method and path"},
		{"unknown method", "allow:\n  - {method: FETCH, path: /_ping}\n", 2, `unknown method "FETCH"`},
		{"empty method list", "allow:\n  - {method: [], path: /_ping}\n", 2, "method list is empty"},
		{"method not a string", "allow:\n  - {method: 1, path: /_ping}\n", 2, "method must be a string"},
		{"relative pattern", "allow:\n  - {method: GET, path: containers/json}\n", 2, `must start with "/"`},
		{"dot-dot pattern", "allow:\n  - {method: GET, path: /containers/../x}\n", 2, `"." or ".."`},
		{"star in the middle", "allow:\n  - {method: GET, path: /containers/*/json}\n", 2, `"*" is allowed only`},
		{"bad placeholder", "allow:\n  - {method: GET, path: \"/containers/{id/json\"}\n", 2, "placeholder"},
		{"version prefix", "allow:\n  - {method: GET, path: /v1.41/_ping}\n", 2, "API version"},
		{"path not a string", "allow:\n  - {method: GET, path: [a]}\n", 2, "path must be a string"},
		{"bad deny pattern", "allow: [{method: GET, path: /_ping}]\ndeny:\n  - {method: GET, path: /a//b}\n", 3, "empty segment"},
		{"version 2", "version: 2\nallow: [{method: GET, path: /_ping}]\n", 1, "version must be 1"},
		{"create unknown key", "allow: [{method: GET, path: /_ping}]\ncreate:\n  privileged: false\n  bind: [/srv]\n", 4, `unknown key "bind"`},
		{"create yes", "allow: [{method: GET, path: /_ping}]\ncreate:\n  privileged: yes\n", 3, "privileged must be true or false"},
		{"create string bool", "allow: [{method: GET, path: /_ping}]\ncreate:\n  devices: \"true\"\n", 3, "devices must be true or false"},
		{"relative bind", "allow: [{method: GET, path: /_ping}]\ncreate:\n  binds:\n    - /srv/ok\n    - srv/cache\n", 5, "clean absolute host paths"},
		{"unclean bind", "allow: [{method: GET, path: /_ping}]\ncreate:\n  binds: [/srv/../etc]\n", 3, "clean absolute host paths"},
		{"bad capability", "allow: [{method: GET, path: /_ping}]\ncreate:\n  cap_add: [\"SYS ADMIN\"]\n", 3, "not a capability name"},
		{"volume type none", "allow: [{method: GET, path: /_ping}]\ncreate:\n  volume_types: [none]\n", 3, "list its host path under binds"},
		{"binds not a list", "allow: [{method: GET, path: /_ping}]\ncreate:\n  binds: /srv\n", 3, "binds must be a list"},
		{"upgrade not hijack", "allow: [{method: GET, path: /_ping}]\nupgrade:\n  - /containers/{id}/attach\n  - /containers/{id}/json\n", 4, "names no endpoint that switches protocols"},
		{"upgrade bad pattern", "allow: [{method: GET, path: /_ping}]\nupgrade: [session]\n", 2, `must start with "/"`},
		{"alias", "allow: &a [{method: GET, path: /_ping}]\ndeny: *a\n", 2, "aliases"},
		{"merge key", "allow:\n  - <<: {method: GET}\n    path: /_ping\n", 2, "merge keys"},
		{"unclosed flow mapping", "allow:\n  - {method: GET, path: /_ping\n", 2, "YAML: did not find expected ',' or '}'"},
		{"tab indentation", "allow:\n\t- {method: GET, path: /_ping}\n", 2, "YAML: found character that cannot start any token"},
		{"unclosed list", "allow: [\n", 2, "YAML: did not find expected node content"},
		{"unquoted braces in a flow mapping", "allow:\n  - {method: GET, path: /containers/{id}/json}\n", 2, "YAML: did not find expected ',' or '}'"},
		{"bad indentation", "allow:\n  - method: GET\n   path: /_ping\n", 2, "YAML: did not find expected '-' indicator"},
		{"two documents", "allow: [{method: GET, path: /_ping}]\n---\nallow: [{method: GET, path: /info}]\n", 2, "more than one YAML document"},
		{"unquoted star", "allow:\n  - {method: *, path: /_ping}\n", 2, "YAML:"},
		{"JSON unknown key", "{\n  \"allow\": [{\"method\": \"GET\", \"path\": \"/_ping\"}],\n  \"upgrades\": []\n}", 3, `unknown key "upgrades"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("t", []byte(tc.data))
			var fe *FileError
			if p != nil || !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: got %v, %v, want a *FileError", p, err)
			}
			if fe.Line != tc.line || !strings.Contains(fe.Reason, tc.why) {
				t.Fatalf("Parse: got %q (line %d), want line %d saying %q", err, fe.Line, tc.line, tc.why)
			}
			if want := "line " + strconv.Itoa(tc.line) + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("Parse: got %q, want it to start with %q", err, want)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	for _, name := range []string{"", "../x", "a/b", ".hidden", "-x", "file:", strings.Repeat("a", 101)} {
		if _, err := Parse(name, []byte("allow: [{method: GET, path: /_ping}]")); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): got %v, want ErrInvalid", name, err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const ok = "allow: [{method: GET, path: /_ping}]\n"
	write("a.yaml", ok)
	write("b.yml", ok)
	write("c.json", `{"allow": [{"method": "GET", "path": "/_ping"}]}`)
	write("both.yaml", ok)
	write("both.json", `{"allow": [{"method": "GET", "path": "/_ping"}]}`)
	write("bad.yaml", "allow:\n  - {method: GET, path: /_ping}\n  - {method: GET, path: nope}\n")
	for _, name := range []string{"a", "b", "c"} {
		p, err := Load(dir, name)
		if err != nil || p.Name() != "file:"+name {
			t.Errorf("Load(%q): got %v, %v, want file:%s", name, p, err, name)
		}
	}
	if p, err := FromSpec("file:a", dir); err != nil || p.Name() != "file:a" {
		t.Errorf("FromSpec(file:a): got %v, %v", p, err)
	}
	if p, err := FromSpec("read-only", dir); err != nil || p.Name() != "read-only" {
		t.Errorf("FromSpec(read-only): got %v, %v", p, err)
	}

	_, err := Load(dir, "bad")
	if want := filepath.Join(dir, "bad.yaml") + ": line 3: allow: path pattern must start with \"/\""; err == nil || err.Error() != want {
		t.Errorf("Load(bad): got %v, want %q", err, want)
	}
	if _, err := Load(dir, "both"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "both.yaml and both.json") {
		t.Errorf("Load(both): got %v, want an ambiguity error", err)
	}
	if _, err := Load(dir, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load(missing): got %v, want ErrNotFound", err)
	}
	if _, err := Load(filepath.Join(dir, "nodir"), "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load(no dir): got %v, want ErrNotFound", err)
	}
}

func TestLoadTraversal(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "policies")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const ok = "allow: [{method: '*', path: '/*'}]\n"
	if err := os.WriteFile(filepath.Join(base, "outside.yaml"), []byte(ok), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../outside", "..", ".", "", "/etc/passwd", "a/../../outside", "..%2foutside", "x\x00", ".outside"} {
		if p, err := Load(dir, name); p != nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("Load(%q): got %v, %v, want ErrInvalid", name, p, err)
		}
	}
	// A symlink out of the directory is refused by os.Root.
	if err := os.Symlink(filepath.Join(base, "outside.yaml"), filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if p, err := Load(dir, "link"); p != nil || err == nil {
		t.Errorf("Load(link): got %v, %v, want an error", p, err)
	}
	// A directory is not a policy file.
	if err := os.Mkdir(filepath.Join(dir, "d.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "d"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(d): got %v, want not a regular file", err)
	}
}

// TestRulesExample keeps the policy file example of docs/policy.md valid.
func TestRulesExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n# /etc/sockrelay/policies/ci.yaml")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/policy.md has no policy file example")
	}
	p, err := Parse("ci", []byte("#"+example))
	if err != nil {
		t.Fatalf("the example of docs/policy.md: %v", err)
	}
	runCases(t, p, []reqCase{
		allowed("GET", "/v1.47/images/library/alpine/json"),
		denied("GET", "/v1.47/images/library/alpine/get", 403, "endpoint-not-allowed"),
		denied("POST", "/v1.47/plugins/pull", 403, "endpoint-denied"),
		upgraded("POST", "/v1.47/containers/x/attach"),
		allowedBody("cache bind", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache/go:/go"]`)),
		deniedBody("other bind", "POST", "/v1.47/containers/create", hc(`"Binds":["/srv/ci/cache2:/go"]`), "bind-not-allowed"),
	})
}
