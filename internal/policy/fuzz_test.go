package policy

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// fuzzPolicies are the presets and a custom policy with every kind of rule.
func fuzzPolicies(t testing.TB) []*Policy {
	ps := []*Policy{preset(t, "read-only"), preset(t, "no-escalation"), preset(t, "full")}
	data, err := os.ReadFile("testdata/ci.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("ci", data)
	if err != nil {
		t.Fatal(err)
	}
	return append(ps, p)
}

// checkReason asserts a reason is one printable line.
func checkReason(t *testing.T, d Decision) {
	t.Helper()
	if !utf8.ValidString(d.Reason) {
		t.Fatalf("reason %q is not UTF-8", d.Reason)
	}
	for _, r := range d.Reason {
		if !unicode.IsPrint(r) {
			t.Fatalf("reason %q has an unprintable character", d.Reason)
		}
	}
}

func FuzzDecide(f *testing.F) {
	run, err := os.ReadFile("testdata/docker-run-alpine.json")
	if err != nil {
		f.Fatal(err)
	}
	seeds := []struct{ method, target, body string }{
		{"POST", "/v1.41/containers/create", string(run)},
		{"POST", "/v1.41/containers/create", `{"hostconfig":{"usernsmode":"host"}}`},
		{"POST", "/v1.41/containers/create", `{"HostConfig":{"Privileged":false},"hostconfig":{"privileged":true}}`},
		{"POST", "/v1.41/containers/create", `{"HostConfig":{"Binds":["/:/host"],"Mounts":[{"Type":"bind","Source":"/"}]}}`},
		{"POST", "/containers/x/exec", `{"Privileged":true}`},
		{"POST", "/services/create", `{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"volume","VolumeOptions":{"DriverConfig":{"Options":{"o":"bind"}}}}]}}}`},
		{"POST", "/volumes/create", `{"DriverOpts":{"type":"none","o":"bind","device":"/"}}`},
		{"POST", "/containers/x/start?checkpoint-dir=/x", `{"Binds":["/:/h"]}`},
		{"POST", "/build?networkmode=host&securityopt=seccomp=unconfined&cgroupparent=/", ""},
		{"POST", "/volumes/create", `{"Driver":"3f2a"}`},
		{"POST", "/networks/host/connect", `{"EndpointConfig":{"DriverOpts":{"com.docker.network.endpoint.sysctls":"x"}}}`},
		{"POST", "/swarm/init", `{"Spec":{"CAConfig":{"SigningCAKey":"k"},"TaskDefaults":{"LogDriver":{"Name":"syslog"}}}}`},
		{"POST", "/containers/create", `{"HostConfig":{"LogConfig":{"Type":"syslog"},"CgroupParent":"/","DeviceRequests":[{"Driver":"cdi"}]}}`},
		{"GET", "/v1.41/containers/x/export", ""},
		{"POST", "/v1.41/exec/x/start", ""},
		{"POST", "/session", ""},
		{"get", "/v1.41/v1.41/_ping", ""},
		{"POST", "/a%2Fb", "x"},
		{"", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, []byte(s.body))
	}
	policies := fuzzPolicies(f)
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		for _, p := range policies {
			need := p.BodyNeeded(method, target)
			r := Request{Method: method, Target: target, Header: http.Header{"Content-Type": {"application/json"}}, Daemon: testDaemon}
			if need {
				r.Body = body
			}
			d := p.Decide(r)
			checkReason(t, d)
			if d.Allow {
				if d.Status != 0 || d.Rule != "" || d.Reason != "" {
					t.Fatalf("%s: %s %q: allowed with %+v", p.Name(), method, target, d)
				}
				checkCanonical(t, target, d.Path)
				continue
			}
			if d.Upgrade {
				t.Fatalf("%s: %s %q: denied with Upgrade", p.Name(), method, target)
			}
			switch d.Status {
			case 400, 403, 413, StatusLookup:
			default:
				t.Fatalf("%s: %s %q: got status %d", p.Name(), method, target, d.Status)
			}
			if d.Rule == "" || d.Reason == "" {
				t.Fatalf("%s: %s %q: denied without rule or reason: %+v", p.Name(), method, target, d)
			}
			if d.Rule == RuleNotCanonical || d.Rule == RuleBadMethod {
				if d.Path != "" {
					t.Fatalf("%s: %s %q: refused path reported as %q", p.Name(), method, target, d.Path)
				}
			} else {
				checkCanonical(t, target, d.Path)
			}
			if p.Name() == "full" && d.Status == 403 {
				t.Fatalf("full: %s %q: denied: %+v", method, target, d)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/ci.yaml", "testdata/ci.json"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"allow: [{method: GET, path: /_ping}]",
		"allow:\n  - {method: [GET, HEAD], path: \"/containers/{id}/json\"}\ndeny:\n  - {method: \"*\", path: \"/plugins/*\"}\n",
		"allow: [{method: '*', path: '/*'}]\ncreate: {binds: [/srv], cap_add: [NET_ADMIN], volume_types: [tmpfs], privileged: false}\nupgrade: [/session]\n",
		"allow: &a [{method: GET, path: /_ping}]\ndeny: *a\n",
		"version: 1\nallow: []\n",
		"{\"allow\": [{\"method\": \"GET\", \"path\": \"/_ping\"}]}",
		"",
		"---\n---\n",
	} {
		f.Add([]byte(s))
	}
	requests := []Request{
		{Method: "GET", Target: "/v1.41/_ping"},
		{Method: "POST", Target: "/containers/create", Body: []byte(`{"HostConfig":{"Binds":["/srv/x:/x"],"CapAdd":["NET_ADMIN"]}}`)},
		{Method: "POST", Target: "/session"},
		{Method: "DELETE", Target: "/plugins/a/b"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz", data)
		if err != nil {
			var fe *FileError
			if p != nil || !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Reason == "" {
				t.Fatalf("Parse: got %v, %v, want nil and a *FileError", p, err)
			}
			// YAML breaks lines at \n, \r, NEL, LS and PS.
			breaks := 0
			for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
				breaks += strings.Count(string(data), br)
			}
			if fe.Line < 0 || fe.Line > breaks+2 {
				t.Fatalf("Parse: line %d outside a file of %d line breaks: %v", fe.Line, breaks, err)
			}
			return
		}
		if p.Name() != "file:fuzz" || len(p.allow) == 0 {
			t.Fatalf("Parse: got name %q and %d allow rules", p.Name(), len(p.allow))
		}
		for _, r := range requests {
			p.BodyNeeded(r.Method, r.Target)
			d := p.Decide(r)
			checkReason(t, d)
			if d.Allow && d.Path == "" {
				t.Fatalf("Decide(%s %s): allowed without a path", r.Method, r.Target)
			}
		}
	})
}
