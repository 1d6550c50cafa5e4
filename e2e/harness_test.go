//go:build e2e

// Package e2e drives a real userns-remapped dockerd with the sockrelay
// plugin installed (make e2e does both). Nothing here is mocked: the
// containers are remapped and talk to the daemon through the plugin.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const (
	image  = "sockrelay-e2e:latest"
	prefix = "sre2e-"
	label  = "sockrelay-e2e=1"
)

var plugin = envOr("SOCKRELAY_PLUGIN", "sockrelay:latest")

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup failed:", err)
		fmt.Fprintln(os.Stderr, "run the suite with `make e2e`: it starts a userns-remapped dockerd of its own and installs the plugin into it")
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// The daemon of the run: scripts/e2e.sh starts one of the suite's own
// (scripts/engine.sh) and says where, so that no test touches a daemon it
// did not start.
var (
	daemonDir = os.Getenv("SOCKRELAY_E2E_DIR")
	engine    = os.Getenv("SOCKRELAY_E2E_ENGINE")
)

// daemonSocket is the daemon's socket on the host, and the plugin's
// default target.
func daemonSocket() string { return filepath.Join(daemonDir, "docker.sock") }

// pluginSettings point an installed plugin at the daemon's socket
// directory, for docker plugin install.
func pluginSettings() []string {
	return []string{"sockdir.source=" + daemonDir, "SOCKET_DIR=" + daemonDir}
}

// setup checks the daemon and the plugin, clears leftovers of earlier
// runs, and builds the test image offline.
func setup() error {
	if daemonDir == "" || engine == "" || !strings.HasPrefix(os.Getenv("DOCKER_HOST"), "unix://"+daemonDir) {
		return fmt.Errorf("SOCKRELAY_E2E_DIR, SOCKRELAY_E2E_ENGINE and DOCKER_HOST must name the suite's own daemon")
	}
	out, err := dockerOut("info", "--format", "{{json .SecurityOptions}}")
	if err != nil {
		return fmt.Errorf("no Docker daemon answers: %v", err)
	}
	if !strings.Contains(out, "name=userns") {
		return fmt.Errorf("the daemon does not run with --userns-remap")
	}
	out, err = dockerOut("plugin", "inspect", "-f", "{{.Enabled}}", plugin)
	if err != nil || strings.TrimSpace(out) != "true" {
		return fmt.Errorf("plugin %s is not installed and enabled (make install)", plugin)
	}
	cleanup()
	return buildImage()
}

// cleanup removes what this suite creates: labelled containers and
// networks, and volumes whose names start with the prefix.
func cleanup() {
	if ids, _ := dockerOut("service", "ls", "-q", "--filter", "label="+label); strings.TrimSpace(ids) != "" {
		dockerOut(append([]string{"service", "rm"}, strings.Fields(ids)...)...)
	}
	if ids, _ := dockerOut("ps", "-aq", "--filter", "label="+label); strings.TrimSpace(ids) != "" {
		dockerOut(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if ids, _ := dockerOut("network", "ls", "-q", "--filter", "label="+label); strings.TrimSpace(ids) != "" {
		dockerOut(append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	if names, _ := dockerOut("volume", "ls", "-q", "--filter", "name="+prefix); strings.TrimSpace(names) != "" {
		for _, n := range strings.Fields(names) {
			if strings.HasPrefix(n, prefix) {
				dockerOut("volume", "rm", "-f", n)
			}
		}
	}
}

// buildImage makes the test image offline (scripts/testimage.sh).
func buildImage() error {
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "testimage.sh"), image)
	cmd.Env = append(os.Environ(), "E2E_CLI_PLUGINS_REQUIRED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build the test image: %v: %s", err, out)
	}
	return nil
}

// result of one docker command.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

func dockerIn(stdin []byte, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return result{o.String(), e.String(), err}
}

func dockerOut(args ...string) (string, error) {
	r := dockerIn(nil, args...)
	if r.err != nil {
		return r.stdout, fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), r.err, strings.TrimSpace(r.stderr))
	}
	return r.stdout, nil
}

// must runs docker and fails the test on error.
func must(t *testing.T, args ...string) string {
	t.Helper()
	r := dockerIn(nil, args...)
	if r.err != nil {
		t.Fatalf("docker %s:\n%s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// newVolume creates a sockrelay volume with a unique name and removes it
// (and its users) at the end of the test.
func newVolume(t *testing.T, opts ...string) string {
	t.Helper()
	name := uniqueName(t)
	args := []string{"volume", "create", "-d", plugin}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	must(t, append(args, name)...)
	t.Cleanup(func() { removeVolume(name) })
	return name
}

func removeVolume(name string) {
	// Containers first: the daemon refuses to remove a volume in use.
	if ids, _ := dockerOut("ps", "-aq", "--filter", "volume="+name); strings.TrimSpace(ids) != "" {
		dockerOut(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	dockerOut("volume", "rm", "-f", name)
}

var counter int

func uniqueName(t *testing.T) string {
	counter++
	n := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(n) > 40 {
		n = n[:40]
	}
	return fmt.Sprintf("%s%s-%d-%d", prefix, n, os.Getpid()%10000, counter)
}

// runClient runs a remapped container with the volume at /var/run and
// returns its output.
func runClient(t *testing.T, vol string, args ...string) result {
	t.Helper()
	base := []string{"run", "--rm", "--label", label, "-v", vol + ":/var/run", image}
	return dockerIn(nil, append(base, args...)...)
}

// startUser starts a detached, labelled container with the volume that
// sleeps; the test's cleanup removes it.
func startUser(t *testing.T, vol string, extra ...string) string {
	t.Helper()
	name := uniqueName(t)
	args := append([]string{"run", "-d", "--name", name, "--label", label, "-v", vol + ":/var/run"}, extra...)
	must(t, append(args, image, "srclient", "sleep", "3600")...)
	t.Cleanup(func() { dockerOut("rm", "-f", name) })
	return name
}

// restartDaemon restarts the suite's dockerd (its containerd, and the
// containers, stay) with extra flags ("" for none).
func restartDaemon(t *testing.T, extra string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "engine.sh"), "restart", daemonDir)
	cmd.Env = append(cmd.Environ(), "ENGINE_DOCKERD_ARGS="+extra)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart dockerd %s: %v\n%s", extra, err, out)
	}
}

// pluginPids are the host pids of the plugin's processes in the suite's
// daemon, and never of another daemon's plugin.
func pluginPids(t *testing.T) []string {
	t.Helper()
	pids, err := pluginTaskPids()
	if err != nil || len(pids) == 0 {
		t.Fatalf("no running plugin task: %v", err)
	}
	return pids
}

// pluginTaskPids lists the running tasks of the suite's containerd's
// plugins.moby namespace: the plugin's processes.
func pluginTaskPids() ([]string, error) {
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", filepath.Join(daemonDir, "containerd", "containerd.sock")}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %v", strings.Join(args, " "), err)
		}
		return string(out), nil
	}
	// plugins.moby on 20.10; plugins.moby-<uid>.<gid> on Engine 29 with
	// userns-remap.
	nss, err := ctr("namespaces", "list", "-q")
	if err != nil {
		return nil, err
	}
	var pids []string
	for _, ns := range strings.Fields(nss) {
		if !strings.HasPrefix(ns, "plugins.moby") {
			continue
		}
		out, err := ctr("-n", ns, "tasks", "list")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(out, "\n")[1:] {
			if f := strings.Fields(l); len(f) >= 3 && f[2] == "RUNNING" {
				pids = append(pids, f[1])
			}
		}
	}
	return pids, nil
}

// daemonLog reads the suite's daemon's log (the plugin's output lands
// there).
func daemonLog() (string, error) {
	b, err := os.ReadFile(filepath.Join(daemonDir, "dockerd.log"))
	return string(b), err
}

// pingIn pings the daemon through the volume from inside container c.
func pingIn(t *testing.T, c string) result {
	t.Helper()
	return dockerIn(nil, "exec", c, "srclient", "ping", "/var/run/docker.sock")
}

func wantPing(t *testing.T, r result) {
	t.Helper()
	if r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
		t.Fatalf("ping through the volume: got\n%s\nwant 200 OK", r)
	}
}

// eventually retries f for up to d, for state that settles after a
// restart; it fails with f's last error.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// status returns the plugin's Status of a volume (docker volume inspect).
func status(t *testing.T, vol string) map[string]any {
	t.Helper()
	out := must(t, "volume", "inspect", "-f", "{{json .Status}}", vol)
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status of %s: %v: %s", vol, err, out)
	}
	return st
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}
