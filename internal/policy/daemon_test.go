package policy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"
)

// fakeDaemon resolves references as dockerd does (full ID, then name,
// then a unique ID prefix) over a fixed world.
type fakeDaemon struct {
	containers []*container.InspectResponse
	execs      map[string]*container.ExecInspectResponse
	volumes    map[string]string // name -> driver
	volOpts    map[string]map[string]string
	hostNets   []Network
	calls      int
}

func id(prefix string) string { return prefix + strings.Repeat("0", 64-len(prefix)) }

func ctr(idPrefix, name string, edit func(*container.InspectResponse)) *container.InspectResponse {
	c := &container.InspectResponse{ID: id(idPrefix), Name: "/" + name, HostConfig: &container.HostConfig{
		NetworkMode:   "default",
		MaskedPaths:   []string{"/proc/kcore"},
		ReadonlyPaths: []string{"/proc/sys"},
		LogConfig:     container.LogConfig{Type: "syslog"}, // the daemon's default; not the client's
		CgroupnsMode:  "host",                              // the daemon's default on cgroup v1
	}}
	if edit != nil {
		edit(c)
	}
	return c
}

// testDaemon is the world the table tests decide in. "3f2a" and "x" are
// plain containers, and so is the container of execs "9c1d" and "x".
var testDaemon = &fakeDaemon{
	containers: []*container.InspectResponse{
		ctr("3f2a", "plain", nil),
		ctr("cafe", "x", nil),
		ctr("b1", "priv", func(c *container.InspectResponse) { c.HostConfig.Privileged = true }),
		ctr("b2", "hostnet", func(c *container.InspectResponse) { c.HostConfig.NetworkMode = "host" }),
		ctr("b3", "hostpid", func(c *container.InspectResponse) { c.HostConfig.PidMode = "host" }),
		ctr("b4", "chain", func(c *container.InspectResponse) { c.HostConfig.NetworkMode = "container:hostnet" }),
		ctr("b5", "hostbind", func(c *container.InspectResponse) {
			c.Mounts = []container.MountPoint{{Type: mount.TypeBind, Source: "/", Destination: "/host"}}
		}),
		ctr("b6", "withsock", func(c *container.InspectResponse) {
			c.Mounts = []container.MountPoint{{Type: mount.TypeVolume, Name: "ci", Driver: "sockrelay:latest", Destination: "/var/run"}}
		}),
		ctr("b7", "unmasked", func(c *container.InspectResponse) { c.HostConfig.MaskedPaths = []string{} }),
		ctr("b8", "hostuserns", func(c *container.InspectResponse) { c.HostConfig.UsernsMode = "host" }),
		ctr("ba", "withbindvol", func(c *container.InspectResponse) {
			c.Mounts = []container.MountPoint{{Type: mount.TypeVolume, Name: "hostroot", Driver: "local", Destination: "/data"}}
		}),
		ctr("b9", "localvol", func(c *container.InspectResponse) {
			c.Mounts = []container.MountPoint{{Type: mount.TypeVolume, Name: "data", Driver: "local", Destination: "/data"}}
		}),
		// A name that is also a prefix of the ID of another container:
		// dockerd takes the name.
		ctr("d00d", "b1", nil),
		ctr("dead", "ambiguous1", nil),
		ctr("deaf", "ambiguous2", nil),
	},
	execs: map[string]*container.ExecInspectResponse{
		"9c1d":     {ID: "9c1d", ContainerID: id("3f2a")},
		"x":        {ID: "x", ContainerID: id("3f2a")},
		"in-priv":  {ID: "in-priv", ContainerID: id("b1")},
		"privexec": {ID: "privexec", ContainerID: id("3f2a"), ProcessConfig: &container.ExecProcessConfig{Privileged: ptr(true)}},
	},
	volumes: map[string]string{"relayvol": "sockrelay:latest", "data": "local", "idvol": "4f9e2c", "hostroot": "local", "cache": "local"},
	volOpts: map[string]map[string]string{
		"hostroot": {"type": "none", "o": "bind", "device": "/"},
		"cache":    {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"},
	},
	hostNets: []Network{{ID: id("a1b2c3"), Name: "host"}, {ID: id("e5f6"), Name: "host"}},
}

func allowedB(method, target, body string) reqCase {
	return allowedBody(method+" "+target+" "+body, method, target, body)
}

func ptr[T any](v T) *T { return &v }

var errDown = errors.New("connection refused")

func (f *fakeDaemon) Container(ref string) (*container.InspectResponse, error) {
	f.calls++
	if ref == "down" {
		return nil, errDown
	}
	for _, c := range f.containers {
		if c.ID == ref {
			return c, nil
		}
	}
	for _, c := range f.containers {
		if c.Name == "/"+ref || c.Name == ref {
			return c, nil
		}
	}
	var found []*container.InspectResponse
	for _, c := range f.containers {
		if ref != "" && strings.HasPrefix(c.ID, ref) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no such container: %w", ErrNoSuchObject)
	case 1:
		return found[0], nil
	}
	return nil, errors.New("multiple IDs found with the provided prefix")
}

func (f *fakeDaemon) Exec(id string) (*container.ExecInspectResponse, error) {
	f.calls++
	if e, ok := f.execs[id]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("no such exec: %w", ErrNoSuchObject)
}

func (f *fakeDaemon) Volume(name string) (*volume.Volume, error) {
	f.calls++
	if name == "down" {
		return nil, errDown
	}
	if d, ok := f.volumes[name]; ok {
		return &volume.Volume{Name: name, Driver: d, Options: f.volOpts[name]}, nil
	}
	return nil, fmt.Errorf("no such volume: %w", ErrNoSuchObject)
}

func (f *fakeDaemon) HostNetworks() ([]Network, error) {
	f.calls++
	return f.hostNets, nil
}

// References, resolved as dockerd resolves them, decide: a container to
// exec in, attach to or copy into, a namespace to join, a volume to mount,
// a network to join. Each is tried by name, full ID and ID prefix.
func TestReferences(t *testing.T) {
	p := noEscalation
	create := "/v1.41/containers/create"
	cases := []reqCase{
		// Acting inside existing containers.
		allowedB("POST", "/v1.41/containers/plain/exec", `{"Cmd":["sh"]}`),
		allowedB("POST", "/v1.41/containers/3f2a/exec", `{"Cmd":["sh"]}`),
		allowedB("POST", "/v1.41/containers/"+id("3f2a")+"/exec", `{"Cmd":["sh"]}`),
		allowedB("POST", "/v1.41/containers/localvol/exec", `{}`),
		allowedB("POST", "/v1.41/containers/b1/exec", `{}`), // the name b1 is a plain container
		allowedB("POST", "/v1.41/containers/nothing/exec", `{}`),
		deniedBody("exec in privileged by name", "POST", "/v1.41/containers/priv/exec", `{}`, RulePrivileged),
		deniedBody("exec in privileged by ID", "POST", "/v1.41/containers/"+id("b1")+"/exec", `{}`, RulePrivileged),
		deniedBody("exec in privileged by prefix", "POST", "/v1.41/containers/b1000/exec", `{}`, RulePrivileged),
		deniedBody("exec in host network", "POST", "/containers/hostnet/exec", `{}`, RuleHostNamespace),
		deniedBody("exec in host pid", "POST", "/containers/hostpid/exec", `{}`, RuleHostNamespace),
		deniedBody("exec in chained host network", "POST", "/containers/chain/exec", `{}`, RuleHostNamespace),
		deniedBody("exec in host bind", "POST", "/containers/hostbind/exec", `{}`, RuleBind),
		deniedBody("exec in a container with a socket", "POST", "/containers/withsock/exec", `{}`, RuleVolumeDriver),
		deniedBody("exec in unmasked", "POST", "/containers/unmasked/exec", `{}`, RuleUnconfined),
		deniedBody("exec in host userns", "POST", "/containers/hostuserns/exec", `{}`, RuleHostNamespace),
		denied("POST", "/v1.41/containers/priv/attach?stream=1&stdin=1", 403, RulePrivileged),
		denied("GET", "/v1.41/containers/b1000/attach/ws", 403, RulePrivileged),
		denied("PUT", "/v1.41/containers/hostbind/archive?path=/host/etc", 403, RuleBind),
		denied("GET", "/v1.41/containers/hostbind/archive?path=/host/etc/shadow", 403, RuleBind),
		denied("HEAD", "/v1.41/containers/hostbind/archive?path=/host/etc/shadow", 403, RuleBind),
		denied("POST", "/v1.41/exec/in-priv/start", 403, RulePrivileged),
		denied("POST", "/v1.41/exec/privexec/start", 403, RulePrivileged),
		denied("POST", "/v1.41/containers/dea/exec", 503, RuleLookup), // ambiguous prefix
		denied("POST", "/v1.41/containers/down/exec", 503, RuleLookup),
		// Joining namespaces.
		allowedB("POST", create, `{"HostConfig":{"NetworkMode":"container:plain"}}`),
		deniedBody("network of host-network container", "POST", create, `{"HostConfig":{"NetworkMode":"container:hostnet"}}`, RuleHostNamespace),
		deniedBody("network of it by prefix", "POST", create, `{"HostConfig":{"NetworkMode":"container:b2"}}`, RuleHostNamespace),
		deniedBody("network through a chain", "POST", create, `{"HostConfig":{"NetworkMode":"container:chain"}}`, RuleHostNamespace),
		deniedBody("pid of host-pid container", "POST", create, `{"HostConfig":{"PidMode":"container:hostpid"}}`, RuleHostNamespace),
		deniedBody("legacy top-level", "POST", create, `{"NetworkMode":"container:hostnet"}`, RuleHostNamespace),
		// Networks by name, ID and prefix.
		allowedB("POST", create, `{"HostConfig":{"NetworkMode":"mynet"}}`),
		allowedB("POST", create, `{"HostConfig":{"NetworkMode":"a1b3"}}`),
		deniedBody("host network by ID", "POST", create, `{"HostConfig":{"NetworkMode":"`+id("a1b2c3")+`"}}`, RuleHostNamespace),
		deniedBody("host network by prefix", "POST", create, `{"HostConfig":{"NetworkMode":"a1b2"}}`, RuleHostNamespace),
		deniedBody("swarm host network by prefix", "POST", create, `{"HostConfig":{"NetworkMode":"e5f"}}`, RuleHostNamespace),
		deniedBody("endpoint on the host network by prefix", "POST", create, `{"NetworkingConfig":{"EndpointsConfig":{"a1b2c":{}}}}`, RuleHostNamespace),
		deniedBody("service network by prefix", "POST", "/v1.41/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"x"},"Networks":[{"Target":"e5f6"}]}}`, RuleHostNamespace),
		deniedBody("service network by ID", "POST", "/v1.41/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"x"},"Networks":[{"Target":"`+id("e5f6")+`"}]}}`, RuleHostNamespace),
		deniedBody("connect to the host network by prefix", "POST", "/v1.41/networks/a1b2c3/connect", `{"Container":"plain"}`, RuleHostNamespace),
		denied("POST", "/v1.41/build?networkmode=a1b2", 403, RuleHostNamespace),
		denied("POST", "/v1.41/build?networkmode=container:hostnet", 403, RuleHostNamespace),
		// Existing volumes by name.
		allowedB("POST", create, `{"HostConfig":{"Binds":["data:/data","new:/new"]}}`),
		deniedBody("bind of a sockrelay volume", "POST", create, `{"HostConfig":{"Binds":["relayvol:/var/run"]}}`, RuleVolumeDriver),
		deniedBody("mount of a sockrelay volume", "POST", create, `{"HostConfig":{"Mounts":[{"Type":"volume","Source":"relayvol","Target":"/var/run"}]}}`, RuleVolumeDriver),
		deniedBody("mount of it, naming local", "POST", create, `{"HostConfig":{"Mounts":[{"Type":"volume","Source":"relayvol","Target":"/x","VolumeOptions":{"DriverConfig":{"Name":"local"}}}]}}`, RuleVolumeDriver),
		deniedBody("a plugin volume by ID", "POST", create, `{"HostConfig":{"Binds":["idvol:/x"]}}`, RuleVolumeDriver),
		deniedBody("service mount of it", "POST", "/v1.41/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"x","Mounts":[{"Type":"volume","Source":"relayvol","Target":"/var/run"}]}}}`, RuleVolumeDriver),
		deniedBody("a volume the daemon could not look up", "POST", create, `{"HostConfig":{"Binds":["down:/x"]}}`, RuleLookup),
		deniedBody("an existing local bind volume", "POST", create, `{"HostConfig":{"Binds":["hostroot:/x"]}}`, RuleBind),
		deniedBody("an existing local bind volume by mount", "POST", create, `{"HostConfig":{"Mounts":[{"Type":"volume","Source":"hostroot","Target":"/x"}]}}`, RuleBind),
		allowedB("POST", create, `{"HostConfig":{"Binds":["cache:/x"]}}`),
		deniedBody("exec in a container with a local bind volume", "POST", "/containers/withbindvol/exec", `{}`, RuleBind),
	}
	for i := range cases {
		if cases[i].rule == RuleLookup {
			cases[i].status = StatusLookup
		}
	}
	runCases(t, p, cases)

	// The full policy asks nothing.
	before := testDaemon.calls
	d := full.Decide(Request{Method: "POST", Target: "/containers/priv/exec", Body: []byte(`{}`), Daemon: testDaemon})
	if !d.Allow || testDaemon.calls != before {
		t.Fatalf("full: got %+v after %d lookups, want allowed after none", d, testDaemon.calls-before)
	}
	// Without a daemon, a reference is refused, not guessed at.
	d = p.Decide(Request{Method: "POST", Target: "/containers/plain/exec", Body: []byte(`{}`)})
	if d.Allow || d.Rule != RuleLookup || d.Status != StatusLookup {
		t.Fatalf("no daemon: got %+v, want %s", d, RuleLookup)
	}
}

// The request is forwarded naming the very object that was checked: its
// full ID, in the path and in the body, and nothing else changes.
func TestReferencesForwardedByID(t *testing.T) {
	p := noEscalation
	cases := []struct {
		target, body         string
		wantTarget, wantBody string
	}{
		{"/v1.41/containers/plain/exec?x=1", `{"Cmd":["sh"]}`, "/v1.41/containers/" + id("3f2a") + "/exec?x=1", ""},
		{"/containers/3f2a/attach", "", "/containers/" + id("3f2a") + "/attach", ""},
		{"/v1.44/containers/x/archive?path=%2Ftmp", "", "/v1.44/containers/" + id("cafe") + "/archive?path=%2Ftmp", ""},
		{"/v1.41/containers/create", `{"HostConfig": {"NetworkMode" : "container:plain", "PidMode":"container:x"},"Labels":{"a":"container:plain"}}`,
			"", `{"HostConfig": {"NetworkMode" : "container:` + id("3f2a") + `", "PidMode":"container:` + id("cafe") + `"},"Labels":{"a":"container:plain"}}`},
		{"/v1.41/containers/create", `{"hostconfig":{"networkmode":"container:\u0070lain","NetworkMode":"container:plain"}}`,
			"", `{"hostconfig":{"networkmode":"container:` + id("3f2a") + `","NetworkMode":"container:` + id("3f2a") + `"}}`},
		{"/build?networkmode=container:plain&t=a", "", "/build?networkmode=container%3A" + id("3f2a") + "&t=a", ""},
		{"/v1.41/containers/create", `{"HostConfig":{"NetworkMode":"bridge"}}`, "", ""},
	}
	for _, tc := range cases {
		method := "POST"
		if strings.HasSuffix(tc.target, "archive?path=%2Ftmp") {
			method = "PUT"
		}
		r := Request{Method: method, Target: tc.target, Header: http.Header{}, Daemon: testDaemon}
		if p.BodyNeeded(method, tc.target) {
			r.Body = []byte(tc.body)
		}
		d := p.Decide(r)
		if !d.Allow {
			t.Fatalf("%s %s: got %+v, want allowed", method, tc.target, d)
		}
		if d.Target != tc.wantTarget || string(d.Body) != tc.wantBody {
			t.Errorf("%s %s:\ngot  target %q body %s\nwant target %q body %s", method, tc.target, d.Target, d.Body, tc.wantTarget, tc.wantBody)
		}
	}
}

func (f *fakeDaemon) Resolve(kind Kind, ref string) (Object, error) {
	f.calls++
	return Object{}, fmt.Errorf("no %s %s: %w", kind, ref, ErrNoSuchObject)
}

func (f *fakeDaemon) List(Kind, string) ([]Object, error) {
	f.calls++
	return nil, nil
}
