//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/state"
)

// stateDir is the host path of the plugin's state directory.
func stateDir(t *testing.T) string {
	t.Helper()
	id := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{.Id}}", plugin))
	root := strings.TrimSpace(must(t, "info", "-f", "{{.DockerRootDir}}"))
	return filepath.Join(root, "plugins", id, "propagated-mount", ".sockrelay")
}

// recordPath is the host path of a volume's record.
func recordPath(t *testing.T, vol string) string {
	return filepath.Join(stateDir(t), state.RecordsDir, vol+".json")
}

// restartPlugin disables and enables the plugin, running damage between,
// and returns what the plugin logged from the disable on.
func restartPlugin(t *testing.T, damage func()) func() string {
	t.Helper()
	before, _ := daemonLog()
	must(t, "plugin", "disable", "-f", plugin)
	t.Cleanup(func() { dockerOut("plugin", "enable", plugin) })
	damage()
	start := time.Now()
	must(t, "plugin", "enable", plugin)
	t.Logf("enable after the damage: %v", time.Since(start).Round(time.Millisecond))
	return func() string {
		after, _ := daemonLog()
		return after[len(before):]
	}
}

// logHas waits for a line of the plugin's log (from logSince) that holds
// every part.
func logHas(t *testing.T, logSince func() string, parts ...string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		for _, l := range strings.Split(logSince(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return nil
			}
		}
		return fmt.Errorf("no line of the plugin's log holds all of %q", parts)
	})
}

// waitPing waits until container c reaches the daemon through its volume.
func waitPing(t *testing.T, c string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		if r := pingIn(t, c); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping in %s: %s", c, r)
		}
		return nil
	})
}

// One record each garbled, truncated, deleted and made mode 000, every
// volume in use by a running container, and the plugin restarted: the
// plugin starts; the untouched volume and the mode-000 one (the plugin is
// root) are served at once; each damaged record is moved aside, logged,
// and rebuilt from the daemon's options, with its options (perm=0600
// stays 0600), so that every running container has its socket again, and
// the Status says what happened. The rebuilt volumes then work as any.
func TestDamagedRecords(t *testing.T) {
	keep := newVolume(t, "mode=relay")
	garbled := newVolume(t, "mode=relay", "perm=0600")
	truncated := newVolume(t, "mode=relay")
	deleted := newVolume(t)
	mode000 := newVolume(t, "mode=relay")
	vols := []string{keep, garbled, truncated, deleted, mode000}
	users := map[string]string{}
	for _, v := range vols {
		users[v] = startUser(t, v)
		wantPing(t, pingIn(t, users[v]))
	}
	chosen := status(t, deleted)["mode"]

	logSince := restartPlugin(t, func() {
		if err := os.WriteFile(recordPath(t, garbled), []byte("\x00\x01 not json at all"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(recordPath(t, truncated), 25); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(recordPath(t, deleted)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(recordPath(t, mode000), 0); err != nil {
			t.Fatal(err)
		}
	})
	for _, v := range vols {
		waitPing(t, users[v])
	}
	for _, v := range []string{keep, mode000} {
		if st := status(t, v); st["rebuilt"] != nil || st["record"] != nil || st["serving"] != true || st["mounts"] != 1.0 {
			t.Errorf("%s: got %v, want served as before, nothing rebuilt", v, st)
		}
	}
	for v, why := range map[string]string{garbled: "could not be read", truncated: "could not be read", deleted: "record is missing"} {
		st := status(t, v)
		rebuilt, _ := st["rebuilt"].(string)
		if !strings.Contains(rebuilt, why) || !strings.Contains(rebuilt, "rebuilt at") || st["serving"] != true || st["mounts"] != 1.0 {
			t.Errorf("%s: got %v, want served, one mount, rebuilt saying %q", v, st, why)
		}
		logHas(t, logSince, "volume record lost", v, why)
		logHas(t, logSince, "volume record rebuilt from the daemon", v)
		t.Logf("%s: rebuilt: %s", v, rebuilt)
	}
	if st := status(t, garbled); st["perm"] != "0600" {
		t.Errorf("%s rebuilt: got perm %v, want the 0600 it was created with", garbled, st["perm"])
	}
	if st := status(t, deleted); st["mode"] != chosen || st["mode_chosen"] == nil {
		t.Errorf("%s rebuilt: got mode %v (%v), want %v chosen by auto again", deleted, st["mode"], st["mode_chosen"], chosen)
	}
	for _, v := range []string{garbled, truncated} {
		aside, _ := filepath.Glob(recordPath(t, v) + ".corrupt-*")
		if len(aside) != 1 {
			t.Errorf("%s: records moved aside: got %v, want one", v, aside)
		}
	}
	// The containers go: their Unmounts end the mounts the rebuilt records
	// count, and the volumes serve new containers as any.
	for _, v := range []string{garbled, deleted} {
		must(t, "rm", "-f", users[v])
		eventually(t, 15*time.Second, func() error {
			if st := status(t, v); st["mounts"] != 0.0 || st["serving"] != false {
				return fmt.Errorf("%s after its container went: got %v, want no mount", v, st)
			}
			return nil
		})
		wantPing(t, runClient(t, v, "srclient", "ping", "/var/run/docker.sock"))
	}
}

// A lost record the daemon's options cannot rebuild (the socket it
// targets is gone): the volume stays listed, its Status and the log say
// what happened and what to do, a container that asks for it is told,
// and docker volume rm removes it.
func TestLostRecordNotRebuilt(t *testing.T) {
	sock := filepath.Join(daemonDir, uniqueName(t)+".sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vol := newVolume(t, "mode=relay", "target="+sock)
	logSince := restartPlugin(t, func() {
		ln.Close() // removes the socket
		if err := os.WriteFile(recordPath(t, vol), []byte(`{"version":1,"volume":{"name":"`), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	var st map[string]any
	eventually(t, 30*time.Second, func() error {
		st = status(t, vol)
		if todo, _ := st["what_to_do"].(string); !strings.Contains(todo, "could not be rebuilt") {
			return fmt.Errorf("status: got %v, want what_to_do saying it could not be rebuilt", st)
		}
		return nil
	})
	todo := st["what_to_do"].(string)
	if st["record"] != "lost" || !strings.Contains(st["error"].(string), "could not be read") || !strings.Contains(todo, "no socket at "+sock) ||
		!strings.Contains(todo, "docker volume rm "+vol) {
		t.Errorf("status: got %v, want the record lost, why, and what to do", st)
	}
	t.Logf("status: %v", st)
	logHas(t, logSince, "volume record lost and not rebuilt", vol, "docker volume rm "+vol)
	r := runClient(t, vol, "srclient", "ping", "/var/run/docker.sock")
	if r.err == nil || !strings.Contains(r.stderr, "record of this volume is lost") || !strings.Contains(r.stderr, "docker volume rm "+vol) {
		t.Errorf("run with the lost volume: got\n%s\nwant a refusal saying the record is lost and what to do", r)
	}
	t.Logf("run with the lost volume: %s", strings.TrimSpace(r.stderr))
	must(t, "volume", "rm", vol)
	if out, _ := dockerOut("volume", "ls", "-q", "--filter", "name="+vol); strings.TrimSpace(out) != "" {
		t.Errorf("volume ls after rm: got %q, want nothing", out)
	}
}

// The whole records directory garbled (a file in its place): the plugin
// starts, moves it aside and says so, and rebuilds every volume whose
// directory remains from the daemon, running containers included.
func TestRecordsDirCorrupt(t *testing.T) {
	a := newVolume(t, "mode=relay")
	b := newVolume(t, "policy=read-only")
	ca, cb := startUser(t, a), startUser(t, b)
	wantPing(t, pingIn(t, ca))
	logSince := restartPlugin(t, func() {
		recs := filepath.Join(stateDir(t), state.RecordsDir)
		if err := os.RemoveAll(recs); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(recs, []byte("garbage where the records were"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	waitPing(t, ca)
	waitPing(t, cb)
	logHas(t, logSince, "plugin state unreadable; moved aside", state.RecordsDir+".corrupt-")
	for _, v := range []string{a, b} {
		st := status(t, v)
		if rebuilt, _ := st["rebuilt"].(string); !strings.Contains(rebuilt, "record is missing") || st["mounts"] != 1.0 {
			t.Errorf("%s: got %v, want rebuilt, one mount", v, st)
		}
	}
	if st := status(t, b); st["mode"] != "policy" || st["policy"] != "read-only" {
		t.Errorf("%s: got %v, want policy read-only again", b, st)
	}
}

// The way back to a build from before records: sockrelay state export
// writes state.json from the records, as that build reads it; a build
// with records that finds it migrates it again (it is the newest state),
// keeping it as state.json.migrated, and every volume and running
// container carries on.
func TestStateExportAndMigrate(t *testing.T) {
	vol := newVolume(t, "mode=relay", "perm=0600")
	c := startUser(t, vol)
	wantPing(t, pingIn(t, c))
	dir := stateDir(t)
	logSince := restartPlugin(t, func() {
		out, err := exec.Command(filepath.Join(repoRoot(), "bin", "sockrelay"), "state", "export", "-state-dir", dir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "wrote ") {
			t.Fatalf("state export: %v: %s", err, out)
		}
		t.Logf("state export: %s", strings.TrimSpace(string(out)))
		store, err := state.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		vols, err := store.ReadLegacy()
		if err != nil || vols[vol] == nil || vols[vol].Perm != 0o600 || vols[vol].MountCount() != 1 {
			t.Fatalf("exported state.json: got %+v, %v; want %s with perm 0600 and its mount", vols[vol], err, vol)
		}
	})
	waitPing(t, c)
	logHas(t, logSince, "state migrated to a record per volume", "state.json.migrated")
	if _, err := os.Stat(filepath.Join(dir, state.FileName)); !os.IsNotExist(err) {
		t.Errorf("state.json after the migration: got %v, want it renamed", err)
	}
	if st := status(t, vol); st["perm"] != "0600" || st["mounts"] != 1.0 || st["rebuilt"] != nil {
		t.Errorf("status after the migration: got %v, want perm 0600, its mount, nothing rebuilt", st)
	}
}
