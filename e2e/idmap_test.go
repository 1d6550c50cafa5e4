//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostSocket is the daemon's socket as the host sees it.
func hostSocket(t *testing.T) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(daemonSocket(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// An idmap volume hands the container the daemon's own socket: the same
// inode, owned root:docker as seen inside, with no relay in between.
func TestIdmapDirect(t *testing.T) {
	vol := newVolume(t, "mode=idmap")
	host := hostSocket(t)

	r := runClient(t, vol, "srclient", "stat", "/var/run/docker.sock")
	if got, want := strings.TrimSpace(r.stdout), fmt.Sprintf("0:%d 0660", host.Gid); got != want {
		t.Fatalf("socket inside the container: got %q (%s), want %q (root:docker, the daemon's own)", got, r, want)
	}
	r = runClient(t, vol, "srclient", "ino", "/var/run/docker.sock")
	if got, want := strings.TrimSpace(r.stdout), fmt.Sprintf("%d:%d", host.Dev, host.Ino); got != want {
		t.Fatalf("inode inside the container: got %q (%s), want the host socket's %q", got, r, want)
	}
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
	r = runClient(t, vol, "docker", "run", "--rm", "--label", label, image, "srclient", "echo", "idmap-sibling")
	if r.err != nil || strings.TrimSpace(r.stdout) != "idmap-sibling" {
		t.Fatalf("docker run through idmap: got\n%s", r)
	}

	a := startUser(t, vol)
	wantPing(t, pingIn(t, a))
	st := status(t, vol)
	if st["mode"] != "idmap" || st["serving"] != true || st["idmap"] != "uid 0 100000 65536, gid 0 100000 65536" {
		t.Fatalf("status: got %v, want idmap serving with the remap range", st)
	}
	if _, ok := st["connections"]; ok {
		t.Fatalf("status of an idmap volume has relay counters: %v", st)
	}
	// The user namespace helper left no process behind.
	for _, pid := range pluginPids(t) {
		if out, err := exec.Command("pgrep", "-P", pid).Output(); err == nil {
			t.Fatalf("the plugin (pid %s) has child processes: %s", pid, out)
		}
	}
}

// A volume created without options is left to auto, which chooses idmap
// here (the suite's daemon is remapped, and its socket's filesystem
// supports idmapped mounts) and says why: the container gets the
// daemon's own socket.
func TestAutoChoosesIdmap(t *testing.T) {
	vol := newVolume(t)
	st := status(t, vol)
	if st["mode"] != "idmap" || st["mode_chosen"] != "auto: idmapped mounts work here and no uid, gid or perm was asked for" {
		t.Fatalf("status of a volume without options: got %v, want mode idmap, chosen by auto because idmapped mounts work", st)
	}
	host := hostSocket(t)
	r := runClient(t, vol, "srclient", "ino", "/var/run/docker.sock")
	if got, want := strings.TrimSpace(r.stdout), fmt.Sprintf("%d:%d", host.Dev, host.Ino); got != want {
		t.Fatalf("inode inside the container: got %q (%s), want the host socket's %q", got, r, want)
	}
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
}

// An owner option leaves auto only relay, which makes a socket of its own
// with that owner; the status says so. A named mode shows no choice.
func TestAutoWithOwnerIsRelay(t *testing.T) {
	vol := newVolume(t, "uid=1000")
	st := status(t, vol)
	if st["mode"] != "relay" || st["owner"] != "101000:100000" || !strings.HasPrefix(fmt.Sprint(st["mode_chosen"]), "auto: uid, gid or perm was asked for") {
		t.Fatalf("status of a volume with uid=1000: got %v, want mode relay owned by 101000:100000, chosen by auto for the uid", st)
	}
	r := runClient(t, vol, "srclient", "stat", "/var/run/docker.sock")
	if got := strings.TrimSpace(r.stdout); got != "1000:0 0660" {
		t.Fatalf("socket inside the container: got %q (%s), want \"1000:0 0660\"", got, r)
	}
	wantPing(t, dockerIn(nil, "run", "--rm", "--label", label, "--user", "1000", "-v", vol+":/var/run", image, "srclient", "ping", "/var/run/docker.sock"))
	if st := status(t, newVolume(t, "mode=relay")); st["mode"] != "relay" || st["mode_chosen"] != nil {
		t.Fatalf("status of a mode=relay volume: got %v, want relay and no mode_chosen", st)
	}
}

// mode=idmap refuses the owner options and says why.
func TestIdmapRefusesOwnerOptions(t *testing.T) {
	name := uniqueName(t)
	r := dockerIn(nil, "volume", "create", "-d", plugin, "-o", "mode=idmap", "-o", "perm=0600", name)
	if r.err == nil {
		removeVolume(name)
		t.Fatal("mode=idmap with perm: created, want refused")
	}
	if !strings.Contains(r.stderr, "option perm does not apply to mode=idmap") {
		t.Fatalf("got %q, want it to say perm does not apply to mode=idmap", r.stderr)
	}
}

// disable -f / enable: the plugin re-creates the idmapped mount, and a
// running container sees it again.
func TestIdmapPluginRestart(t *testing.T) {
	vol := newVolume(t, "mode=idmap")
	a := startUser(t, vol)
	wantPing(t, pingIn(t, a))
	must(t, "plugin", "disable", "-f", plugin)
	t.Cleanup(func() { dockerOut("plugin", "enable", plugin) })
	must(t, "plugin", "enable", plugin)
	eventually(t, 15*time.Second, func() error {
		if r := pingIn(t, a); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping after enable: %s", r)
		}
		return nil
	})
}

// After a dockerd restart (a new socket inode), a restarted container and
// a new one both reach the new daemon through the idmap volume.
func TestIdmapDaemonRestart(t *testing.T) {
	vol := newVolume(t, "mode=idmap")
	a := startUser(t, vol, "--restart", "always")
	wantPing(t, pingIn(t, a))
	before := hostSocket(t)
	restartDaemon(t, "")
	if after := hostSocket(t); after.Ino == before.Ino {
		t.Logf("note: the daemon kept its socket inode %d across the restart", after.Ino)
	}
	eventually(t, 60*time.Second, func() error {
		if r := pingIn(t, a); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping in the restarted container: %s", r)
		}
		return nil
	})
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
}

// With live-restore, containers and the plugin keep running while the
// daemon restarts and re-creates its socket: a relay volume dials the new
// socket, an idmap volume's mount is renewed by its watcher.
func TestLiveRestore(t *testing.T) {
	restartDaemon(t, "--live-restore")
	t.Cleanup(func() { restartDaemon(t, "") })
	if out := must(t, "info", "-f", "{{.LiveRestoreEnabled}}"); strings.TrimSpace(out) != "true" {
		t.Fatalf("live-restore is not on after the restart: %q", out)
	}
	relayVol := newVolume(t, "mode=relay")
	idmapVol := newVolume(t, "mode=idmap")
	a := startUser(t, relayVol)
	b := startUser(t, idmapVol)
	wantPing(t, pingIn(t, a))
	wantPing(t, pingIn(t, b))
	pids := pluginPids(t)
	before := hostSocket(t)

	restartDaemon(t, "--live-restore")
	if after := hostSocket(t); after.Ino == before.Ino {
		t.Fatalf("the daemon kept socket inode %d: this test would prove nothing", after.Ino)
	}
	if got := pluginPids(t); strings.Join(got, ",") != strings.Join(pids, ",") {
		t.Fatalf("plugin processes %v became %v: want the plugin kept running", pids, got)
	}
	for _, c := range []string{a, b} {
		eventually(t, 10*time.Second, func() error {
			if r := pingIn(t, c); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
				return fmt.Errorf("ping in %s after a live-restore restart: %s", c, r)
			}
			return nil
		})
	}
	if st := status(t, idmapVol); st["mounts"] != 1.0 || st["serving"] != true || st["remounts"] != 1.0 {
		t.Fatalf("idmap status after live-restore: got %v, want 1 mount, serving, renewed once", st)
	}
}
