//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/state"
)

// 1,000 connections held at once through the installed plugin, from a
// remapped container, on a relay volume and on a policy volume: every
// one answered twice, and the plugin's count of open connections back to
// zero after.
func TestThousandConnectionsThroughPlugin(t *testing.T) {
	for name, opts := range map[string][]string{"relay": {"mode=relay"}, "policy": {"policy=full"}} {
		t.Run(name, func(t *testing.T) {
			vol := newVolume(t, opts...)
			a := startUser(t, vol)
			r := dockerIn(nil, "exec", a, "srclient", "load", "/var/run/docker.sock", "1000")
			if r.err != nil || strings.TrimSpace(r.stdout) != "ok 1000" {
				t.Fatalf("1,000 connections at once: got\n%s", r)
			}
			eventually(t, 15*time.Second, func() error {
				if st := status(t, vol); st["connections"] != 0.0 {
					return fmt.Errorf("status after the load: got %v, want 0 connections open", st)
				}
				return nil
			})
			wantPing(t, pingIn(t, a))
		})
	}
}

// A container that stops while the plugin is disabled: its Unmount never
// reaches the plugin, which still counts the mount when the plugin is
// back. Removing the volume once the container is gone works all the
// same: the plugin asks the daemon, which has no container using it.
// While a container still uses it, the daemon itself refuses.
func TestRemoveAfterMissedUnmount(t *testing.T) {
	vol := newVolume(t)
	c := startUser(t, vol)
	wantPing(t, pingIn(t, c))
	must(t, "plugin", "disable", "-f", plugin)
	t.Cleanup(func() { dockerOut("plugin", "enable", plugin) })
	must(t, "kill", c) // its Unmount fails: no plugin
	must(t, "plugin", "enable", plugin)
	eventually(t, 15*time.Second, func() error {
		if st := status(t, vol); st["mounts"] != 1.0 {
			return fmt.Errorf("status after enable: got %v, want the missed mount still counted", st)
		}
		return nil
	})
	if r := dockerIn(nil, "volume", "rm", vol); r.err == nil {
		t.Fatalf("volume rm while a (stopped) container uses it: got success, want the daemon's refusal")
	}
	must(t, "rm", c)
	if r := dockerIn(nil, "volume", "rm", vol); r.err != nil {
		t.Fatalf("volume rm after the container is gone: %s", r)
	}
	if r := dockerIn(nil, "volume", "inspect", vol); r.err == nil {
		t.Fatalf("volume still listed after rm")
	}
	if out, _ := dockerOut("volume", "ls", "-q", "--filter", "name="+vol); strings.TrimSpace(out) != "" {
		t.Fatalf("volume ls after rm: %q", out)
	}
}

// kill -9 the plugin again and again while volumes are created, mounted
// and removed. dockerd restarts it each time. Afterwards every record
// reads, the daemon and the plugin agree on every volume, and a container
// that was running all along has its socket back.
func TestKillNineLoop(t *testing.T) {
	keep := newVolume(t)
	a := startUser(t, keep)
	wantPing(t, pingIn(t, a))

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var churned []string
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := uniqueName(t)
			churned = append(churned, v)
			// Any step may fail while the plugin is down; that is the
			// point. What must hold is checked afterwards.
			dockerIn(nil, "volume", "create", "-d", plugin, v)
			dockerIn(nil, "run", "--rm", "--label", label, "-v", v+":/var/run", image, "srclient", "ping", "/var/run/docker.sock")
			dockerIn(nil, "volume", "rm", v)
		}
	})
	t.Cleanup(func() {
		for _, v := range churned {
			removeVolume(v)
		}
	})
	for i := 0; i < 6; i++ {
		time.Sleep(1500 * time.Millisecond)
		if pids, err := pluginTaskPids(); err != nil || len(pids) == 0 {
			t.Logf("kill %d: no plugin task (%v)", i, err)
		} else if out, err := exec.Command("kill", append([]string{"-9"}, pids...)...).CombinedOutput(); err != nil {
			t.Logf("kill %d: %v %s", i, err, out)
		}
	}
	close(stop)
	wg.Wait()

	// dockerd restarts the plugin; it answers again.
	eventually(t, 60*time.Second, func() error {
		_, err := dockerOut("volume", "inspect", keep)
		return err
	})
	eventually(t, 30*time.Second, func() error {
		if r := pingIn(t, a); r.err != nil || !strings.HasPrefix(r.stdout, "200 OK") {
			return fmt.Errorf("ping in the container that ran all along: %s", r)
		}
		return nil
	})

	// Every record reads, and the plugin and the daemon agree: a kill
	// between a Remove's record and its directory leaves a volume the
	// daemon still has and the plugin rebuilds from it, soon after start.
	var st map[string]*state.Volume
	inDaemon := map[string]bool{}
	eventually(t, 30*time.Second, func() error {
		st = readState(t)
		inDaemon = map[string]bool{}
		var missing []string
		for _, v := range strings.Fields(must(t, "volume", "ls", "-q", "--filter", "driver="+plugin)) {
			inDaemon[v] = true
			if _, ok := st[v]; !ok {
				missing = append(missing, v)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("volumes listed by the daemon but without a record in the plugin: %v", missing)
		}
		return nil
	})
	for v := range inDaemon {
		if r := dockerIn(nil, "volume", "inspect", v); r.err != nil {
			t.Errorf("volume %s listed but its Get fails: %s", v, r)
		}
		if rec := st[v]; rec != nil && rec.Rebuilt != "" {
			t.Logf("volume %s: record rebuilt: %s", v, rec.Rebuilt)
		}
	}
	for v := range st {
		if strings.HasPrefix(v, prefix) && !inDaemon[v] {
			t.Logf("volume %s is in the plugin's state but not in the daemon's list (a Create that the daemon gave up on)", v)
		}
	}
	if _, ok := st[keep]; !ok || !inDaemon[keep] {
		t.Fatalf("the volume in use all along was lost: state %v, daemon %v", ok, inDaemon[keep])
	}
	t.Logf("%d volumes churned through 6 kills", len(churned))
}

// readState reads the plugin's records from the host side; every one
// must read.
func readState(t *testing.T) map[string]*state.Volume {
	t.Helper()
	store, err := state.New(stateDir(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := store.Read()
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	for _, dm := range l.Damaged {
		t.Errorf("record %s does not read: %v", dm.Path, dm.Err)
	}
	return l.Volumes
}

// With streams open through a relay and a policy volume (docker events),
// the plugin stops on SIGTERM within dockerd's 10 s grace, by itself, and
// comes back.
func TestShutdownWithOpenStreams(t *testing.T) {
	relayVol := newVolume(t, "mode=relay")
	policyVol := newVolume(t, "policy=no-escalation")
	sib := uniqueName(t)
	must(t, "run", "-d", "--name", sib, "--label", label, image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", sib) })
	for _, v := range []string{relayVol, policyVol} {
		// A chunked stream (events) and a hijacked one (exec -i, whose
		// stdin the CLI half-closes at once) through each volume.
		for _, cmd := range [][]string{{"docker", "events"}, {"docker", "exec", "-i", sib, "srclient", "sleep", "3600"}} {
			name := uniqueName(t)
			must(t, append([]string{"run", "-d", "--name", name, "--label", label, "-v", v + ":/var/run", image}, cmd...)...)
			t.Cleanup(func() { dockerOut("rm", "-f", name) })
		}
	}
	eventually(t, 10*time.Second, func() error {
		for _, v := range []string{relayVol, policyVol} {
			if st := status(t, v); st["connections"].(float64) < 2 {
				return fmt.Errorf("%s: %v, want two open streams at least", v, st)
			}
		}
		return nil
	})
	before, _ := daemonLog()
	start := time.Now()
	must(t, "plugin", "disable", "-f", plugin)
	took := time.Since(start)
	t.Cleanup(func() { dockerOut("plugin", "enable", plugin) })
	if took >= 10*time.Second {
		t.Fatalf("disable took %v: the plugin was killed, not stopped", took)
	}
	eventually(t, 5*time.Second, func() error {
		after, _ := daemonLog()
		if !strings.Contains(after[len(before):], `msg=stopped`) {
			return fmt.Errorf("the plugin did not log that it stopped")
		}
		return nil
	})
	must(t, "plugin", "enable", plugin)
	wantPing(t, runClient(t, relayVol, "srclient", "ping", "/var/run/docker.sock"))
	t.Logf("disable with open streams took %v", took.Round(time.Millisecond))
}

// 5,000 volumes: docker volume ls lists them all, and Create, Mount and
// Remove keep working. The volumes are written into the plugin's state
// while it is disabled (5,000 Creates through the CLI would take the
// better part of the run), in the single-file layout of older builds:
// enable migrates all of them to records, within dockerd's 9 s, and the
// plugin restores each at start.
func TestFiveThousandVolumes(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 volumes")
	}
	const n = 5000
	scale := prefix + "scale-"
	must(t, "plugin", "disable", "-f", plugin)
	store, err := state.New(stateDir(t))
	if err != nil {
		t.Fatal(err)
	}
	l, err := store.Read()
	if err != nil || len(l.Damaged) > 0 {
		t.Fatalf("records: %v, damaged %v", err, l.Damaged)
	}
	vols := l.Volumes
	for i := range n {
		name := fmt.Sprintf("%s%04d", scale, i)
		vols[name] = &state.Volume{Name: name, CreatedAt: time.Now().UTC().Truncate(time.Second), Mode: "relay",
			UID: 100000, GID: 100000, Perm: 0o660, Socket: "docker.sock", Target: daemonSocket(),
			Remap: &state.Remap{UID: 100000, GID: 100000, Size: 65536}}
	}
	if err := state.WriteLegacy(store.LegacyPath(), vols); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Through the daemon, so that its records go too; a few hundred
		// names a call.
		out, _ := dockerOut("volume", "ls", "-q", "--filter", "name="+scale)
		names := strings.Fields(out)
		for len(names) > 0 {
			k := min(len(names), 500)
			dockerOut(append([]string{"volume", "rm", "-f"}, names[:k]...)...)
			names = names[k:]
		}
	})
	start := time.Now()
	must(t, "plugin", "enable", plugin)
	t.Logf("enable with %d volumes, migrated from state.json: %v", len(vols), time.Since(start).Round(time.Millisecond))
	if got := readState(t); len(got) < len(vols) {
		t.Fatalf("records after the migration: got %d, want %d", len(got), len(vols))
	}

	start = time.Now()
	out := must(t, "volume", "ls", "-q", "--filter", "driver="+plugin)
	listed := 0
	for _, v := range strings.Fields(out) {
		if strings.HasPrefix(v, scale) {
			listed++
		}
	}
	if listed != n {
		t.Fatalf("docker volume ls: got %d of the %d volumes", listed, n)
	}
	t.Logf("docker volume ls of %d volumes: %v", len(strings.Fields(out)), time.Since(start).Round(time.Millisecond))

	if st := status(t, scale+"4999"); st["owner"] != "100000:100000" {
		t.Fatalf("inspect of a restored volume: got %v", st)
	}
	start = time.Now()
	vol := newVolume(t)
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
	wantPing(t, runClient(t, scale+"0042", "srclient", "ping", "/var/run/docker.sock"))
	t.Logf("create, two runs (mount, ping, unmount) beside %d volumes: %v", n, time.Since(start).Round(time.Millisecond))
}
