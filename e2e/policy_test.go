//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// read-only: listing works, creating is refused with the sockrelay
// message.
func TestPolicyReadOnly(t *testing.T) {
	vol := newVolume(t, "policy=read-only")
	r := runClient(t, vol, "docker", "ps")
	if r.err != nil || !strings.HasPrefix(r.stdout, "CONTAINER ID") {
		t.Fatalf("docker ps under read-only: got\n%s", r)
	}
	r = runClient(t, vol, "docker", "run", "--rm", image, "srclient", "echo", "no")
	if r.err == nil || !strings.Contains(r.stderr, "sockrelay: read-only: POST /containers/create is not allowed by policy read-only") {
		t.Fatalf("docker run under read-only: got\n%s\nwant the sockrelay refusal", r)
	}
	// The counters of a served volume.
	a := startUser(t, vol)
	dockerIn(nil, "exec", a, "docker", "ps")
	dockerIn(nil, "exec", a, "docker", "rm", "-f", "nothing")
	if st := status(t, vol); st["mode"] != "policy" || st["policy"] != "read-only" || st["denied"] != 1.0 || st["requests"].(float64) < 3 {
		t.Fatalf("status: got %v, want policy read-only with 1 denial of at least 3 requests", st)
	}
	wantAudit(t, vol, `"decision":"deny"`, `"rule":"read-only"`, `"path":"/containers/create"`)
	// The daemon's connection of a finished exchange waits for the
	// volume's next client connection, and serves it.
	eventually(t, 10*time.Second, func() error {
		if n, _ := status(t, vol)["upstream_idle"].(float64); n < 1 {
			return fmt.Errorf("upstream_idle: got %v, want a daemon connection kept", n)
		}
		return nil
	})
	if r := dockerIn(nil, "exec", a, "docker", "ps"); r.err != nil || !strings.HasPrefix(r.stdout, "CONTAINER ID") {
		t.Fatalf("docker ps over a kept daemon connection: got\n%s", r)
	}
}

// no-escalation: a plain run and exec -it work; every escalation is
// refused, each with a message that names it.
func TestPolicyNoEscalation(t *testing.T) {
	vol := newVolume(t, "policy=no-escalation")
	r := runClient(t, vol, "docker", "run", "--rm", "--label", label, image, "srclient", "echo", "plain-ok")
	if r.err != nil || strings.TrimSpace(r.stdout) != "plain-ok" {
		t.Fatalf("plain docker run under no-escalation: got\n%s", r)
	}
	sib := uniqueName(t)
	must(t, "run", "-d", "--name", sib, "--label", label, image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", sib) })

	// exec -it needs a terminal all the way: script(1) gives the outer
	// CLI one, -t gives the inner.
	inner := fmt.Sprintf("docker run --rm -it --label %s -v %s:/var/run %s docker exec -it %s srclient echo exec-it-ok", label, vol, image, sib)
	out, err := exec.Command("script", "-qec", inner, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "exec-it-ok") {
		t.Fatalf("exec -it under no-escalation: %v\n%s", err, out)
	}
	r = runClient(t, vol, "docker", "exec", sib, "srclient", "echo", "exec-ok")
	if r.err != nil || strings.TrimSpace(r.stdout) != "exec-ok" {
		t.Fatalf("exec without -i under no-escalation: got\n%s", r)
	}

	denied := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--rm", "--privileged", image, "srclient", "echo"}, "no-privileged: HostConfig.Privileged (--privileged)"},
		{[]string{"run", "--rm", "-v", "/:/host", image, "srclient", "echo"}, "bind-not-allowed"},
		{[]string{"run", "--rm", "--mount", "type=bind,src=/etc,dst=/x", image, "srclient", "echo"}, "bind-not-allowed"},
		{[]string{"run", "--rm", "--userns=host", image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "--pid=host", image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "--network=host", image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "--cap-add", "SYS_ADMIN", image, "srclient", "echo"}, "cap-add-not-allowed"},
		{[]string{"run", "--rm", "--device", "/dev/null:/dev/x", image, "srclient", "echo"}, "devices-not-allowed"},
		{[]string{"run", "--rm", "--security-opt", "seccomp=unconfined", image, "srclient", "echo"}, "unconfined-not-allowed"},
		{[]string{"exec", "--privileged", sib, "srclient", "echo"}, "no-privileged"},
	}
	for _, d := range denied {
		r := runClient(t, vol, append([]string{"docker"}, d.args...)...)
		if r.err == nil || !strings.Contains(r.stderr, "Error response from daemon: sockrelay: "+d.want) {
			t.Errorf("docker %s under no-escalation: got\n%s\nwant a refusal containing %q", strings.Join(d.args, " "), r, d.want)
		}
	}
	// Nothing privileged got created along the way.
	if out := must(t, "ps", "-aq", "--filter", "label="+label, "--filter", "status=created"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left in created state: %s", out)
	}
	wantAudit(t, vol, `"rule":"no-privileged"`, `"decision":"deny"`)
}

// no-escalation against references that dockerd resolves, and against
// settings that make dockerd itself reach the host: a plugin named by its
// ID or an ID prefix, log drivers that connect where the client says, a
// cgroup parent, endpoint sysctls on network connect, and turning a plugin
// off. The plugin commands leave out -f, so that dockerd itself would
// refuse them should the policy let one through.
func TestPolicyNoEscalationReferences(t *testing.T) {
	vol := newVolume(t, "policy=no-escalation")
	id := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{.Id}}", plugin))
	if len(id) != 64 {
		t.Fatalf("plugin ID: got %q, want 64 hex digits", id)
	}
	sib := uniqueName(t)
	must(t, "run", "-d", "--name", sib, "--label", label, image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", sib) })
	byID := uniqueName(t)
	t.Cleanup(func() { removeVolume(byID) })

	denied := []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "-d", id[:12], byID}, "volume-driver-not-allowed"},
		{[]string{"volume", "create", "-d", id, byID}, "volume-driver-not-allowed"},
		{[]string{"volume", "create", "-d", plugin, byID}, "volume-driver-not-allowed"},
		{[]string{"run", "--rm", "--volume-driver", id[:12], "-v", byID + ":/s", image, "srclient", "echo"}, "volume-driver-not-allowed"},
		{[]string{"run", "--rm", "--mount", "type=volume,src=" + byID + ",dst=/s,volume-driver=" + id[:12], image, "srclient", "echo"}, "volume-driver-not-allowed"},
		{[]string{"run", "--rm", "--log-driver", "syslog", "--log-opt", "syslog-address=unix:///var/run/docker.sock", image, "srclient", "echo"}, "log-driver-not-allowed"},
		{[]string{"run", "--rm", "--log-opt", "syslog-address=udp://127.0.0.1:514", image, "srclient", "echo"}, "log-driver-not-allowed"},
		{[]string{"run", "--rm", "--cgroup-parent", "/", image, "srclient", "echo"}, "cgroup-parent-not-allowed"},
		{[]string{"network", "connect", "--driver-opt", "com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.forwarding=1", "bridge", sib}, "sysctls-not-allowed"},
		{[]string{"plugin", "disable", id[:12]}, "plugin-not-allowed"},
		{[]string{"plugin", "rm", plugin}, "plugin-not-allowed"},
	}
	for _, d := range denied {
		r := runClient(t, vol, append([]string{"docker"}, d.args...)...)
		if r.err == nil || !strings.Contains(r.stderr, "Error response from daemon: sockrelay: "+d.want) {
			t.Errorf("docker %s under no-escalation: got\n%s\nwant a refusal containing %q", strings.Join(d.args, " "), r, d.want)
		}
	}
	if out, _ := dockerOut("volume", "ls", "-q", "--filter", "name="+byID); strings.TrimSpace(out) != "" {
		t.Errorf("a volume of the plugin was created through the policy: %s", out)
	}

	// What stays allowed: the local driver, json-file with options, the
	// daemon's default log driver with size options.
	for _, args := range [][]string{
		{"run", "--rm", "--label", label, "--log-driver", "json-file", "--log-opt", "max-size=1m", image, "srclient", "echo", "ok"},
		{"run", "--rm", "--label", label, "--log-opt", "max-size=1m", "--mount", "type=volume,dst=/d,volume-driver=local", image, "srclient", "echo", "ok"},
	} {
		r := runClient(t, vol, append([]string{"docker"}, args...)...)
		if r.err != nil || strings.TrimSpace(r.stdout) != "ok" {
			t.Errorf("docker %s under no-escalation: got\n%s\nwant ok", strings.Join(args, " "), r)
		}
	}
	wantAudit(t, vol, `"rule":"volume-driver-not-allowed"`, `"path":"/volumes/create"`)
}

// no-escalation decides on the objects dockerd will act on, whatever
// reference names them: the host network by its ID or an ID prefix, a
// host-network container's namespace, a sockrelay volume someone else
// made, and exec, attach and cp into containers the policy would not have
// created (privileged, with a host bind, with an unfiltered socket), each
// by name, full ID and ID prefix. The same plain objects stay usable.
func TestPolicyNoEscalationResolves(t *testing.T) {
	vol := newVolume(t, "policy=no-escalation")
	relay := newVolume(t) // someone else's unfiltered socket
	hostNet := strings.TrimSpace(must(t, "network", "inspect", "-f", "{{.Id}}", "host"))

	// The admin's containers, made on the host.
	start := func(args ...string) (name, id string) {
		name = uniqueName(t)
		must(t, append(append([]string{"run", "-d", "--name", name, "--label", label}, args...), image, "srclient", "sleep", "3600")...)
		t.Cleanup(func() { dockerOut("rm", "-f", name) })
		return name, strings.TrimSpace(must(t, "inspect", "-f", "{{.Id}}", name))
	}
	// Privileged: created, not started (this test's machine may not
	// grant every capability); the policy refuses before dockerd would
	// say it is not running.
	privName := uniqueName(t)
	must(t, "create", "--name", privName, "--label", label, "--userns=host", "--privileged", image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", privName) })
	privID := strings.TrimSpace(must(t, "inspect", "-f", "{{.Id}}", privName))
	bindName, bindID := start("-v", "/etc:/hostetc:ro")
	sockName, _ := start("-v", relay+":/var/run")
	netName, _ := start("--userns=host", "--network=host")
	plainName, plainID := start()
	// A local volume someone made that binds a host directory.
	bindVol := uniqueName(t)
	must(t, "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=/etc", bindVol)
	t.Cleanup(func() { removeVolume(bindVol) })
	bindVolName, _ := start("-v", bindVol+":/hostetc:ro")

	denied := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--rm", "--network", hostNet[:12], image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "--network", hostNet, image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"network", "connect", hostNet[:10], plainName}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "--network", "container:" + netName, image, "srclient", "echo"}, "host-namespace-not-allowed"},
		{[]string{"run", "--rm", "-v", relay + ":/x", image, "srclient", "echo"}, "volume-driver-not-allowed"},
		{[]string{"run", "--rm", "--mount", "type=volume,src=" + relay + ",dst=/x", image, "srclient", "echo"}, "volume-driver-not-allowed"},
		{[]string{"exec", privName, "srclient", "echo"}, "no-privileged"},
		{[]string{"exec", privID, "srclient", "echo"}, "no-privileged"},
		{[]string{"exec", privID[:6], "srclient", "echo"}, "no-privileged"},
		{[]string{"exec", bindID[:8], "srclient", "echo"}, "bind-not-allowed"},
		{[]string{"cp", bindName + ":/hostetc/hostname", "/tmp/x"}, "bind-not-allowed"},
		{[]string{"exec", sockName, "docker", "ps"}, "volume-driver-not-allowed"},
		{[]string{"run", "--rm", "-v", bindVol + ":/x", image, "srclient", "echo"}, "bind-not-allowed"},
		{[]string{"run", "--rm", "--mount", "type=volume,src=" + bindVol + ",dst=/x", image, "srclient", "echo"}, "bind-not-allowed"},
		{[]string{"cp", bindVolName + ":/hostetc/hostname", "/tmp/x"}, "bind-not-allowed"},
	}
	for _, d := range denied {
		r := runClient(t, vol, append([]string{"docker"}, d.args...)...)
		if r.err == nil || !strings.Contains(r.stderr, "sockrelay: "+d.want) {
			t.Errorf("docker %s under no-escalation: got\n%s\nwant a refusal containing %q", strings.Join(d.args, " "), r, d.want)
		}
	}
	// What stays allowed, by every spelling.
	for _, args := range [][]string{
		{"exec", plainName, "srclient", "echo", "ok"},
		{"exec", plainID[:7], "srclient", "echo", "ok"},
		{"run", "--rm", "--label", label, "--network", "container:" + plainName, image, "srclient", "echo", "ok"},
		{"run", "--rm", "--label", label, "--network", "bridge", image, "srclient", "echo", "ok"},
	} {
		r := runClient(t, vol, append([]string{"docker"}, args...)...)
		if r.err != nil || strings.TrimSpace(r.stdout) != "ok" {
			t.Errorf("docker %s under no-escalation: got\n%s\nwant ok", strings.Join(args, " "), r)
		}
	}
	// The docker CLI shows a refused attach without its message.
	r := runClient(t, vol, "docker", "attach", bindName)
	if r.err == nil || !strings.Contains(r.stderr, "received 403") {
		t.Errorf("docker attach to a container with a host bind: got\n%s\nwant refused", r)
	}
	wantAudit(t, vol, `"rule":"bind-not-allowed"`, `"path":"/containers/`+bindName+`/attach"`)
	wantAudit(t, vol, `"rule":"no-privileged"`, `"path":"/containers/`)
}

// A policy file: enforced, changes picked up whole, a broken change
// refused loudly with the previous policy kept; a broken file fails Create
// with its line.
func TestPolicyFile(t *testing.T) {
	dir := "/etc/sockrelay/policies"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := strings.TrimSuffix(uniqueName(t), "-")
	file := filepath.Join(dir, name+".yaml")
	t.Cleanup(func() { os.Remove(file) })
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file+".tmp", []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	base := `allow:
  - {method: [GET, HEAD], path: "/_ping"}
  - {method: GET, path: "/version"}
  - {method: GET, path: "/containers/json"}
`
	write(base)
	vol := newVolume(t, "policy=file:"+name)
	a := startUser(t, vol)
	if r := dockerIn(nil, "exec", a, "docker", "ps"); r.err != nil {
		t.Fatalf("docker ps under the file policy: %s", r)
	}
	r := dockerIn(nil, "exec", a, "docker", "images")
	if r.err == nil || !strings.Contains(r.stderr, "sockrelay: ") {
		t.Fatalf("docker images before the change: got\n%s\nwant refused", r)
	}

	write(base + `  - {method: GET, path: "/images/json"}` + "\n")
	eventually(t, 15*time.Second, func() error {
		if r := dockerIn(nil, "exec", a, "docker", "images"); r.err != nil {
			return fmt.Errorf("docker images after the change: %s", r)
		}
		return nil
	})

	write("allow:\n  - {method: GET, path: \"no-slash\"}\n")
	eventually(t, 15*time.Second, func() error {
		st := status(t, vol)
		if msg, _ := st["policy_error"].(string); !strings.Contains(msg, "line 2") {
			return fmt.Errorf("status after a broken change: %v", st)
		}
		return nil
	})
	if r := dockerIn(nil, "exec", a, "docker", "images"); r.err != nil {
		t.Fatalf("docker images after a broken change: got\n%s\nwant the previous policy still in force", r)
	}

	bad := uniqueName(t)
	r = dockerIn(nil, "volume", "create", "-d", plugin, "-o", "policy=file:"+name, bad)
	if r.err == nil {
		removeVolume(bad)
		t.Fatal("create with a broken policy file: succeeded")
	}
	if !strings.Contains(r.stderr, file+": line 2") {
		t.Fatalf("create with a broken policy file: got %q, want the file and line", r.stderr)
	}
}

// wantAudit finds an audit line of the volume in the daemon's log that
// contains every part.
func wantAudit(t *testing.T, vol string, parts ...string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		logs, err := daemonLog()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(logs, "\n") {
			if !strings.Contains(line, `log=audit`) && !strings.Contains(line, `\"log\":\"audit\"`) {
				continue
			}
			if !strings.Contains(line, `\"volume\":\"`+vol+`\"`) {
				continue
			}
			ok := true
			for _, p := range parts {
				if !strings.Contains(line, strings.ReplaceAll(p, `"`, `\"`)) {
					ok = false
				}
			}
			if ok {
				return nil
			}
		}
		return fmt.Errorf("no audit line for %s with %v in the daemon log", vol, parts)
	})
}
