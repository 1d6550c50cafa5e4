//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A remapped container reaches the daemon through the volume, while the
// plain bind of the host's socket is refused.
func TestPingThroughVolume(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))

	r := dockerIn(nil, "run", "--rm", "--label", label, "-v", daemonSocket()+":/var/run/docker.sock", image, "srclient", "ping", "/var/run/docker.sock")
	if r.err == nil || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("plain bind of the host socket: got\n%s\nwant permission denied", r)
	}

	// Inside the container the socket belongs to its root, mode 0660.
	r = runClient(t, vol, "srclient", "stat", "/var/run/docker.sock")
	if got := strings.TrimSpace(r.stdout); got != "0:0 0660" {
		t.Fatalf("socket owner inside the container: got %q (%v), want \"0:0 0660\"", got, r.err)
	}
	st := status(t, vol)
	if st["mode"] != "relay" || st["owner"] != "100000:100000" || st["socket"] != "docker.sock" || st["target"] != daemonSocket() {
		t.Fatalf("status: got %v, want relay mode owned by 100000:100000", st)
	}
}

// uid, gid and perm are written as seen in the container.
func TestOwnerOptions(t *testing.T) {
	vol := newVolume(t, "uid=1000", "gid=2000", "perm=0600", "socket=api.sock")
	r := runClient(t, vol, "srclient", "stat", "/var/run/api.sock")
	if got := strings.TrimSpace(r.stdout); got != "1000:2000 0600" {
		t.Fatalf("socket inside the container: got %q (%s), want \"1000:2000 0600\"", got, r)
	}
	if st := status(t, vol); st["owner"] != "101000:102000" || st["perm"] != "0600" {
		t.Fatalf("status: got %v, want owner 101000:102000 perm 0600", st)
	}
	// Another user of the container is refused. (The container's root is
	// not: 1000:2000 is mapped in its user namespace, so its
	// CAP_DAC_OVERRIDE applies, as on any host.)
	r = dockerIn(nil, "run", "--rm", "--label", label, "--user", "3000:3000", "-v", vol+":/var/run", image, "srclient", "ping", "/var/run/api.sock")
	if r.err == nil || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("user 3000 on a 1000:2000 0600 socket: got\n%s\nwant permission denied", r)
	}
	// The owner gets through.
	r = dockerIn(nil, "run", "--rm", "--label", label, "--user", "1000:2000", "-v", vol+":/var/run", image, "srclient", "ping", "/var/run/api.sock")
	wantPing(t, r)
}

// The docker CLI inside the container lists containers and starts a
// sibling.
func TestDockerCLIInside(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	r := runClient(t, vol, "docker", "ps")
	if r.err != nil || !strings.HasPrefix(r.stdout, "CONTAINER ID") {
		t.Fatalf("docker ps inside: got\n%s", r)
	}
	r = runClient(t, vol, "docker", "run", "--rm", "--label", label, image, "srclient", "echo", "sibling-ok")
	if r.err != nil || strings.TrimSpace(r.stdout) != "sibling-ok" {
		t.Fatalf("sibling started from inside: got\n%s\nwant sibling-ok", r)
	}
}

// Piped stdin crosses two relays' worth of half-close: host → client
// container → sibling's stdin, and the output all the way back.
func TestPipedStdin(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	raw := make([]byte, 96<<10)
	rand.Read(raw)
	payload := []byte(hex.EncodeToString(raw) + "\n")
	r := dockerIn(payload, "run", "-i", "--rm", "--label", label, "-v", vol+":/var/run", image,
		"docker", "run", "-i", "--rm", "--label", label, image, "srclient", "cat")
	if r.err != nil || r.stdout != string(payload) {
		t.Fatalf("piped stdin: got %d bytes (err %v, stderr %q), want the %d bytes sent", len(r.stdout), r.err, r.stderr, len(payload))
	}
}

// docker exec without -i: the CLI half-closes at once and must still get
// the output.
func TestExecWithoutStdin(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	sib := uniqueName(t)
	must(t, "run", "-d", "--name", sib, "--label", label, image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", sib) })
	for i := 0; i < 5; i++ {
		r := runClient(t, vol, "docker", "exec", sib, "srclient", "echo", "exec-ok")
		if r.err != nil || strings.TrimSpace(r.stdout) != "exec-ok" {
			t.Fatalf("exec without -i, try %d: got\n%s\nwant exec-ok", i, r)
		}
	}
	// And a log stream that ends.
	r := runClient(t, vol, "docker", "logs", sib)
	if r.err != nil {
		t.Fatalf("docker logs inside: %s", r)
	}
}

// Two containers share one volume; stopping one leaves the other working.
func TestSharedVolume(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	a := startUser(t, vol)
	b := startUser(t, vol)
	wantPing(t, pingIn(t, a))
	wantPing(t, pingIn(t, b))
	if st := status(t, vol); st["mounts"] != 2.0 || st["serving"] != true {
		t.Fatalf("status with two users: got %v, want 2 mounts, serving", st)
	}
	must(t, "stop", "-t", "1", a)
	wantPing(t, pingIn(t, b))
	if st := status(t, vol); st["mounts"] != 1.0 {
		t.Fatalf("status after one user left: got %v, want 1 mount", st)
	}
	must(t, "stop", "-t", "1", b)
	if st := status(t, vol); st["mounts"] != 0.0 || st["serving"] != false {
		t.Fatalf("status with no users: got %v, want 0 mounts, not serving", st)
	}
}

// docker cp into a running container mounts and unmounts with that
// container's own ID: its relay must survive.
func TestDockerCpKeepsRelay(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	a := startUser(t, vol)
	f := filepath.Join(t.TempDir(), "payload")
	os.WriteFile(f, []byte("hello"), 0o644)
	must(t, "cp", f, a+":/tmp/payload")
	must(t, "cp", a+":/tmp/payload", filepath.Join(t.TempDir(), "back"))
	wantPing(t, pingIn(t, a))
	if st := status(t, vol); st["mounts"] != 1.0 || st["serving"] != true {
		t.Fatalf("status after docker cp: got %v, want 1 mount, serving", st)
	}
}

// A volume in use cannot be removed, and keeps working.
func TestRemoveInUseRefused(t *testing.T) {
	vol := newVolume(t)
	a := startUser(t, vol)
	r := dockerIn(nil, "volume", "rm", vol)
	if r.err == nil || !strings.Contains(r.stderr, "in use") {
		t.Fatalf("volume rm while in use: got\n%s\nwant refused as in use", r)
	}
	wantPing(t, pingIn(t, a))
	must(t, "rm", "-f", a)
	must(t, "volume", "rm", vol)
	if r := dockerIn(nil, "volume", "inspect", vol); r.err == nil {
		t.Fatalf("volume still there after rm: %s", r)
	}
}

// Bad names and options fail Create with a clear message and leave
// nothing behind, neither in the daemon nor in the plugin.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		opts []string
		want string
	}{
		{name: "bad/name", want: "volume name"},
		{name: "-dash", want: "volume name"},
		{name: strings.Repeat("x", 101), want: "volume name"},
		{opts: []string{"bogus=1"}, want: "unknown option \"bogus\"; valid options are uid, gid, perm, socket, target, mode, policy"},
		{opts: []string{"uid=abc"}, want: "option uid: want a number"},
		{opts: []string{"uid=70000"}, want: "option uid: want a number from 0 to 65535"},
		{opts: []string{"perm=999"}, want: "option perm: want octal"},
		{opts: []string{"perm=0400"}, want: "option perm"},
		{opts: []string{"socket=../x"}, want: "option socket"},
		{opts: []string{"target=/etc/shadow"}, want: "option target: want the absolute path of a socket below " + daemonDir},
		{opts: []string{"target=" + daemonDir + "/../../etc/shadow"}, want: "option target"},
		{opts: []string{"target=" + daemonDir + "/nonexistent.sock"}, want: "option target: no socket at " + daemonDir + "/nonexistent.sock"},
		{opts: []string{"mode=bogus"}, want: "option mode: want one of auto, relay, idmap, policy"},
		{opts: []string{"uid=" + strings.Repeat("1", 4096)}, want: "value longer than"},
	}
	for _, c := range cases {
		name := c.name
		if name == "" {
			name = uniqueName(t)
		}
		args := []string{"volume", "create", "-d", plugin}
		for _, o := range c.opts {
			args = append(args, "-o", o)
		}
		r := dockerIn(nil, append(append(args, "--"), name)...)
		if r.err == nil {
			removeVolume(name)
			t.Errorf("create %q %v: succeeded, want an error containing %q", name, c.opts, c.want)
			continue
		}
		if !strings.Contains(r.stderr, "VolumeDriver.Create") || !strings.Contains(r.stderr, c.want) {
			t.Errorf("create %q %v: got %q, want it to contain %q", name, c.opts, strings.TrimSpace(r.stderr), c.want)
		}
		for _, o := range c.opts {
			if _, v, _ := strings.Cut(o, "="); len(v) > 3 && strings.Contains(r.stderr, v) && !strings.HasPrefix(c.want, "option target") {
				t.Errorf("create %v: the error echoes the option value: %q", c.opts, r.stderr)
			}
		}
		if r := dockerIn(nil, "volume", "inspect", name); r.err == nil {
			t.Errorf("create %q %v failed but the volume exists", name, c.opts)
			removeVolume(name)
		}
	}
	// Nothing of it reached the plugin's own list either.
	out := must(t, "volume", "ls", "-q", "--filter", "driver="+plugin)
	for _, c := range cases {
		if c.name != "" && strings.Contains(out, c.name) {
			t.Errorf("plugin lists rejected volume %q", c.name)
		}
	}
}

// --mount with volume-driver creates the volume on first use.
func TestMountCreatesOnFirstUse(t *testing.T) {
	vol := uniqueName(t)
	t.Cleanup(func() { removeVolume(vol) })
	r := dockerIn(nil, "run", "--rm", "--label", label,
		"--mount", "type=volume,src="+vol+",dst=/var/run,volume-driver="+plugin,
		image, "srclient", "ping", "/var/run/docker.sock")
	wantPing(t, r)
	if got := strings.TrimSpace(must(t, "volume", "inspect", "-f", "{{.Driver}}", vol)); got != plugin {
		t.Fatalf("driver of the volume made on first use: got %q, want %q", got, plugin)
	}
}

// A container cannot change anything in its volume, in any mode: not
// its socket (which its root owns: a relay's is chowned to it, and an
// idmap volume's is the host's docker.sock seen through the remap), nor
// the directory. Every volume is a read-only, nosuid, nodev, noexec
// mount on the container's side, and after every attempt the socket (for
// idmap: the host's own docker.sock) has the owner, mode and times it had.
func TestContainerCannotTamper(t *testing.T) {
	for _, mode := range []string{"relay", "policy", "idmap"} {
		t.Run(mode, func(t *testing.T) {
			opts := []string{"mode=relay"}
			switch mode {
			case "idmap":
				opts = []string{"mode=idmap"}
			case "policy":
				opts = []string{"policy=no-escalation"}
			}
			vol := newVolume(t, opts...)
			a := startUser(t, vol)
			hostBefore := hostSocket(t)
			// Asking for a writable mount changes nothing.
			rw := uniqueName(t)
			must(t, "run", "-d", "--name", rw, "--label", label, "-v", vol+":/srv/rw:rw",
				"--mount", "type=volume,src="+vol+",dst=/srv/mount,readonly=false", image, "srclient", "sleep", "3600")
			t.Cleanup(func() { dockerOut("rm", "-f", rw) })
			for _, p := range []string{"/srv/rw", "/srv/mount"} {
				r := dockerIn(nil, "exec", rw, "srclient", "attack", p, "docker.sock")
				for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
					if !strings.Contains(l, " denied: ") {
						t.Errorf("attack through %s asked writable: %q succeeded", p, l)
					}
				}
			}
			inside := strings.TrimSpace(must(t, "exec", a, "srclient", "stat", "/var/run/docker.sock"))
			r := dockerIn(nil, "exec", a, "srclient", "attack", "/var/run", "docker.sock")
			if r.err != nil {
				t.Fatalf("attack: %s", r)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 13 {
				t.Fatalf("attack: got %d results, want 13:\n%s", len(lines), r.stdout)
			}
			for _, l := range lines {
				if !strings.Contains(l, " denied: ") {
					t.Errorf("attack %q succeeded", l)
				}
			}
			hostAfter := hostSocket(t)
			if hostAfter.Mode != hostBefore.Mode || hostAfter.Uid != hostBefore.Uid || hostAfter.Gid != hostBefore.Gid || hostAfter.Mtim != hostBefore.Mtim || hostAfter.Ctim != hostBefore.Ctim {
				restoreHostSocket(hostBefore)
				t.Fatalf("the host's docker.sock changed: mode %o %d:%d, was %o %d:%d", hostAfter.Mode, hostAfter.Uid, hostAfter.Gid, hostBefore.Mode, hostBefore.Uid, hostBefore.Gid)
			}
			if got := strings.TrimSpace(must(t, "exec", a, "srclient", "stat", "/var/run/docker.sock")); got != inside {
				t.Fatalf("socket after the attack: got %q, want %q as before", got, inside)
			}
			wantPing(t, pingIn(t, a))
			for _, p := range mountPoints(mode) {
				opts := strings.TrimSpace(must(t, "exec", a, "srclient", "mountopts", p))
				for _, want := range []string{"ro", "nosuid", "nodev", "noexec"} {
					if !slices.Contains(strings.Split(opts, ","), want) {
						t.Errorf("mount %s in the container: options %q, want %s", p, opts, want)
					}
				}
			}
		})
	}
}

// mountPoints are the mounts a container gets from a volume at /var/run.
func mountPoints(mode string) []string {
	if mode == "idmap" {
		return []string{"/var/run", "/var/run/docker.sock"}
	}
	return []string{"/var/run"}
}

// restoreHostSocket puts back the owner and mode of the host's socket
// after a failed test changed them, so that the rest of the suite runs.
func restoreHostSocket(st syscall.Stat_t) {
	os.Chown(daemonSocket(), int(st.Uid), int(st.Gid))
	os.Chmod(daemonSocket(), os.FileMode(st.Mode&0o777))
}

// Compose 1.29 runs the example of examples/compose (driver
// sockrelay:latest), twice: the second run is where a bare driver name
// fails.
func TestCompose(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is not installed: %v", err)
	}
	if plugin != "sockrelay:latest" {
		t.Fatalf("the Compose example names driver sockrelay:latest; this run's plugin is %s", plugin)
	}
	file := filepath.Join(repoRoot(), "examples", "compose", "docker-compose.yml")
	project := strings.ReplaceAll(strings.TrimSuffix(uniqueName(t), "-"), "-", "")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(compose, append([]string{"-f", file, "-p", project}, args...)...)
		cmd.Env = append(os.Environ(), "SOCKRELAY_IMAGE="+image)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	t.Cleanup(func() {
		run("down", "-v")
		removeVolume(project + "_dsock")
	})
	for i := 0; i < 2; i++ {
		out, err := run("run", "--rm", "ci")
		if err != nil {
			t.Fatalf("compose run, round %d: %v\n%s", i, err, out)
		}
		if !strings.Contains(out, project+"_ci_run") {
			t.Fatalf("compose run, round %d: docker ps inside did not list itself:\n%s", i, out)
		}
	}
	if got := strings.TrimSpace(must(t, "volume", "inspect", "-f", "{{.Driver}}", project+"_dsock")); got != plugin {
		t.Fatalf("compose volume driver: got %q, want %q", got, plugin)
	}
	if out, err := run("down", "-v"); err != nil {
		t.Fatalf("compose down -v: %v\n%s", err, out)
	}
	if r := dockerIn(nil, "volume", "inspect", project+"_dsock"); r.err == nil {
		t.Fatalf("compose down -v left the volume")
	}
}

// Compose v2 (docker compose, the CLI plugin of make engine) brings the
// example up twice and takes it down with down -v, with the driver named
// bare (sockrelay) and with its tag (sockrelay:latest).
func TestComposeV2(t *testing.T) {
	if plugin != "sockrelay:latest" {
		t.Fatalf("the Compose example names driver sockrelay; this run's plugin is %s", plugin)
	}
	if r := dockerIn(nil, "compose", "version"); r.err != nil {
		t.Fatalf("docker compose (v2) is not there; make engine builds it: %s", r)
	}
	file := filepath.Join(repoRoot(), "examples", "compose", "docker-compose.yml")
	for _, driver := range []string{"sockrelay", "sockrelay:latest"} {
		t.Run(driver, func(t *testing.T) {
			project := strings.Map(func(r rune) rune {
				if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
					return r
				}
				return -1
			}, uniqueName(t))
			run := func(args ...string) (string, error) {
				cmd := exec.Command("docker", append([]string{"compose", "-f", file, "-p", project}, args...)...)
				cmd.Env = append(os.Environ(), "SOCKRELAY_IMAGE="+image, "SOCKRELAY_DRIVER="+driver)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				err := cmd.Run()
				return out.String(), err
			}
			t.Cleanup(func() {
				run("down", "-v")
				removeVolume(project + "_dsock")
			})
			for i := 0; i < 2; i++ {
				out, err := run("up", "--abort-on-container-exit", "--exit-code-from", "ci")
				if err != nil {
					t.Fatalf("compose up, round %d: %v\n%s", i, err, out)
				}
				if !strings.Contains(out, project+"-ci-1") {
					t.Fatalf("compose up, round %d: docker ps inside did not list itself:\n%s", i, out)
				}
			}
			if got := strings.TrimSpace(must(t, "volume", "inspect", "-f", "{{.Driver}}", project+"_dsock")); got != plugin {
				t.Fatalf("compose volume driver: got %q, want %q", got, plugin)
			}
			if out, err := run("down", "-v"); err != nil {
				t.Fatalf("compose down -v: %v\n%s", err, out)
			}
			if r := dockerIn(nil, "volume", "inspect", project+"_dsock"); r.err == nil {
				t.Fatalf("compose down -v left the volume")
			}
		})
	}
}

// disable -f and enable: the plugin is restarted, dockerd replays no
// Mount, and the running container's socket comes back.
func TestPluginRestartRestoresSocket(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	a := startUser(t, vol)
	wantPing(t, pingIn(t, a))
	must(t, "plugin", "disable", "-f", plugin)
	t.Cleanup(func() { dockerOut("plugin", "enable", plugin) })
	if r := pingIn(t, a); r.err == nil && strings.HasPrefix(r.stdout, "200") {
		t.Fatalf("ping while the plugin is disabled: got 200, want a failure")
	}
	must(t, "plugin", "enable", plugin)
	eventually(t, 15*time.Second, func() error {
		if r := pingIn(t, a); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping after enable: %s", r)
		}
		return nil
	})
	if st := status(t, vol); st["mounts"] != 1.0 || st["serving"] != true {
		t.Fatalf("status after enable: got %v, want 1 mount, serving", st)
	}
}

// After a dockerd restart the volume is listed, a container with a
// restart policy gets its socket back (its Mount comes before the API is
// up), and new containers can use the volume.
func TestDaemonRestart(t *testing.T) {
	vol := newVolume(t, "mode=relay")
	a := startUser(t, vol, "--restart", "always")
	wantPing(t, pingIn(t, a))

	restartDaemon(t, "")
	eventually(t, 60*time.Second, func() error {
		out, err := dockerOut("volume", "ls", "-q", "--filter", "name="+vol)
		if err != nil || strings.TrimSpace(out) != vol {
			return fmt.Errorf("volume not listed after restart: %q %v", out, err)
		}
		return nil
	})
	eventually(t, 60*time.Second, func() error {
		if r := pingIn(t, a); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping in the restarted container: %s", r)
		}
		return nil
	})
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
}

// make install over an installed plugin keeps its volumes: the daemon's
// records and the plugin's state agree, and the volume serves again.
func TestReinstallKeepsVolumes(t *testing.T) {
	vol := newVolume(t, "perm=0600")
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot(), "install")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	if st := status(t, vol); st["perm"] != "0600" {
		t.Fatalf("status after reinstall: got %v, want the volume with perm 0600", st)
	}
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
}

// The plugin's settings: LOG_FORMAT=json and LOG_LEVEL=debug take effect
// (docker plugin set, while disabled), and sockrelay logs its version.
func TestPluginLogSettings(t *testing.T) {
	setAndEnable := func(kv ...string) {
		t.Helper()
		must(t, "plugin", "disable", "-f", plugin)
		must(t, append([]string{"plugin", "set", plugin}, kv...)...)
		must(t, "plugin", "enable", plugin)
	}
	setAndEnable("LOG_FORMAT=json", "LOG_LEVEL=debug")
	t.Cleanup(func() { setAndEnable("LOG_FORMAT=text", "LOG_LEVEL=info") })
	vol := newVolume(t, "mode=relay") // its connections are logged at debug
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
	eventually(t, 10*time.Second, func() error {
		logs, err := daemonLog()
		if err != nil {
			return err
		}
		var created, debug, version bool
		for _, l := range strings.Split(logs, "\n") {
			created = created || strings.Contains(l, `\"msg\":\"volume created\"`) && strings.Contains(l, `\"volume\":\"`+vol+`\"`)
			debug = debug || strings.Contains(l, `\"level\":\"DEBUG\"`) && strings.Contains(l, `\"msg\":\"connection closed\"`)
			version = version || strings.Contains(l, `\"msg\":\"sockrelay starting\"`) && strings.Contains(l, `\"version\":`)
		}
		if !created || !debug || !version {
			return fmt.Errorf("JSON log lines in the daemon log: volume created %v, debug %v, version %v", created, debug, version)
		}
		return nil
	})
}
