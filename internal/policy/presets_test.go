package policy

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

// reqCase is one request and the decision expected for it.
type reqCase struct {
	name    string
	method  string
	target  string
	body    string
	header  http.Header
	status  int    // 0: allowed
	rule    string // when denied
	upgrade bool
}

func allowed(method, target string) reqCase {
	return reqCase{name: method + " " + target, method: method, target: target}
}

func allowedBody(name, method, target, body string) reqCase {
	return reqCase{name: name, method: method, target: target, body: body}
}

func denied(method, target string, status int, rule string) reqCase {
	return reqCase{name: method + " " + target, method: method, target: target, status: status, rule: rule}
}

func deniedBody(name, method, target, body, rule string) reqCase {
	return reqCase{name: name, method: method, target: target, body: body, status: 403, rule: rule}
}

func upgraded(method, target string) reqCase {
	return reqCase{name: method + " " + target, method: method, target: target, upgrade: true}
}

// runCases drives p as the proxy does: BodyNeeded first, then Decide with
// the body only when it was needed. A case with a body insists that the
// policy asks for it.
func runCases(t *testing.T, p *Policy, cases []reqCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Request{Method: tc.method, Target: tc.target, Header: tc.header, Daemon: testDaemon}
			if r.Header == nil {
				r.Header = http.Header{}
			}
			need := p.BodyNeeded(tc.method, tc.target)
			if need {
				r.Body = []byte(tc.body)
			} else if tc.body != "" {
				t.Fatalf("BodyNeeded(%q, %q): got false, want true (the case has a body)", tc.method, tc.target)
			}
			d := p.Decide(r)
			if tc.status == 0 {
				if !d.Allow || d.Status != 0 || d.Rule != "" {
					t.Fatalf("Decide: got %+v, want allowed", d)
				}
				if d.Path == "" {
					t.Fatalf("Decide: allowed with an empty Path")
				}
			} else {
				if d.Allow || d.Status != tc.status || d.Rule != tc.rule {
					t.Fatalf("Decide: got allow=%v status=%d rule=%q (%s), want status=%d rule=%q",
						d.Allow, d.Status, d.Rule, d.Reason, tc.status, tc.rule)
				}
				if d.Reason == "" {
					t.Fatalf("Decide: denied without a reason")
				}
			}
			if d.Upgrade != tc.upgrade {
				t.Fatalf("Decide: got Upgrade %v, want %v", d.Upgrade, tc.upgrade)
			}
		})
	}
}

func preset(t testing.TB, name string) *Policy {
	t.Helper()
	p, err := Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != name {
		t.Fatalf("Name(): got %q, want %q", p.Name(), name)
	}
	return p
}

func dockerRunBody(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/docker-run-alpine.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const execBody = `{"User":"","Privileged":false,"Tty":true,"ConsoleSize":[50,200],"AttachStdin":true,"AttachStderr":true,"AttachStdout":true,"DetachKeys":"","Env":null,"WorkingDir":"","Cmd":["sh"]}`

func TestPresetUnknown(t *testing.T) {
	_, err := Preset("readonly")
	if err == nil || !strings.Contains(err.Error(), "read-only, no-escalation, full") {
		t.Fatalf("Preset(readonly): got %v, want an error listing the presets", err)
	}
}

func TestReadOnly(t *testing.T) {
	p := preset(t, "read-only")
	runCases(t, p, []reqCase{
		allowed("HEAD", "/_ping"),
		allowed("GET", "/_ping"),
		allowed("GET", "/v1.41/version"),
		allowed("GET", "/v1.41/info"),
		allowed("GET", "/v1.41/events?filters=%7B%7D"),
		allowed("GET", "/v1.41/containers/json?all=1"),
		allowed("GET", "/v1.41/containers/3f2a/json"),
		allowed("GET", "/v1.41/containers/3f2a/logs?follow=1&stdout=1"),
		allowed("GET", "/v1.41/containers/3f2a/stats?stream=0"),
		allowed("GET", "/v1.41/containers/3f2a/top"),
		allowed("GET", "/v1.41/containers/3f2a/changes"),
		allowed("GET", "/v1.41/exec/9c1d/json"),
		allowed("GET", "/v1.41/images/json"),
		allowed("GET", "/v1.41/images/library/alpine:3.20/json"),
		allowed("GET", "/v1.41/images/alpine/history"),
		allowed("GET", "/v1.41/networks"),
		allowed("GET", "/v1.41/networks/bridge"),
		allowed("GET", "/v1.41/volumes"),
		allowed("GET", "/v1.41/volumes/data"),
		allowed("GET", "/v1.41/system/df"),
		allowed("GET", "/v1.41/services/web/logs"),
		allowed("GET", "/v1.41/plugins"),
		allowed("HEAD", "/v1.41/containers/json"),
		denied("POST", "/v1.41/containers/create", 403, "read-only"),
		denied("POST", "/v1.41/containers/3f2a/start", 403, "read-only"),
		denied("DELETE", "/v1.41/containers/3f2a", 403, "read-only"),
		denied("PUT", "/v1.41/containers/3f2a/archive?path=/", 403, "read-only"),
		denied("POST", "/v1.41/build", 403, "read-only"),
		denied("POST", "/v1.41/images/load", 403, "read-only"),
		denied("GET", "/v1.41/containers/3f2a/export", 403, "read-only"),
		denied("GET", "/v1.41/containers/3f2a/archive?path=/etc", 403, "read-only"),
		denied("HEAD", "/v1.41/containers/3f2a/archive?path=/etc", 403, "read-only"),
		denied("POST", "/v1.41/containers/3f2a/attach?stream=1&stdout=1", 403, "read-only"),
		denied("GET", "/v1.41/containers/3f2a/attach/ws", 403, "read-only"),
		denied("GET", "/v1.41/images/get?names=alpine", 403, "read-only"),
		denied("GET", "/v1.41/images/alpine/get", 403, "read-only"),
		denied("GET", "/v1.41/images/library/alpine/get", 403, "read-only"),
		denied("GET", "/v1.41/swarm", 403, "read-only"),
		denied("GET", "/v1.41/swarm/unlockkey", 403, "read-only"),
		denied("GET", "/v1.41/containers/3f2a/checkpoints", 403, "read-only"),
		denied("OPTIONS", "/v1.41/_ping", 403, "read-only"),
		denied("POST", "/v1.41/session", 403, "read-only"),
		denied("POST", "/v1.41/exec/9c1d/start", 403, "read-only"),
		denied("GET", "/v1.41/containers/../containers/json", 400, "path-not-canonical"),
		denied("GET", "/v1.41/containers/3f2a/%65xport", 400, "path-not-canonical"),
		denied("G(T", "/_ping", 400, "bad-method"),
	})
}

func TestReadOnlyReason(t *testing.T) {
	p := preset(t, "read-only")
	d := p.Decide(Request{Method: "POST", Target: "/v1.47/containers/3f2a/start"})
	want := "POST /containers/{name}/start is not allowed by policy read-only (only GET and HEAD requests that read state are)"
	if d.Reason != want || d.Path != "/containers/3f2a/start" {
		t.Fatalf("got %q, %q, want %q, %q", d.Reason, d.Path, want, "/containers/3f2a/start")
	}
}

func TestFull(t *testing.T) {
	p := preset(t, "full")
	runCases(t, p, []reqCase{
		allowed("GET", "/v1.41/containers/json"),
		allowed("POST", "/v1.41/containers/create"), // bodies are not inspected
		allowed("POST", "/v1.41/plugins/pull?remote=x"),
		allowed("GET", "/v1.41/containers/3f2a/export"),
		allowed("POST", "/v1.41/build?networkmode=host"),
		upgraded("POST", "/v1.41/containers/3f2a/attach?stream=1"),
		upgraded("GET", "/v1.41/containers/3f2a/attach/ws"),
		upgraded("POST", "/v1.41/exec/9c1d/start"),
		upgraded("POST", "/v1.41/session"),
		upgraded("POST", "/grpc"),
		allowed("GET", "/v1.41/exec/9c1d/start"), // no such route: not a hijack
		denied("GET", "/v1.41//containers/json", 400, "path-not-canonical"),
		denied("GET", "/a%2Fb", 400, "path-not-canonical"),
	})
	if p.BodyNeeded("POST", "/v1.41/containers/create") {
		t.Fatalf("full: BodyNeeded(container create): got true, want false")
	}
}

func TestNoEscalationEndpoints(t *testing.T) {
	p := preset(t, "no-escalation")
	run := dockerRunBody(t)
	runCases(t, p, []reqCase{
		allowed("HEAD", "/_ping"),
		allowed("GET", "/v1.41/containers/json"),
		allowedBody("docker run --rm alpine true", "POST", "/v1.41/containers/create", run),
		allowedBody("create with an empty body", "POST", "/v1.41/containers/create", ""),
		allowed("POST", "/v1.41/containers/3f2a/wait?condition=removed"),
		upgraded("POST", "/v1.41/containers/3f2a/attach?stderr=1&stdout=1&stream=1"),
		upgraded("GET", "/v1.41/containers/3f2a/attach/ws"),
		allowed("POST", "/v1.41/containers/3f2a/start"),
		allowedBody("docker exec -it", "POST", "/v1.41/containers/3f2a/exec", execBody),
		upgraded("POST", "/v1.41/exec/9c1d/start"),
		allowed("POST", "/v1.41/exec/9c1d/resize?h=50&w=200"),
		allowed("DELETE", "/v1.41/containers/3f2a?force=1"),
		allowed("POST", "/v1.41/images/create?fromImage=alpine&tag=latest"),
		allowed("POST", "/v1.41/images/load"),
		allowed("POST", "/v1.41/build?t=app"),
		allowed("PUT", "/v1.41/containers/3f2a/archive?path=/tmp"),
		allowed("GET", "/v1.41/containers/3f2a/export"),
		allowed("POST", "/v1.41/networks/create"),
		allowed("GET", "/v1.41/plugins/privileges?remote=vieux/sshfs"),
		allowed("POST", "/v1.41/swarm/init"),
		allowed("OPTIONS", "/v1.41/containers/json"),
		denied("POST", "/v1.41/plugins/pull?remote=vieux/sshfs", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/create?name=x", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/vieux/sshfs:latest/enable", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/vieux/sshfs/set", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/sshfs/upgrade?remote=x", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/swarm/join", 403, "swarm-not-allowed"),
		denied("GET", "/v1.41/swarm", 403, "swarm-not-allowed"),
		denied("GET", "/v1.41/swarm/unlockkey", 403, "swarm-not-allowed"),
		upgraded("POST", "/session"),
		upgraded("POST", "/v1.41/grpc"),
		denied("POST", "/v1.41/build?networkmode=host", 403, "host-namespace-not-allowed"),
		denied("POST", "/v1.41/build?networkmode=HOST&t=x", 403, "host-namespace-not-allowed"),
		denied("POST", "/v1.41/build?securityopt=seccomp%3Dunconfined", 403, "unconfined-not-allowed"),
		denied("POST", "/v1.41/build?a=1;b=2", 400, "bad-query"),
		{name: "build with a form body", method: "POST", target: "/v1.41/build",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, status: 400, rule: "form-body-not-allowed"},
		denied("POST", "/v1.41/containers/3f2a/start?checkpoint=c1&checkpoint-dir=/etc", 403, "bind-not-allowed"),
		denied("GET", "/v1.41/containers/3f2a/checkpoints?dir=/root", 403, "bind-not-allowed"),
		denied("DELETE", "/v1.41/containers/3f2a/checkpoints/c1?dir=/root", 403, "bind-not-allowed"),
		allowed("GET", "/v1.41/containers/3f2a/checkpoints"),
		denied("POST", "/v1.41/containers/%63reate", 400, "path-not-canonical"),
		denied("POST", "/v1.41/containers//create", 400, "path-not-canonical"),
		denied("POST", "/v1.41/containers/create/", 400, "path-not-canonical"),
		denied("POST", "/v1.41/containers/./create", 400, "path-not-canonical"),
	})
}

// TestNoEscalationPlugins: disabling or removing any plugin is refused.
// Disabling sockrelay takes every volume down; disabling an authorization
// plugin lifts the host's authorization. A plugin is named by name, alias,
// ID or ID prefix, so none is singled out.
func TestNoEscalationPlugins(t *testing.T) {
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		denied("POST", "/v1.41/plugins/vieux/sshfs/disable", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/3f2a/disable?force=1", 403, "plugin-not-allowed"),
		denied("POST", "/v1.41/plugins/sockrelay:latest/disable", 403, "plugin-not-allowed"),
		denied("DELETE", "/v1.41/plugins/vieux/sshfs", 403, "plugin-not-allowed"),
		denied("DELETE", "/v1.41/plugins/3f2a?force=1", 403, "plugin-not-allowed"),
		denied("DELETE", "/plugins/authz-broker", 403, "plugin-not-allowed"),
		allowed("GET", "/v1.41/plugins"),
		allowed("GET", "/v1.41/plugins/vieux/sshfs/json"),
		allowed("GET", "/v1.41/plugins/privileges?remote=vieux/sshfs"),
		allowed("POST", "/v1.41/plugins/vieux/sshfs/push"),
	})
}

// TestDebug: dockerd always serves /debug/vars and /debug/pprof/*, which
// show the daemon's memory, goroutines and command line.
func TestDebug(t *testing.T) {
	ne := preset(t, "no-escalation")
	runCases(t, ne, []reqCase{
		denied("GET", "/debug/vars", 403, "debug-not-allowed"),
		denied("GET", "/debug/pprof/heap", 403, "debug-not-allowed"),
		denied("GET", "/v1.41/debug/pprof/goroutine?debug=2", 403, "debug-not-allowed"),
		denied("GET", "/debug/pprof/cmdline", 403, "debug-not-allowed"),
		denied("GET", "/debug/pprof/profile?seconds=30", 403, "debug-not-allowed"),
		denied("POST", "/debug/pprof/symbol", 403, "debug-not-allowed"),
		denied("HEAD", "/debug", 403, "debug-not-allowed"),
		denied("GET", "/debug/pprof/", 400, "path-not-canonical"),
		allowed("GET", "/v1.41/containers/debug/json"),
	})
	ro := preset(t, "read-only")
	runCases(t, ro, []reqCase{
		denied("GET", "/debug/vars", 403, "read-only"),
		denied("GET", "/debug/pprof/heap", 403, "read-only"),
		denied("GET", "/v1.41/debug/pprof/goroutine", 403, "read-only"),
	})
}

// A request that asks to switch protocols where no policy allows it is
// refused by the policy itself, whatever the spelling of the ask.
func TestUpgradeAskedElsewhere(t *testing.T) {
	for _, p := range []*Policy{readOnly, noEscalation, full} {
		for _, h := range []http.Header{
			{"Upgrade": {"h2c"}},
			{"Connection": {"keep-alive, Upgrade"}},
			{"upgrade": {"tcp"}},
		} {
			d := p.Decide(Request{Method: "GET", Target: "/v1.41/_ping", Header: h, Daemon: testDaemon})
			if d.Allow || d.Rule != RuleUpgrade {
				t.Errorf("%s, %v: got %+v, want %s", p.Name(), h, d, RuleUpgrade)
			}
		}
	}
	if d := full.Decide(Request{Method: "POST", Target: "/session", Header: http.Header{"Upgrade": {"h2c"}}}); !d.Allow || !d.Upgrade {
		t.Errorf("full, /session: got %+v, want an allowed upgrade", d)
	}
}

// When a policy refuses BuildKit's API, buildx pulls moby/buildkit to
// start a BuildKit of its own: that pull is refused with a message that
// says what to do. A policy that allows BuildKit, and other pulls, are
// left alone. A policy file allows only the attach endpoints to switch
// protocols unless it says otherwise.
func TestBuildKitFallbackPull(t *testing.T) {
	noBuildKit, err := Parse("nobk", []byte("allow: [{method: POST, path: /images/create}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{
		"/v1.51/images/create?fromImage=moby%2Fbuildkit&tag=buildx-stable-1",
		"/images/create?fromImage=docker.io/moby/buildkit:buildx-stable-1",
		"/images/create?fromImage=moby/buildkit",
	} {
		d := noBuildKit.Decide(Request{Method: "POST", Target: target, Header: http.Header{}, Daemon: testDaemon})
		if d.Allow || d.Rule != RuleBuildKit || !strings.Contains(d.Reason, "DOCKER_BUILDKIT=0") {
			t.Errorf("file:nobk, %s: got %+v, want %s saying what to do", target, d, RuleBuildKit)
		}
		if d := noEscalation.Decide(Request{Method: "POST", Target: target, Header: http.Header{}, Daemon: testDaemon}); !d.Allow {
			t.Errorf("no-escalation, %s: got %+v, want allowed (its BuildKit API is followed)", target, d)
		}
		if d := full.Decide(Request{Method: "POST", Target: target, Header: http.Header{}}); !d.Allow {
			t.Errorf("full, %s: got %+v, want allowed", target, d)
		}
	}
	for _, target := range []string{"/images/create?fromImage=alpine&tag=3", "/images/create?fromImage=moby/buildkit-other"} {
		if d := noEscalation.Decide(Request{Method: "POST", Target: target, Header: http.Header{}, Daemon: testDaemon}); !d.Allow {
			t.Errorf("no-escalation, %s: got %+v, want allowed", target, d)
		}
	}
}
