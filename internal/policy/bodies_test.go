package policy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const (
	create  = "/v1.47/containers/create"
	update  = "/v1.47/containers/3f2a/update"
	exec    = "/v1.47/containers/3f2a/exec"
	start   = "/v1.47/containers/3f2a/start"
	svc     = "/v1.47/services/create"
	svcUp   = "/v1.47/services/web/update?version=12"
	volumeC = "/v1.47/volumes/create"
)

func hc(fields string) string { return `{"Image":"alpine","HostConfig":{` + fields + `}}` }

// TestNoEscalationBodies is the bypass list of the policy-mode issue and
// more: each body decodes as dockerd decodes it.
func TestNoEscalationBodies(t *testing.T) {
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		// Decoding as dockerd: case-insensitive keys, last duplicate wins.
		deniedBody("lower-case keys", "POST", create, `{"hostconfig":{"usernsmode":"host"}}`, "host-namespace-not-allowed"),
		deniedBody("duplicate HostConfig, the last privileged", "POST", create, `{"HostConfig":{"Privileged":false},"hostconfig":{"privileged":true}}`, "no-privileged"),
		allowedBody("duplicate key, the last unprivileged", "POST", create, `{"HostConfig":{"Privileged":true,"privileged":false}}`),
		deniedBody("Kelvin sign folds to k", "POST", create, `{"HostConfig":{"Mas\u212aedPaths":[]}}`, "unconfined-not-allowed"),
		deniedBody("escaped key", "POST", create, `{"HostConfig":{"\u0050rivileged":true}}`, "no-privileged"),
		deniedBody("top-level HostConfig fields (Docker 26 and older)", "POST", create, `{"Image":"alpine","Privileged":true}`, "no-privileged"),
		deniedBody("top-level Binds (Docker 26 and older)", "POST", create, `{"Image":"alpine","Binds":["/:/host"],"HostConfig":{}}`, "bind-not-allowed"),
		deniedBody("HostConfig.Capabilities (API 1.40)", "POST", create, hc(`"Capabilities":["ALL"]`), "cap-add-not-allowed"),
		allowedBody("null body", "POST", create, `null`),
		allowedBody("empty HostConfig", "POST", create, hc(``)),
		{name: "not JSON", method: "POST", target: create, body: `{"HostConfig":`, status: 400, rule: "bad-body"},
		{name: "wrong type", method: "POST", target: create, body: `{"HostConfig":{"Privileged":"yes"}}`, status: 400, rule: "bad-body"},
		{name: "content after the value", method: "POST", target: create, body: hc(``) + `}`, status: 400, rule: "bad-body"},
		{name: "a second value", method: "POST", target: create, body: hc(``) + hc(`"Privileged":true`), status: 400, rule: "bad-body"},
		{name: "white space only", method: "POST", target: create, body: " \n", status: 400, rule: "bad-body"},
		allowedBody("trailing newline", "POST", create, hc(``)+"\n"),

		// Privileges.
		deniedBody("--privileged", "POST", create, hc(`"Privileged":true`), "no-privileged"),
		deniedBody("--cap-add SYS_ADMIN", "POST", create, hc(`"CapAdd":["SYS_ADMIN"]`), "cap-add-not-allowed"),
		deniedBody("--cap-add cap_sys_admin", "POST", create, hc(`"CapAdd":["cap_sys_admin"]`), "cap-add-not-allowed"),
		deniedBody("--cap-add ALL", "POST", create, hc(`"CapAdd":["ALL"]`), "cap-add-not-allowed"),
		allowedBody("--cap-drop ALL", "POST", create, hc(`"CapDrop":["ALL"]`)),
		deniedBody("--device", "POST", create, hc(`"Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]`), "devices-not-allowed"),
		deniedBody("--device-cgroup-rule", "POST", create, hc(`"DeviceCgroupRules":["b 8:* rmw"]`), "devices-not-allowed"),
		allowedBody("--gpus all", "POST", create, hc(`"DeviceRequests":[{"Driver":"","Count":-1,"Capabilities":[["gpu"]]}]`)),
		deniedBody("--sysctl", "POST", create, hc(`"Sysctls":{"net.ipv4.ip_forward":"1"}`), "sysctls-not-allowed"),
		deniedBody("--annotation", "POST", create, hc(`"Annotations":{"org.systemd.property.DeviceAllow":"'/dev/sda rwm'"}`), "annotations-not-allowed"),
		deniedBody("endpoint sysctls", "POST", create, `{"NetworkingConfig":{"EndpointsConfig":{"bridge":{"DriverOpts":{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}}}}}`, "sysctls-not-allowed"),

		// Namespaces.
		deniedBody("--network host", "POST", create, hc(`"NetworkMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("--pid host", "POST", create, hc(`"PidMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("--ipc host", "POST", create, hc(`"IpcMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("--uts host", "POST", create, hc(`"UTSMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("--cgroupns host", "POST", create, hc(`"CgroupnsMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("--userns host", "POST", create, hc(`"UsernsMode":"host"`), "host-namespace-not-allowed"),
		deniedBody("host in EndpointsConfig", "POST", create, `{"NetworkingConfig":{"EndpointsConfig":{"host":{}}}}`, "host-namespace-not-allowed"),
		allowedBody("--network container:x", "POST", create, hc(`"NetworkMode":"container:3f2a"`)),
		allowedBody("--pid container:x", "POST", create, hc(`"PidMode":"container:3f2a"`)),
		allowedBody("--ipc container:x", "POST", create, hc(`"IpcMode":"container:3f2a"`)),
		allowedBody("--network mynet", "POST", create, hc(`"NetworkMode":"mynet"`)),

		// Confinement.
		deniedBody("seccomp=unconfined", "POST", create, hc(`"SecurityOpt":["seccomp=unconfined"]`), "unconfined-not-allowed"),
		deniedBody("seccomp:unconfined", "POST", create, hc(`"SecurityOpt":["seccomp:unconfined"]`), "unconfined-not-allowed"),
		deniedBody("apparmor=unconfined", "POST", create, hc(`"SecurityOpt":["apparmor=unconfined"]`), "unconfined-not-allowed"),
		deniedBody("apparmor:unconfined", "POST", create, hc(`"SecurityOpt":["apparmor:unconfined"]`), "unconfined-not-allowed"),
		deniedBody("apparmor=other profile", "POST", create, hc(`"SecurityOpt":["apparmor=chrome"]`), "unconfined-not-allowed"),
		deniedBody("label=disable", "POST", create, hc(`"SecurityOpt":["label=disable"]`), "unconfined-not-allowed"),
		deniedBody("label:disable", "POST", create, hc(`"SecurityOpt":["label:disable"]`), "unconfined-not-allowed"),
		deniedBody("disable", "POST", create, hc(`"SecurityOpt":["disable"]`), "unconfined-not-allowed"),
		deniedBody("label=type:spc_t", "POST", create, hc(`"SecurityOpt":["label=type:spc_t"]`), "unconfined-not-allowed"),
		deniedBody("systempaths=unconfined", "POST", create, hc(`"SecurityOpt":["systempaths=unconfined"]`), "unconfined-not-allowed"),
		deniedBody("MaskedPaths [] (the CLI's systempaths=unconfined)", "POST", create, hc(`"MaskedPaths":[],"ReadonlyPaths":[]`), "unconfined-not-allowed"),
		deniedBody("ReadonlyPaths []", "POST", create, hc(`"ReadonlyPaths":[]`), "unconfined-not-allowed"),
		deniedBody("writable-cgroups", "POST", create, hc(`"SecurityOpt":["writable-cgroups"]`), "unconfined-not-allowed"),
		deniedBody("writable-cgroups=true", "POST", create, hc(`"SecurityOpt":["writable-cgroups=true"]`), "unconfined-not-allowed"),
		deniedBody("custom seccomp profile", "POST", create, hc(`"SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]`), "unconfined-not-allowed"),
		deniedBody("unknown security option", "POST", create, hc(`"SecurityOpt":["whatever"]`), "unconfined-not-allowed"),
		allowedBody("no-new-privileges", "POST", create, hc(`"SecurityOpt":["no-new-privileges","no-new-privileges=true","seccomp=builtin","apparmor=docker-default","writable-cgroups=false"]`)),

		// Binds and mounts.
		deniedBody("-v /:/host", "POST", create, hc(`"Binds":["/:/host"]`), "bind-not-allowed"),
		deniedBody("-v /var/run/docker.sock", "POST", create, hc(`"Binds":["/var/run/docker.sock:/var/run/docker.sock:ro"]`), "bind-not-allowed"),
		allowedBody("a destination alone is an anonymous volume", "POST", create, hc(`"Binds":["/etc"]`)),
		deniedBody("bind with too many colons", "POST", create, hc(`"Binds":["/:/h:ro:x"]`), "bind-not-allowed"),
		allowedBody("-v name:/dst", "POST", create, hc(`"Binds":["data:/data","cache:/cache:ro"]`)),
		allowedBody("-v /dst (anonymous)", "POST", create, `{"Image":"alpine","Volumes":{"/data":{}}}`),
		deniedBody("--mount type=bind", "POST", create, hc(`"Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]`), "bind-not-allowed"),
		deniedBody("--mount type=BIND", "POST", create, hc(`"Mounts":[{"Type":"BIND","Source":"/","Target":"/host"}]`), "bind-not-allowed"),
		deniedBody("mount type npipe", "POST", create, hc(`"Mounts":[{"Type":"npipe","Source":"/run/docker.sock","Target":"/s"}]`), "bind-not-allowed"),
		deniedBody("unknown mount type", "POST", create, hc(`"Mounts":[{"Type":"overlay","Source":"/","Target":"/h"}]`), "mount-type-not-allowed"),
		allowedBody("--mount type=volume", "POST", create, hc(`"Mounts":[{"Type":"volume","Source":"data","Target":"/data"}]`)),
		allowedBody("--mount type=tmpfs", "POST", create, hc(`"Mounts":[{"Type":"tmpfs","Target":"/tmp"}]`)),
		allowedBody("--tmpfs", "POST", create, hc(`"Tmpfs":{"/run":"rw,noexec"}`)),
		deniedBody("--mount volume-opt o=bind", "POST", create, hc(`"Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}]`), "bind-not-allowed"),
		deniedBody("--mount volume-opt, driver unnamed", "POST", create, hc(`"Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Options":{"type":"ext4","o":"rbind","device":"/etc"}}}}]`), "bind-not-allowed"),
		deniedBody("--mount volume-opt type=ext4", "POST", create, hc(`"Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"ext4","device":"/dev/sda1"}}}}]`), "volume-type-not-allowed"),
		allowedBody("--mount volume-opt type=nfs", "POST", create, hc(`"Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"nfs","o":"addr=10.0.0.1,rw","device":":/export"}}}}]`)),
		deniedBody("--volumes-from", "POST", create, hc(`"VolumesFrom":["other"]`), "volumes-from-not-allowed"),
		deniedBody("--volume-driver sockrelay", "POST", create, hc(`"VolumeDriver":"sockrelay:latest","Binds":["x:/var/run"]`), "volume-driver-not-allowed"),
		deniedBody("mount of a sockrelay volume", "POST", create, hc(`"Mounts":[{"Type":"volume","Source":"x","Target":"/s","VolumeOptions":{"DriverConfig":{"Name":"me/sockrelay:1.0"}}}]`), "volume-driver-not-allowed"),

		// Container update, exec, start.
		deniedBody("update --device", "POST", update, `{"Devices":[{"PathOnHost":"/dev/sda"}]}`, "devices-not-allowed"),
		deniedBody("update DeviceCgroupRules", "POST", update, `{"devicecgrouprules":["a *:* rwm"]}`, "devices-not-allowed"),
		allowedBody("update --memory", "POST", update, `{"Memory":67108864,"RestartPolicy":{"Name":"always"}}`),
		deniedBody("exec --privileged", "POST", exec, `{"Privileged":true,"Cmd":["sh"]}`, "no-privileged"),
		deniedBody("exec privileged, lower case", "POST", exec, `{"privileged":true,"Cmd":["sh"]}`, "no-privileged"),
		deniedBody("exec under a container name with a slash", "POST", "/v1.47/containers/a/b/exec", `{"Privileged":true}`, "no-privileged"),
		allowedBody("exec", "POST", exec, execBody),
		deniedBody("start with a legacy HostConfig", "POST", start, `{"Privileged":true}`, "no-privileged"),
		deniedBody("start with legacy binds", "POST", start, `{"Binds":["/:/h"]}`, "bind-not-allowed"),
		allowedBody("start with {}", "POST", start, `{}`),
		deniedBody("lower-case method", "post", create, hc(`"Privileged":true`), "no-privileged"),
		deniedBody("version 1.41.0", "POST", "/v1.41.0/containers/create", hc(`"Privileged":true`), "no-privileged"),
		deniedBody("checkpoint create with a dir", "POST", "/v1.47/containers/3f2a/checkpoints", `{"CheckpointID":"c1","CheckpointDir":"/etc"}`, "bind-not-allowed"),

		// Services.
		deniedBody("service seccomp unconfined", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine","Privileges":{"Seccomp":{"Mode":"unconfined"}}}}}`, "unconfined-not-allowed"),
		deniedBody("service AppArmor disabled", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Privileges":{"AppArmor":{"Mode":"disabled"}}}}}`, "unconfined-not-allowed"),
		deniedBody("service SELinux disabled", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Privileges":{"SELinuxContext":{"Disable":true}}}}}`, "unconfined-not-allowed"),
		deniedBody("service bind", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine","Mounts":[{"Type":"bind","Source":"/","Target":"/host"}]}}}`, "bind-not-allowed"),
		deniedBody("service update bind", "POST", svcUp, `{"tasktemplate":{"containerspec":{"mounts":[{"type":"bind","source":"/etc","target":"/h"}]}}}`, "bind-not-allowed"),
		deniedBody("service --cap-add", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"CapabilityAdd":["CAP_SYS_ADMIN"]}}}`, "cap-add-not-allowed"),
		deniedBody("service --sysctl", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Sysctls":{"net.core.somaxconn":"1024"}}}}`, "sysctls-not-allowed"),
		deniedBody("service --network host", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"},"Networks":[{"Target":"host"}]}}`, "host-namespace-not-allowed"),
		deniedBody("service legacy Networks host", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"}},"Networks":[{"Target":"host"}]}`, "host-namespace-not-allowed"),
		deniedBody("service plugin runtime", "POST", svc, `{"TaskTemplate":{"Runtime":"plugin","PluginSpec":{"Name":"x","Remote":"evil/plugin"}}}`, "plugin-not-allowed"),
		deniedBody("service local volume o=bind", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"volume","Target":"/h","VolumeOptions":{"DriverConfig":{"Options":{"type":"none","o":"bind","device":"/"}}}}]}}}`, "bind-not-allowed"),
		allowedBody("service", "POST", svc, `{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"nginx","Mounts":[{"Type":"volume","Source":"www","Target":"/usr/share/nginx/html"}]},"Networks":[{"Target":"front"}]},"Mode":{"Replicated":{"Replicas":2}}}`),

		// Volumes.
		deniedBody("volume create local o=bind", "POST", volumeC, `{"Name":"v","Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/"}}`, "bind-not-allowed"),
		deniedBody("volume create, driver omitted", "POST", volumeC, `{"Name":"v","DriverOpts":{"type":"none","o":"bind","device":"/etc"}}`, "bind-not-allowed"),
		deniedBody("volume create o=rbind,ro", "POST", volumeC, `{"driveropts":{"type":"tmpfs","o":"ro, RBIND","device":"/"}}`, "bind-not-allowed"),
		deniedBody("volume create type=ext4", "POST", volumeC, `{"DriverOpts":{"type":"ext4","device":"/dev/sda1"}}`, "volume-type-not-allowed"),
		deniedBody("volume create type=overlay", "POST", volumeC, `{"DriverOpts":{"type":"overlay","o":"lowerdir=/","device":"overlay"}}`, "volume-type-not-allowed"),
		deniedBody("volume create sockrelay", "POST", volumeC, `{"Name":"s","Driver":"sockrelay"}`, "volume-driver-not-allowed"),
		allowedBody("volume create", "POST", volumeC, `{"Name":"data"}`),
		allowedBody("volume create tmpfs", "POST", volumeC, `{"Name":"t","DriverOpts":{"type":"tmpfs","o":"size=64m","device":"tmpfs"}}`),
		allowedBody("volume create size", "POST", volumeC, `{"Name":"q","DriverOpts":{"size":"1G"}}`),
		deniedBody("volume create, another driver", "POST", volumeC, `{"Name":"x","Driver":"rexray/ebs","DriverOpts":{"type":"none","o":"bind","device":"/"}}`, "volume-driver-not-allowed"),
	})
}

func TestBodyTooLarge(t *testing.T) {
	p := preset(t, "no-escalation")
	d := p.Decide(Request{Method: "POST", Target: create, Body: make([]byte, MaxBody+1)})
	if d.Allow || d.Status != 413 || d.Rule != "body-too-large" || d.Path != "/containers/create" {
		t.Fatalf("got %+v, want 413 body-too-large", d)
	}
}

func TestBodyNeeded(t *testing.T) {
	ne := preset(t, "no-escalation")
	ro := preset(t, "read-only")
	cases := []struct {
		p              *Policy
		method, target string
		want           bool
	}{
		{ne, "POST", "/v1.41/containers/create?name=x", true},
		{ne, "POST", "/v1.41/containers/x/update", true},
		{ne, "POST", "/v1.41/containers/x/exec", true},
		{ne, "POST", "/v1.41/containers/x/start", true},
		{ne, "POST", "/v1.41/services/create", true},
		{ne, "POST", "/v1.41/services/x/update", true},
		{ne, "POST", "/v1.41/volumes/create", true},
		{ne, "POST", "/v1.41/networks/n/connect", true},
		{ne, "POST", "/v1.41/networks/n/disconnect", false},
		{ne, "POST", "/v1.41/swarm/init", true},
		{ne, "POST", "/v1.41/swarm/update?version=3", true},
		{ne, "POST", "/v1.41/swarm/join", false},
		{ne, "POST", "/v1.41/build?t=x", false},
		{ne, "POST", "/v1.41/images/load", false},
		{ne, "POST", "/v1.41/images/create?fromSrc=-", false},
		{ne, "PUT", "/v1.41/containers/x/archive?path=/", false},
		{ne, "POST", "/v1.41/exec/x/start", false},
		{ne, "GET", "/v1.41/containers/create", false},
		{ne, "POST", "/v1.41/containers/%2e/create", false},
		{ne, "POST", "/v1.41/plugins/pull", false},
		{ro, "POST", "/v1.41/containers/create", false},
	}
	for _, tc := range cases {
		if got := tc.p.BodyNeeded(tc.method, tc.target); got != tc.want {
			t.Errorf("%s: BodyNeeded(%s %s): got %v, want %v", tc.p.Name(), tc.method, tc.target, got, tc.want)
		}
	}
}

// TestReasons checks that reasons name the field and the flag for the user
// and never repeat what the body said.
func TestReasons(t *testing.T) {
	p := preset(t, "no-escalation")
	cases := []struct{ body, want string }{
		{hc(`"Privileged":true`), "HostConfig.Privileged (--privileged) is not allowed by policy no-escalation"},
		{hc(`"CapAdd":["NET_RAW","sys_admin"]`), "HostConfig.CapAdd[0] (--cap-add): CAP_NET_RAW is not allowed by policy no-escalation"},
		{hc(`"Binds":["data:/d","/etc/secret-place:/x"]`), "HostConfig.Binds[1] (-v /host/path:/path): a bind mount of a host path is not allowed by policy no-escalation"},
		{hc(`"SecurityOpt":["seccomp={\"secret\":1}"]`), "HostConfig.SecurityOpt[0] (--security-opt): a custom seccomp profile is not allowed by policy no-escalation"},
		{`{"Image":"alpine","Privileged":true}`, "Privileged (--privileged) is not allowed by policy no-escalation"},
	}
	for _, tc := range cases {
		d := p.Decide(Request{Method: "POST", Target: create, Body: []byte(tc.body)})
		if d.Reason != tc.want {
			t.Errorf("body %s: got %q, want %q", tc.body, d.Reason, tc.want)
		}
		for _, secret := range []string{"secret", "sys_admin", "SYS_ADMIN"} {
			if strings.Contains(d.Reason, secret) {
				t.Errorf("body %s: reason %q repeats %q", tc.body, d.Reason, secret)
			}
		}
	}
}

func TestPathDescribed(t *testing.T) {
	p := preset(t, "no-escalation")
	d := p.Decide(Request{Method: "POST", Target: "/v1.41/plugins/vieux/sshfs/enable"})
	want := "POST /plugins/{name}/enable is not allowed by policy no-escalation: a plugin runs with the privileges it asks for"
	if d.Reason != want {
		t.Fatalf("got %q, want %q", d.Reason, want)
	}
	f, err := Parse("s", []byte("allow: [{method: POST, path: /session}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d = f.Decide(Request{Method: "POST", Target: "/session"})
	want = "POST /session switches the connection to a raw stream, which policy file:s does not allow"
	if d.Reason != want {
		t.Fatalf("got %q, want %q", d.Reason, want)
	}
}

func BenchmarkDecide(b *testing.B) {
	run := []byte(dockerRunBody(b))
	for _, bc := range []struct {
		policy string
		r      Request
	}{
		{"full", Request{Method: "GET", Target: "/v1.47/_ping"}},
		{"read-only", Request{Method: "GET", Target: "/v1.47/containers/json?all=1"}},
		{"no-escalation", Request{Method: "GET", Target: "/v1.47/_ping"}},
		{"no-escalation", Request{Method: "GET", Target: "/v1.47/containers/3f2a/logs?follow=1"}},
		{"no-escalation", Request{Method: "POST", Target: create, Body: run}},
	} {
		p := preset(b, bc.policy)
		b.Run(fmt.Sprintf("%s/%s %s", bc.policy, bc.r.Method, strings.ReplaceAll(bc.r.Target, "/", "_")), func(b *testing.B) {
			bc.r.Header = http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				if d := p.Decide(bc.r); !d.Allow {
					b.Fatal(d.Reason)
				}
			}
		})
	}
}

func TestBadBodyReason(t *testing.T) {
	p := preset(t, "no-escalation")
	cases := []struct{ body, want string }{
		{`{"HostConfig":{"Privileged":"yes"}}`, "the container create body is not valid JSON (HostConfig.Privileged has the wrong type)"},
		{`{"HostConfig":`, "the container create body is not valid JSON"},
		{`{"HostConfig":{}} x`, "the container create body is not valid JSON (content after the JSON value)"},
		{`{"HostConfig":{"Sysctls":{"kernel.secret-thing":1}}}`, "the container create body is not valid JSON (HostConfig.Sysctls has the wrong type)"},
		{`{"HostConfig":{"Privileged":tru}}`, "the container create body is not valid JSON (syntax error at byte 32)"},
	}
	for _, tc := range cases {
		d := p.Decide(Request{Method: "POST", Target: create, Body: []byte(tc.body)})
		if d.Status != 400 || d.Rule != "bad-body" || d.Reason != tc.want {
			t.Errorf("body %s: got %d %s %q, want 400 bad-body %q", tc.body, d.Status, d.Rule, d.Reason, tc.want)
		}
	}
}

const connect = "/v1.47/networks/mynet/connect"

// endpointSysctl is a DriverOpts member, under the key given.
func endpointSysctl(key string) string {
	return `"` + key + `":{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.forwarding=1"}`
}

// TestEndpointSysctls: the endpoint sysctls driver option, wherever an
// endpoint's settings reach dockerd.
func TestEndpointSysctls(t *testing.T) {
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		deniedBody("create", "POST", create, `{"NetworkingConfig":{"EndpointsConfig":{"bridge":{`+endpointSysctl("DriverOpts")+`}}}}`, "sysctls-not-allowed"),
		deniedBody("network connect", "POST", connect, `{"Container":"3f2a","EndpointConfig":{`+endpointSysctl("DriverOpts")+`}}`, "sysctls-not-allowed"),
		deniedBody("network connect, lower-case keys", "POST", connect, `{"container":"3f2a","endpointconfig":{`+endpointSysctl("driveropts")+`}}`, "sysctls-not-allowed"),
		deniedBody("network connect, a network name with a slash", "POST", "/v1.47/networks/a/b/connect", `{"Container":"3f2a","EndpointConfig":{`+endpointSysctl("DriverOpts")+`}}`, "sysctls-not-allowed"),
		deniedBody("network connect to host", "POST", "/v1.47/networks/host/connect", `{"Container":"3f2a"}`, "host-namespace-not-allowed"),
		deniedBody("network connect to HOST", "POST", "/v1.47/networks/HOST/connect", `{"Container":"3f2a"}`, "host-namespace-not-allowed"),
		deniedBody("service network", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"},"Networks":[{"Target":"front",`+endpointSysctl("DriverOpts")+`}]}}`, "sysctls-not-allowed"),
		deniedBody("service update network, lower case", "POST", svcUp, `{"tasktemplate":{"networks":[{"target":"front",`+endpointSysctl("driveropts")+`}]}}`, "sysctls-not-allowed"),
		deniedBody("service legacy Networks", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"}},"Networks":[{"Target":"front",`+endpointSysctl("DriverOpts")+`}]}`, "sysctls-not-allowed"),
		allowedBody("network connect", "POST", connect, `{"Container":"3f2a","EndpointConfig":{"Aliases":["web"],"DriverOpts":{"com.docker.network.endpoint.ifname":"eth9"}}}`),
		allowedBody("network connect, no body", "POST", connect, ``),
		allowedBody("service network", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"},"Networks":[{"Target":"front","Aliases":["web"]}]}}`),
	})
	f := mustParse(t, "sysctls", "allow: [{method: \"*\", path: \"/*\"}]\ncreate: {sysctls: true, host_namespaces: true}\n")
	runCases(t, f, []reqCase{
		allowedBody("network connect", "POST", connect, `{"Container":"3f2a","EndpointConfig":{`+endpointSysctl("DriverOpts")+`}}`),
		allowedBody("network connect to host", "POST", "/v1.47/networks/host/connect", `{"Container":"3f2a"}`),
		allowedBody("service network", "POST", svc, `{"TaskTemplate":{"Networks":[{"Target":"front",`+endpointSysctl("DriverOpts")+`}]}}`),
	})
}

// TestCgroupParent: a cgroup parent puts the container's cgroup anywhere
// in the host's tree, outside the daemon's.
func TestCgroupParent(t *testing.T) {
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		deniedBody("--cgroup-parent", "POST", create, hc(`"CgroupParent":"/"`), "cgroup-parent-not-allowed"),
		deniedBody("--cgroup-parent, lower case", "POST", create, `{"hostconfig":{"cgroupparent":"system.slice"}}`, "cgroup-parent-not-allowed"),
		deniedBody("top-level CgroupParent (Docker 26 and older)", "POST", create, `{"Image":"alpine","CgroupParent":"/"}`, "cgroup-parent-not-allowed"),
		deniedBody("start with a legacy HostConfig", "POST", start, `{"CgroupParent":"/"}`, "cgroup-parent-not-allowed"),
		deniedBody("update", "POST", update, `{"CgroupParent":"/"}`, "cgroup-parent-not-allowed"),
		denied("POST", "/v1.41/build?cgroupparent=%2F", 403, "cgroup-parent-not-allowed"),
		denied("POST", "/v1.41/build?t=x&cgroupparent=system.slice", 403, "cgroup-parent-not-allowed"),
		allowedBody("empty", "POST", create, hc(`"CgroupParent":""`)),
		allowed("POST", "/v1.41/build?cgroupparent="),
	})
	f := mustParse(t, "cg", "allow: [{method: \"*\", path: \"/*\"}]\ncreate: {cgroup_parent: true}\n")
	runCases(t, f, []reqCase{
		allowedBody("--cgroup-parent", "POST", create, hc(`"CgroupParent":"/"`)),
		allowed("POST", "/v1.41/build?cgroupparent=%2F"),
	})
}

func deviceRequest(fields string) string { return hc(`"DeviceRequests":[{` + fields + `}]`) }

// TestDeviceRequests: --gpus works; any other device request, the CDI
// driver above all (it injects any device its specs name), is refused.
func TestDeviceRequests(t *testing.T) {
	p := preset(t, "no-escalation")
	cdiDev := `"DeviceIDs":["vendor.com/class=disk"]`
	runCases(t, p, []reqCase{
		deniedBody("driver cdi", "POST", create, deviceRequest(`"Driver":"cdi",`+cdiDev), "devices-not-allowed"),
		deniedBody("driver cdi, lower-case keys", "POST", create, `{"hostconfig":{"devicerequests":[{"driver":"cdi","deviceids":["vendor.com/class=disk"]}]}}`, "devices-not-allowed"),
		deniedBody("capability cdi", "POST", create, deviceRequest(`"Capabilities":[["cdi"]],`+cdiDev), "devices-not-allowed"),
		deniedBody("capabilities gpu and cdi", "POST", create, deviceRequest(`"Capabilities":[["gpu","cdi"]]`), "devices-not-allowed"),
		deniedBody("a second capability set without gpu", "POST", create, deviceRequest(`"Capabilities":[["gpu"],["cdi"]]`), "devices-not-allowed"),
		deniedBody("an empty capability set matches any driver", "POST", create, deviceRequest(`"Capabilities":[[]],`+cdiDev), "devices-not-allowed"),
		deniedBody("no capabilities", "POST", create, deviceRequest(`"Driver":"nvidia","Count":-1`), "devices-not-allowed"),
		deniedBody("a CDI name through the nvidia driver", "POST", create, deviceRequest(`"Driver":"nvidia","Capabilities":[["gpu"]],`+cdiDev), "devices-not-allowed"),
		deniedBody("a CDI name through the default driver", "POST", create, deviceRequest(`"Capabilities":[["gpu"]],`+cdiDev), "devices-not-allowed"),
		deniedBody("a list in one ID", "POST", create, deviceRequest(`"Capabilities":[["gpu"]],"DeviceIDs":["0,1"]`), "devices-not-allowed"),
		deniedBody("driver nvidia.cdi", "POST", create, deviceRequest(`"Driver":"nvidia.cdi","Capabilities":[["gpu"]],"DeviceIDs":["0"]`), "devices-not-allowed"),
		deniedBody("another driver", "POST", create, deviceRequest(`"Driver":"vendor","Capabilities":[["gpu"]]`), "devices-not-allowed"),
		deniedBody("driver options", "POST", create, deviceRequest(`"Capabilities":[["gpu"]],"Options":{"a":"b"}`), "devices-not-allowed"),
		deniedBody("another capability", "POST", create, deviceRequest(`"Capabilities":[["gpu","tpu"]]`), "devices-not-allowed"),
		deniedBody("top level (Docker 26 and older)", "POST", create, `{"Image":"alpine","DeviceRequests":[{"Driver":"cdi"}]}`, "devices-not-allowed"),
		deniedBody("update", "POST", update, `{"DeviceRequests":[{"Driver":"cdi","DeviceIDs":["vendor.com/class=disk"]}]}`, "devices-not-allowed"),
		allowedBody("--gpus all", "POST", create, deviceRequest(`"Driver":"","Count":-1,"Capabilities":[["gpu"]],"Options":{}`)),
		allowedBody("--gpus 2", "POST", create, deviceRequest(`"Count":2,"Capabilities":[["gpu"]]`)),
		allowedBody("--gpus device=0,1", "POST", create, deviceRequest(`"DeviceIDs":["0","1"],"Capabilities":[["gpu"]]`)),
		allowedBody("--gpus by UUID", "POST", create, deviceRequest(`"DeviceIDs":["GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a","MIG-GPU-3a23c669/1/0","0:1"],"Capabilities":[["gpu"]]`)),
		allowedBody("--gpus driver=nvidia,capabilities=compute,utility", "POST", create, deviceRequest(`"Driver":"nvidia","Count":1,"Capabilities":[["compute","utility","gpu"]]`)),
		allowedBody("two GPU requests", "POST", create, hc(`"DeviceRequests":[{"Count":1,"Capabilities":[["gpu"]]},{"DeviceIDs":["1"],"Capabilities":[["gpu","nvidia"]]}]`)),
	})
	f := mustParse(t, "dev", "allow: [{method: \"*\", path: \"/*\"}]\ncreate: {devices: true}\n")
	runCases(t, f, []reqCase{
		allowedBody("driver cdi", "POST", create, deviceRequest(`"Driver":"cdi",`+cdiDev)),
	})
}

// TestSwarmCA: a client-chosen signing CA, or an external CA of its own,
// lets the client mint node certificates: a manager's among them, and a
// manager runs anything on this host.
func TestSwarmCA(t *testing.T) {
	const (
		init_ = "/v1.47/swarm/init"
		upd   = "/v1.47/swarm/update?version=8"
		pem   = `-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n`
	)
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		deniedBody("init with a signing CA", "POST", init_, `{"ListenAddr":"0.0.0.0:2377","Spec":{"CAConfig":{"SigningCACert":"`+pem+`","SigningCAKey":"k"}}}`, "swarm-not-allowed"),
		deniedBody("init with a signing CA key alone", "POST", init_, `{"Spec":{"CAConfig":{"SigningCAKey":"k"}}}`, "swarm-not-allowed"),
		deniedBody("init with a signing CA cert alone", "POST", init_, `{"Spec":{"CAConfig":{"SigningCACert":"`+pem+`"}}}`, "swarm-not-allowed"),
		deniedBody("init with an external CA", "POST", init_, `{"Spec":{"CAConfig":{"ExternalCAs":[{"Protocol":"cfssl","URL":"https://10.0.0.1/sign"}]}}}`, "swarm-not-allowed"),
		deniedBody("init, lower-case keys", "POST", init_, `{"spec":{"caconfig":{"signingcacert":"`+pem+`","signingcakey":"k"}}}`, "swarm-not-allowed"),
		deniedBody("update with a signing CA", "POST", upd, `{"CAConfig":{"SigningCACert":"`+pem+`","SigningCAKey":"k"}}`, "swarm-not-allowed"),
		deniedBody("update with an external CA", "POST", upd, `{"caconfig":{"externalcas":[{"protocol":"cfssl","url":"https://10.0.0.1/sign"}]}}`, "swarm-not-allowed"),
		allowedBody("init", "POST", init_, `{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"127.0.0.1","ForceNewCluster":false,"Spec":{"Orchestration":{},"Raft":{},"Dispatcher":{},"CAConfig":{},"TaskDefaults":{}}}`),
		allowedBody("init with --force-new-cluster", "POST", init_, `{"ListenAddr":"0.0.0.0:2377","ForceNewCluster":true}`),
		allowedBody("update rotating the CA", "POST", upd, `{"CAConfig":{"NodeCertExpiry":7776000000000000,"ForceRotate":1}}`),
		allowedBody("update with an empty external CA list", "POST", upd, `{"CAConfig":{"ExternalCAs":[]}}`),
	})
	f := mustParse(t, "swarm", "allow: [{method: \"*\", path: \"/*\"}]\ncreate: {swarm_ca: true}\n")
	runCases(t, f, []reqCase{
		allowedBody("init with a signing CA", "POST", init_, `{"Spec":{"CAConfig":{"SigningCACert":"`+pem+`","SigningCAKey":"k"}}}`),
	})
}
