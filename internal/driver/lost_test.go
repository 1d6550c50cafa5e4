package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/state"
)

// fakeDaemon answers AskDaemon as dockerd would: volumes it holds, with
// the Status this plugin's Get gives them, and their running containers.
type fakeDaemon struct {
	mu      sync.Mutex
	d       *Driver
	vols    map[string]map[string]string // name: options
	running map[string][]string
	err     error
	asked   []string
}

func (f *fakeDaemon) ask(ctx context.Context, name string) (DaemonVolume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, name)
	if f.err != nil {
		return DaemonVolume{}, f.err
	}
	opts, ok := f.vols[name]
	if !ok {
		return DaemonVolume{}, nil
	}
	// As dockerd does: it asks the driver's Get, and answers its Status.
	r, err := f.d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		return DaemonVolume{}, err
	}
	return DaemonVolume{Found: true, Driver: "sockrelay:latest", Options: opts, Status: r.Volume.Status, Running: f.running[name]}, nil
}

func shortRecovery(t *testing.T) {
	oldFor, oldFirst := recoverFor, recoverFirst
	recoverFor, recoverFirst = 300*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { recoverFor, recoverFirst = oldFor, oldFirst })
}

// A record that cannot be read costs its own volume only: the others are
// served as before; the damaged one stays listed, its Status says what
// happened and what to do, Mount refuses it saying so, and it can be
// removed.
func TestDamagedRecordCostsOneVolume(t *testing.T) {
	requireRoot(t)
	shortRecovery(t)
	for name, damage := range map[string]func(t *testing.T, path string){
		"garbage":   func(t *testing.T, p string) { os.WriteFile(p, []byte("\x00garbage"), 0o600) },
		"truncated": func(t *testing.T, p string) { os.Truncate(p, 30) },
		"directory": func(t *testing.T, p string) { os.Remove(p); os.Mkdir(p, 0o700) },
		"deleted":   func(t *testing.T, p string) { os.Remove(p) },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			d1 := e.driver()
			create(t, d1, "good", map[string]string{"mode": "relay"})
			create(t, d1, "bad", map[string]string{"mode": "relay"})
			mount(t, d1, "good", "id1")
			mount(t, d1, "bad", "id2")
			d1.Close()
			damage(t, e.store.RecordPath("bad"))

			d := e.driver() // no daemon to ask: e.ask is nil
			d.Reconcile()
			d.Recover(context.Background())
			ping(t, e.sockPath("good"))
			if st := status(t, d, "good"); st["mounts"] != 1 || st["serving"] != true {
				t.Errorf("good: got %v, want served with its mount", st)
			}
			st := status(t, d, "bad")
			errText, _ := st["error"].(string)
			todo, _ := st["what_to_do"].(string)
			if st["record"] != "lost" || !strings.Contains(errText, "record") || !strings.Contains(todo, "docker volume rm bad") {
				t.Errorf("bad: got %v, want record lost, the error, and what to do", st)
			}
			if name == "deleted" {
				if !strings.Contains(errText, "missing") || st["moved_aside"] != nil {
					t.Errorf("bad: got %v, want the record missing, nothing moved aside", st)
				}
			} else {
				aside, _ := st["moved_aside"].([]string)
				if len(aside) != 1 || !strings.HasPrefix(aside[0], e.store.RecordPath("bad")+".corrupt-") || !exists(aside[0]) {
					t.Errorf("bad: moved_aside got %v, want the record at <record>.corrupt-<time>", st["moved_aside"])
				}
			}
			list, _ := d.List()
			var names []string
			for _, v := range list.Volumes {
				names = append(names, v.Name)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"bad", "good"}) {
				t.Errorf("List: got %v, want [bad good]", names)
			}
			if _, err := d.Mount(&volume.MountRequest{Name: "bad", ID: "id3"}); !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "docker volume rm bad") {
				t.Errorf("Mount bad: got %v, want ErrLost saying what to do", err)
			}
			if err := d.Unmount(&volume.UnmountRequest{Name: "bad", ID: "id2"}); err != nil {
				t.Errorf("Unmount bad: got %v, want nil", err)
			}
			if _, err := d.Path(&volume.PathRequest{Name: "bad"}); err != nil {
				t.Errorf("Path bad: got %v, want nil", err)
			}
			if err := d.Remove(&volume.RemoveRequest{Name: "bad"}); err != nil {
				t.Fatalf("Remove bad: got %v, want nil", err)
			}
			if _, err := d.Get(&volume.GetRequest{Name: "bad"}); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after Remove: got %v, want ErrNotFound", err)
			}
			if exists(filepath.Join(e.volRoot, "bad")) {
				t.Errorf("bad's directory after Remove: got it, want it gone")
			}
			// And a new volume of that name is an ordinary one.
			create(t, d, "bad", nil)
			mount(t, d, "bad", "id4")
			ping(t, e.sockPath("bad"))
		})
	}
}

// A records directory lost whole: every volume whose directory remains
// is lost, none is forgotten, and the plugin starts.
func TestRecordsDirLost(t *testing.T) {
	requireRoot(t)
	shortRecovery(t)
	e := newEnv(t)
	d1 := e.driver()
	for _, n := range []string{"a", "b"} {
		create(t, d1, n, nil)
	}
	d1.Close()
	recs := filepath.Join(e.stateDir, state.RecordsDir)
	if err := os.RemoveAll(recs); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recs, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := e.driver()
	d.Reconcile()
	for _, n := range []string{"a", "b"} {
		if st := status(t, d, n); st["record"] != "lost" {
			t.Errorf("%s: got %v, want record lost", n, st)
		}
	}
	create(t, d, "c", nil)
	if vols, err := e.records(); err != nil || len(vols) != 1 {
		t.Errorf("records after a Create: got %v, %v, want c alone", vols, err)
	}
}

// Recover rebuilds a lost record from the daemon's options, with a mount
// for each running container, so that their socket comes back; an
// Unmount of an ID the lost record held ends one of those mounts.
func TestRecoverRebuilds(t *testing.T) {
	requireRoot(t)
	shortRecovery(t)
	e := newEnv(t)
	d1 := e.driver()
	opts := map[string]string{"mode": "relay", "uid": "1000", "perm": "0600"}
	create(t, d1, "v", opts)
	mount(t, d1, "v", "real-id")
	d1.Close()
	os.WriteFile(e.store.RecordPath("v"), []byte("{"), 0o600)

	fd := &fakeDaemon{vols: map[string]map[string]string{"v": opts}, running: map[string][]string{"v": {"0123456789abcdef"}}}
	e.ask = fd.ask
	d := e.driver()
	fd.d = d
	d.Reconcile()
	if st := status(t, d, "v"); st["record"] != "lost" || !strings.Contains(st["what_to_do"].(string), "asking the daemon") {
		t.Errorf("before Recover: got %v, want lost, asking the daemon", st)
	}
	d.Recover(context.Background())
	st := status(t, d, "v")
	rebuilt, _ := st["rebuilt"].(string)
	if st["record"] != nil || st["serving"] != true || st["mounts"] != 1 || st["owner"] != "101000:100000" || st["perm"] != "0600" || !strings.Contains(rebuilt, "could not be read") {
		t.Fatalf("after Recover: got %v, want served, one mount, owner 101000:100000 0600, rebuilt saying why", st)
	}
	ping(t, e.sockPath("v"))
	var fst unix.Stat_t
	if err := unix.Lstat(e.sockPath("v"), &fst); err != nil || fst.Uid != 101000 || fst.Mode&0o777 != 0o600 {
		t.Errorf("socket: %v, uid %d mode %o, want 101000 0600", err, fst.Uid, fst.Mode&0o777)
	}
	vols, err := e.records()
	if err != nil || vols["v"] == nil || vols["v"].Mounts["rebuilt-0123456789ab"] != 1 || vols["v"].Rebuilt == "" {
		t.Fatalf("record: got %+v, %v, want a rebuilt record counting the running container", vols["v"], err)
	}
	// The running container stops: dockerd unmounts its real ID.
	unmount(t, d, "v", "real-id")
	if st := status(t, d, "v"); st["mounts"] != 0 || st["serving"] != false {
		t.Errorf("after the container's Unmount: got %v, want no mount, not serving", st)
	}
	// A restart keeps the rebuilt record and its note.
	d.Close()
	d = e.driver()
	if st := status(t, d, "v"); st["rebuilt"] == nil || st["record"] != nil {
		t.Errorf("after a restart: got %v, want the rebuilt volume", st)
	}
}

// What the daemon says decides: a volume it does not have is forgotten
// and its directory removed; options it holds that no longer pass are
// said; a daemon that does not answer is asked again, then given up on
// with what to do.
func TestRecoverOutcomes(t *testing.T) {
	requireRoot(t)
	shortRecovery(t)
	tests := []struct {
		name string
		fd   *fakeDaemon
		want string // in what_to_do; "" for forgotten
	}{
		{"unknown to the daemon", &fakeDaemon{vols: map[string]map[string]string{}}, ""},
		{"options refused", &fakeDaemon{vols: map[string]map[string]string{"v": {"mode": "relay", "bogus": "1"}}}, "refused now"},
		{"daemon down", &fakeDaemon{err: errors.New("dial unix docker.sock: connection refused")}, "the daemon did not answer (dial unix docker.sock: connection refused)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			d1 := e.driver()
			create(t, d1, "v", nil)
			d1.Close()
			os.Remove(e.store.RecordPath("v"))
			e.ask = tt.fd.ask
			d := e.driver()
			tt.fd.d = d
			d.Reconcile()
			d.Recover(context.Background())
			if tt.want == "" {
				if _, err := d.Get(&volume.GetRequest{Name: "v"}); !errors.Is(err, ErrNotFound) {
					t.Errorf("Get: got %v, want ErrNotFound", err)
				}
				if exists(filepath.Join(e.volRoot, "v")) {
					t.Errorf("directory: got it, want it removed")
				}
				return
			}
			st := status(t, d, "v")
			if todo, _ := st["what_to_do"].(string); st["record"] != "lost" || !strings.Contains(todo, tt.want) || !strings.Contains(todo, "docker volume rm v") {
				t.Errorf("status: got %v, want lost, what_to_do saying %q and how to recreate it", st, tt.want)
			}
			if tt.fd.err != nil && len(tt.fd.asked) < 2 {
				t.Errorf("daemon asked %d times, want again and again until the deadline", len(tt.fd.asked))
			}
		})
	}
}
