package policy

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
)

func learnPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := FromSpec("learn:ci", "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "learn:ci" || !p.Learning() {
		t.Fatalf("got %q (learning %v), want learn:ci", p.Name(), p.Learning())
	}
	return p
}

// TestLearnUses: what a request uses is what a policy file must allow
// for it, found by the checks themselves.
func TestLearnUses(t *testing.T) {
	p := learnPolicy(t)
	const vol = "/volumes/create"
	cases := []struct {
		name, method, target, body string
		want                       []string
	}{
		{"docker run alpine", "POST", create, dockerRunBody(t), nil},
		{"plain GET", "GET", "/v1.41/containers/json", "", nil},
		{"--privileged", "POST", create, hc(`"Privileged":true`), []string{"privileged"}},
		{"--cap-add, any case", "POST", create, hc(`"CapAdd":["net_admin","CAP_SYS_PTRACE"]`), []string{"cap_add=CAP_NET_ADMIN", "cap_add=CAP_SYS_PTRACE"}},
		{"bind, cleaned", "POST", create, hc(`"Binds":["/srv/ci/../cache:/c","named:/n","/anon"]`), []string{"binds=/srv/cache"}},
		{"--mount type=bind", "POST", create, hc(`"Mounts":[{"Type":"bind","Source":"/srv/m","Target":"/m"}]`), []string{"binds=/srv/m"}},
		{"all the switches", "POST", create, hc(`"Privileged":true,"NetworkMode":"host","Devices":[{"PathOnHost":"/dev/sda"}],"Sysctls":{"a":"1"},` +
			`"Annotations":{"a":"b"},"VolumesFrom":["x"],"CgroupParent":"/p","SecurityOpt":["seccomp=unconfined"]`),
			[]string{"annotations", "cgroup_parent", "devices", "host_namespaces", "privileged", "sysctls", "unconfined", "volumes_from"}},
		{"log driver", "POST", create, hc(`"LogConfig":{"Type":"syslog"}`), []string{"log_drivers=syslog"}},
		{"volume plugin", "POST", vol, `{"Name":"v","Driver":"vieux/sshfs"}`, []string{"volume_drivers=vieux/sshfs"}},
		{"local nfs", "POST", vol, `{"Name":"v","DriverOpts":{"type":"NFS","device":":/x","o":"addr=1.2.3.4"}}`, []string{"volume_types=nfs"}},
		{"local o=bind", "POST", vol, `{"Name":"v","DriverOpts":{"type":"none","device":"/srv/v","o":"bind"}}`, []string{"binds=/srv/v"}},
		{"volume plugin by ID prefix", "POST", vol, `{"Name":"v","Driver":"4f9e2c"}`, []string{"refused=volume-driver-not-allowed"}},
		{"unknown mount type", "POST", create, hc(`"Mounts":[{"Type":"weird","Target":"/m"}]`), []string{"refused=mount-type-not-allowed"}},
		{"not JSON", "POST", create, `{"HostConfig":`, []string{"refused=bad-body"}},
		{"exec in a privileged container", "POST", "/containers/priv/exec", execBody, []string{"privileged"}},
		{"exec in a container with a bind of /", "POST", "/containers/hostbind/exec", execBody, []string{"binds=/"}},
		{"exec in a container with a relay volume", "POST", "/containers/withsock/exec", execBody, []string{"volume_drivers=sockrelay:latest"}},
		{"an existing volume of another driver", "POST", create, hc(`"Binds":["relayvol:/r"]`), []string{"volume_drivers=sockrelay:latest"}},
		{"exec into a container the daemon cannot find", "POST", "/containers/down/exec", execBody, []string{"refused=lookup-failed"}},
		{"build, network host and a cgroup parent", "POST", "/build?networkmode=host&cgroupparent=x", "", []string{"cgroup_parent", "host_namespaces"}},
		{"service with caps", "POST", "/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"a","CapabilityAdd":["NET_RAW"]}}}`, []string{"cap_add=CAP_NET_RAW"}},
		{"swarm CA", "POST", "/swarm/init", `{"Spec":{"CAConfig":{"SigningCACert":"x","SigningCAKey":"y"}}}`, []string{"swarm_ca"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Request{Method: tc.method, Target: tc.target, Daemon: testDaemon, Header: http.Header{}}
			if tc.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			if p.BodyNeeded(tc.method, tc.target) {
				r.Body = []byte(tc.body)
			} else if tc.body != "" {
				t.Fatalf("BodyNeeded(%s %s): got false, want true", tc.method, tc.target)
			}
			d := p.Decide(r)
			if !d.Allow {
				t.Fatalf("Decide: got %s: %s, want allowed (learning serves as full)", d.Rule, d.Reason)
			}
			if !slices.Equal(d.Uses, tc.want) {
				t.Errorf("Uses: got %q, want %q", d.Uses, tc.want)
			}
		})
	}
}

// TestLearnServesAsFull: a learning policy refuses only what full does.
func TestLearnServesAsFull(t *testing.T) {
	runCases(t, learnPolicy(t), []reqCase{
		allowedB("POST", create, hc(`"Privileged":true,"Binds":["/:/host"]`)),
		allowed("POST", "/plugins/pull"),
		allowed("GET", "/debug/pprof/heap"),
		upgraded("POST", "/containers/x/attach"),
		upgraded("POST", "/exec/9c1d/start"),
		upgraded("POST", "/grpc"),
		denied("GET", "/containers/../json", 400, RuleNotCanonical),
	})
	p := learnPolicy(t)
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	if d := p.Decide(Request{Method: "POST", Target: create, Header: form, Body: []byte("a=b")}); !d.Allow {
		t.Errorf("a form body under learn: got %s, want allowed as under full", d.Rule)
	}
	up := http.Header{"Upgrade": {"tcp"}, "Connection": {"Upgrade"}}
	if d := p.Decide(Request{Method: "GET", Target: "/containers/json", Header: up}); d.Allow || d.Rule != RuleUpgrade {
		t.Errorf("an upgrade elsewhere under learn: got allow=%v %s, want %s as under full", d.Allow, d.Rule, RuleUpgrade)
	}
	if d := p.Decide(Request{Method: "POST", Target: "/grpc", Header: http.Header{}}); d.Calls {
		t.Error("POST /grpc under learn: the calls are followed; want spliced as under full")
	}
}

// learnRun is what the property test learns: the requests of a session.
type learnReq struct {
	method, target, body string
}

func decideLearnReq(p *Policy, q learnReq) Decision {
	r := Request{Method: q.method, Target: q.target, Daemon: testDaemon, Header: http.Header{}}
	if p.BodyNeeded(q.method, q.target) {
		r.Body = []byte(q.body)
	}
	return p.Decide(r)
}

// learnFile learns reqs and parses the file it writes.
func learnFile(t *testing.T, reqs []learnReq) (*Policy, []byte) {
	t.Helper()
	lp := learnPolicy(t)
	l := NewLearned()
	for _, q := range reqs {
		d := decideLearnReq(lp, q)
		if !d.Allow {
			t.Fatalf("learning %s %s: got %s, want allowed", q.method, q.target, d.Rule)
		}
		if !l.Add(q.method, d.Path, d.Uses) {
			t.Fatalf("learning %s %s: not learned", q.method, q.target)
		}
	}
	file, err := l.File("ci")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("ci", file)
	if err != nil {
		t.Fatalf("the learned file does not parse: %v\n%s", err, file)
	}
	return p, file
}

// TestLearnedFile: the file parses, allows every request learned, says
// what each rule is for, and denies what was never seen.
func TestLearnedFile(t *testing.T) {
	run := []learnReq{
		{"HEAD", "/_ping", ""},
		{"GET", "/_ping", ""},
		{"GET", "/v1.41/containers/json?all=1", ""},
		{"POST", "/v1.41/containers/create?name=web", hc(`"Binds":["/srv/www:/usr/share/nginx/html:ro"],"CapAdd":["NET_BIND_SERVICE"]`)},
		{"POST", "/v1.41/containers/web/start", ""},
		{"POST", "/v1.41/containers/x/attach?stream=1", ""},
		{"POST", "/v1.41/containers/plain/exec", execBody},
		{"POST", "/v1.41/exec/9c1d/start", `{}`},
		{"GET", "/v1.41/containers/web/logs?stdout=1", ""},
		{"DELETE", "/v1.41/containers/web?force=1", ""},
		{"GET", "/v1.41/images/library/alpine:3/json", ""},
		{"GET", "/unknown/literal", ""},
	}
	p, file := learnFile(t, run)
	for _, q := range run {
		if d := decideLearnReq(p, q); !d.Allow {
			t.Errorf("%s %s under the learned file: got %s: %s, want allowed\n%s", q.method, q.target, d.Rule, d.Reason, file)
		}
	}
	for _, want := range []string{
		`- {method: [GET, HEAD], path: "/_ping"}  # GET 1 request, HEAD 1 request`,
		`- {method: GET, path: "/images/{name}/json"}`,
		`- {method: GET, path: "/unknown/literal"}`,
		`- "/srv/www"  # 1 request: POST /containers/create`,
		`- "CAP_NET_BIND_SERVICE"  # 1 request: POST /containers/create`,
		`privileged: false`,
		`- "/containers/{name}/attach"  # 1 request`,
		`- "/exec/{name}/start"  # 1 request`,
	} {
		if !strings.Contains(string(file), want) {
			t.Errorf("the learned file lacks %q:\n%s", want, file)
		}
	}
	for _, q := range []struct {
		learnReq
		rule string
	}{
		{learnReq{"POST", create, hc(`"Privileged":true`)}, RulePrivileged},
		{learnReq{"POST", create, hc(`"Binds":["/etc:/etc"]`)}, RuleBind},
		{learnReq{"POST", create, hc(`"Binds":["/srv/www2:/x"]`)}, RuleBind},
		{learnReq{"POST", create, hc(`"CapAdd":["SYS_ADMIN"]`)}, RuleCapAdd},
		{learnReq{"POST", create, hc(`"NetworkMode":"host"`)}, RuleHostNamespace},
		{learnReq{"DELETE", "/images/alpine", ""}, RuleNotAllowed},
		{learnReq{"POST", "/containers/web/stop", ""}, RuleNotAllowed},
		{learnReq{"GET", "/containers/x/attach/ws", ""}, RuleNotAllowed},
		{learnReq{"POST", "/containers/priv/exec", execBody}, RulePrivileged},
	} {
		if d := decideLearnReq(p, q.learnReq); d.Allow || d.Rule != q.rule {
			t.Errorf("%s %s %s under the learned file: got allow=%v rule %q, want %s", q.method, q.target, q.body, d.Allow, d.Rule, q.rule)
		}
	}
}

// TestLearnedRefusedNoted: what no file can allow is said in comments,
// and the file still parses.
func TestLearnedRefusedNoted(t *testing.T) {
	_, file := learnFile(t, []learnReq{
		{"POST", create, hc(`"Mounts":[{"Type":"weird","Target":"/m"}]`)},
	})
	if !strings.Contains(string(file), "#   POST /containers/create: mount-type-not-allowed, 1 request") {
		t.Errorf("the learned file does not note the refusal:\n%s", file)
	}
}

// TestLearnedRecords: records read back from a log are checked as a
// policy file's entries are; what a file could not hold is left out.
func TestLearnedRecords(t *testing.T) {
	cases := []struct {
		method, path string
		uses         []string
		want         bool
	}{
		{"GET", "/containers/json", nil, true},
		{"get", "/containers/json", nil, true},
		{"POST", "/containers/create", []string{"privileged", "binds=/srv/x", "cap_add=CAP_NET_ADMIN", "refused=bad-body"}, true},
		{"BREW", "/coffee", nil, false},
		{"GET\n", "/x", nil, false},
		{"GET", "/containers/../json", nil, false},
		{"GET", "/v1.41/containers/json", nil, false}, // a logged path has no version
		{"GET", "/containers/json?all=1", nil, false},
		{"GET", "/a/{b}", nil, false},
		{"GET", "/a/*", nil, false},
		{"GET", "/a/*/b", nil, false},
		{"POST", "/containers/create", []string{"binds=relative"}, false},
		{"POST", "/containers/create", []string{"binds=/a/../b"}, false},
		{"POST", "/containers/create", []string{"cap_add=net_admin"}, false},
		{"POST", "/containers/create", []string{"volume_drivers=cafe"}, false},
		{"POST", "/containers/create", []string{"volume_drivers=local"}, false},
		{"POST", "/containers/create", []string{"log_drivers=json-file"}, false},
		{"POST", "/containers/create", []string{"volume_types=bind"}, false},
		{"POST", "/containers/create", []string{"root"}, false},
		{"POST", "/containers/create", []string{"refused=Bad Rule"}, false},
	}
	for _, tc := range cases {
		l := NewLearned()
		if got := l.Add(tc.method, tc.path, tc.uses); got != tc.want {
			t.Errorf("Add(%q, %q, %q): got %v, want %v", tc.method, tc.path, tc.uses, got, tc.want)
		}
		if !tc.want {
			if _, err := l.File("x"); err == nil {
				t.Errorf("Add(%q, %q, %q): File without a rule: got no error", tc.method, tc.path, tc.uses)
			}
			continue
		}
		file, err := l.File("x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse("x", file); err != nil {
			t.Errorf("Add(%q, %q, %q): the file does not parse: %v\n%s", tc.method, tc.path, tc.uses, err, file)
		}
	}
}

// feature is one thing a container may ask for, and the switch or entry
// a policy file must have for it.
type feature struct {
	use string
	set func(*container.HostConfig)
}

var features = []feature{
	{"privileged", func(h *container.HostConfig) { h.Privileged = true }},
	{"cap_add=CAP_NET_ADMIN", func(h *container.HostConfig) { h.CapAdd = append(h.CapAdd, "NET_ADMIN") }},
	{"cap_add=CAP_SYS_PTRACE", func(h *container.HostConfig) { h.CapAdd = append(h.CapAdd, "sys_ptrace") }},
	{"binds=/srv/a", func(h *container.HostConfig) { h.Binds = append(h.Binds, "/srv/a:/a") }},
	{"binds=/srv/b", func(h *container.HostConfig) {
		h.Mounts = append(h.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/srv/b", Target: "/b"})
	}},
	{"devices", func(h *container.HostConfig) {
		h.Devices = append(h.Devices, container.DeviceMapping{PathOnHost: "/dev/sda", PathInContainer: "/dev/sda"})
	}},
	{"host_namespaces", func(h *container.HostConfig) { h.PidMode = "host" }},
	{"unconfined", func(h *container.HostConfig) { h.SecurityOpt = append(h.SecurityOpt, "apparmor=unconfined") }},
	{"sysctls", func(h *container.HostConfig) { h.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} }},
	{"annotations", func(h *container.HostConfig) { h.Annotations = map[string]string{"a": "b"} }},
	{"volumes_from", func(h *container.HostConfig) { h.VolumesFrom = []string{"other"} }},
	{"cgroup_parent", func(h *container.HostConfig) { h.CgroupParent = "/x" }},
	{"log_drivers=syslog", func(h *container.HostConfig) { h.LogConfig.Type = "syslog" }},
	{"volume_drivers=vieux/sshfs", func(h *container.HostConfig) { h.VolumeDriver = "vieux/sshfs" }},
	{"volume_types=nfs", func(h *container.HostConfig) {
		h.Mounts = append(h.Mounts, mount.Mount{Type: mount.TypeVolume, Target: "/n", VolumeOptions: &mount.VolumeOptions{
			DriverConfig: &mount.Driver{Options: map[string]string{"type": "nfs", "device": ":/x", "o": "addr=10.0.0.1"}}}})
	}},
}

func createWith(t *testing.T, fs []feature) learnReq {
	t.Helper()
	h := &container.HostConfig{}
	for _, f := range fs {
		f.set(h)
	}
	b, err := json.Marshal(container.CreateRequest{Config: &container.Config{Image: "alpine"}, HostConfig: h})
	if err != nil {
		t.Fatal(err)
	}
	return learnReq{"POST", "/v1.41/containers/create", string(b)}
}

// TestLearnedProperty: for random sessions, every request learned is
// allowed under the learned file, and each feature that no request of
// the session used is denied, alone or added to a learned request.
func TestLearnedProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 3))
	for round := range 200 {
		var run []learnReq
		used := map[string]bool{}
		for range 1 + rng.IntN(4) {
			var fs []feature
			for _, f := range features {
				if rng.IntN(6) == 0 {
					fs = append(fs, f)
					used[f.use] = true
				}
			}
			run = append(run, createWith(t, fs))
		}
		p, file := learnFile(t, run)
		for _, q := range run {
			if d := decideLearnReq(p, q); !d.Allow {
				t.Fatalf("round %d: a learned request is refused: %s: %s\n%s\n%s", round, d.Rule, d.Reason, q.body, file)
			}
		}
		for _, f := range features {
			if used[f.use] || used["privileged"] && strings.HasPrefix(f.use, "volume_drivers=") {
				continue // a privileged container may use any volume driver
			}
			for _, q := range []learnReq{createWith(t, []feature{f}), addFeature(t, run[0], f)} {
				if d := decideLearnReq(p, q); d.Allow {
					t.Fatalf("round %d: %s, never learned, is allowed\n%s\n%s", round, f.use, q.body, file)
				}
			}
		}
	}
}

// addFeature adds f to a learned create request's HostConfig.
func addFeature(t *testing.T, q learnReq, f feature) learnReq {
	t.Helper()
	var req container.CreateRequest
	if err := json.Unmarshal([]byte(q.body), &req); err != nil {
		t.Fatal(err)
	}
	f.set(req.HostConfig)
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return learnReq{q.method, q.target, string(b)}
}

// FuzzLearnedRecords: whatever records are added, the file parses.
func FuzzLearnedRecords(f *testing.F) {
	f.Add("GET", "/containers/json", "binds=/srv/x")
	f.Add("POST", "/containers/create", "cap_add=CAP_NET_ADMIN")
	f.Add("GET", "/a%20b/c", "refused=bad-body")
	f.Fuzz(func(t *testing.T, method, path, use string) {
		l := NewLearned()
		l.Add("GET", "/_ping", nil)
		l.Add(method, path, []string{use})
		file, err := l.File("fuzz")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse("fuzz", file); err != nil {
			t.Fatalf("%v\n%s", err, file)
		}
	})
}

// TestLearnedRestore: the records saved and read back give the same
// file, and more requests add to them.
func TestLearnedRestore(t *testing.T) {
	l := NewLearned()
	l.Add("GET", "/containers/abc/json", nil)
	l.Add("GET", "/containers/def/json", nil)
	l.Add("POST", "/containers/create", []string{"privileged", "binds=/srv/a"})
	l.Add("POST", "/containers/create", []string{"binds=/srv/a", "privileged"})
	l.Add("POST", "/containers/x/attach", nil)
	want, _ := l.File("ci")
	r := NewLearned()
	if err := r.Restore(l.Records()); err != nil {
		t.Fatal(err)
	}
	got, _ := r.File("ci")
	if string(got) != string(want) {
		t.Fatalf("restored file\n%s\nwant\n%s", got, want)
	}
	if err := r.Restore([]byte(`[{"method":"GET","path":"/_ping","n":2},{"method":"GET","path":"/x/../y","n":1},{"method":"GET","path":"/_ping","n":-5}]`)); err != nil {
		t.Fatal(err)
	}
	if r.Requests() != 7 {
		t.Errorf("Requests after a second restore: got %d, want 7", r.Requests())
	}
	got, _ = r.File("ci")
	if !strings.Contains(string(got), "# 2 records left out") {
		t.Errorf("the bad records are not counted:\n%s", got)
	}
	if err := r.Restore([]byte(`{`)); err == nil {
		t.Error("Restore of broken JSON: got no error")
	}
}
