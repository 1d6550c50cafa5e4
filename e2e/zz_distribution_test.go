//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The registry the suite pushes to: distribution's own, built from its Go
// module (no registry image can be pulled here), cached between runs.
const registryModule = "github.com/distribution/distribution/v3/cmd/registry@v3.1.2"

func registryBinary(t *testing.T) string {
	t.Helper()
	dir := "/var/cache/sockrelay-e2e/registry-v3.1.2"
	bin := filepath.Join(dir, "registry")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("building %s (once per machine)", registryModule)
	cmd := exec.Command("go", "install", registryModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the registry: %v\n%s", err, out)
	}
	return bin
}

// startRegistry serves a registry on a free loopback port, which dockerd
// trusts without TLS (127.0.0.0/8 is an insecure registry by default).
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := registryBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)), 0o644)
	cmd := exec.Command(bin, "serve", cfg)
	logf, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return addr
}

// make push to a real registry, then docker plugin install from it, as a
// user on another host would; the installed plugin serves a volume.
func TestPushAndInstallFromRegistry(t *testing.T) {
	addr := startRegistry(t)
	ref := addr + "/sockrelay:latest"
	// Whatever happens, put this tree's plugin back for the other tests.
	t.Cleanup(func() {
		dockerOut("plugin", "rm", "-f", ref)
		if out, err := exec.Command("make", "--no-print-directory", "-C", repoRoot(), "install").CombinedOutput(); err != nil {
			t.Errorf("make install after the registry test: %v\n%s", err, out)
		}
	})
	// docker plugin create refuses a rootfs that an installed plugin
	// already has, so the local install goes first.
	dockerOut("plugin", "disable", "-f", plugin)
	must(t, "plugin", "rm", "-f", plugin)

	push := exec.Command("make", "--no-print-directory", "-C", repoRoot(), "push", "REGISTRY="+addr)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("make push REGISTRY=%s: %v\n%s", addr, err, out)
	}
	must(t, "plugin", "rm", "-f", ref)

	out := must(t, append([]string{"plugin", "install", "--alias", plugin, "--grant-all-permissions", ref}, pluginSettings()...)...)
	if !strings.Contains(out, "Installed plugin") {
		t.Fatalf("docker plugin install: %s", out)
	}
	if got := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{.Enabled}} {{.PluginReference}}", plugin)); got != "true "+ref {
		t.Fatalf("installed plugin: got %q, want enabled from %s", got, ref)
	}
	vol := newVolume(t)
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
	removeVolume(vol)
}

// docker plugin upgrade to a new build from the registry keeps every
// volume, and a volume in use serves again under the new build.
func TestPluginUpgradeKeepsVolumes(t *testing.T) {
	addr := startRegistry(t)
	v1, v2 := addr+"/sockrelay:v1", addr+"/sockrelay:v2"
	t.Cleanup(func() {
		dockerOut("plugin", "rm", "-f", v1)
		dockerOut("plugin", "rm", "-f", v2)
		if out, err := exec.Command("make", "--no-print-directory", "-C", repoRoot(), "install").CombinedOutput(); err != nil {
			t.Errorf("make install after the upgrade test: %v\n%s", err, out)
		}
	})
	dockerOut("plugin", "disable", "-f", plugin)
	must(t, "plugin", "rm", "-f", plugin)
	// Two builds that differ (their version, unique to this run), pushed
	// as v1 and v2.
	stamp := fmt.Sprintf("e2e-%d-%d", os.Getpid(), time.Now().Unix())
	for _, tag := range []string{"v1", "v2"} {
		push := exec.Command("make", "--no-print-directory", "-C", repoRoot(), "push", "REGISTRY="+addr, "PLUGIN_TAG="+tag, "VERSION="+stamp+"-"+tag)
		if out, err := push.CombinedOutput(); err != nil {
			t.Fatalf("make push %s: %v\n%s", tag, err, out)
		}
		must(t, "plugin", "rm", "-f", addr+"/sockrelay:"+tag)
	}
	must(t, append([]string{"plugin", "install", "--alias", plugin, "--grant-all-permissions", v1}, pluginSettings()...)...)

	idle := newVolume(t, "perm=0600")
	used := newVolume(t, "policy=read-only")
	a := startUser(t, used)
	if r := dockerIn(nil, "exec", a, "docker", "ps"); r.err != nil {
		t.Fatalf("docker ps on v1: %s", r)
	}

	must(t, "plugin", "disable", "-f", plugin)
	// The CLI asks to confirm an upgrade to another tag: yes.
	if r := dockerIn([]byte("y\n"), "plugin", "upgrade", "--grant-all-permissions", plugin, v2); r.err != nil || !strings.Contains(r.stdout, "Upgraded plugin") {
		t.Fatalf("docker plugin upgrade: %s", r)
	}
	// dockerd keeps env settings across an upgrade but takes mounts from
	// the new build's config: sockdir.source is back at /var/run, and
	// must be set again (docs/swarm.md says so).
	if got := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{range .Config.Mounts}}{{if eq .Name \"sockdir\"}}{{.Source}}{{end}}{{end}}", plugin)); got != "/var/run" {
		t.Logf("sockdir.source after upgrade: %s (dockerd used to reset it to /var/run)", got)
	}
	must(t, append([]string{"plugin", "set", plugin}, pluginSettings()...)...)
	must(t, "plugin", "enable", plugin)
	if got := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{.PluginReference}}", plugin)); got != v2 {
		t.Fatalf("plugin after upgrade: got %s, want %s", got, v2)
	}
	eventually(t, 10*time.Second, func() error {
		if logs, _ := daemonLog(); !strings.Contains(logs, "version="+stamp+"-v2") {
			return fmt.Errorf("the daemon log has no start of the v2 build")
		}
		return nil
	})
	if st := status(t, idle); st["perm"] != "0600" {
		t.Fatalf("idle volume after upgrade: got %v, want it kept with perm 0600", st)
	}
	// The running container reaches this suite's daemon, which alone
	// knows the container itself.
	id := strings.TrimSpace(must(t, "inspect", "-f", "{{.Id}}", a))
	eventually(t, 15*time.Second, func() error {
		r := dockerIn(nil, "exec", a, "docker", "ps", "-q", "--no-trunc")
		if r.err != nil {
			return fmt.Errorf("docker ps in the running container after upgrade: %s", r)
		}
		if !strings.Contains(r.stdout, id) {
			return fmt.Errorf("docker ps in the running container after upgrade lists %q, not the container itself (%s): another daemon answered", r.stdout, id)
		}
		return nil
	})
	if st := status(t, used); st["policy"] != "read-only" || st["mounts"] != 1.0 {
		t.Fatalf("volume in use after upgrade: got %v", st)
	}
}
