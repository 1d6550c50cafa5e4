package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/mounts"
	"github.com/sockrelay/sockrelay/internal/mounts/mounttest"
	"github.com/sockrelay/sockrelay/internal/owner"
	"github.com/sockrelay/sockrelay/internal/state"
)

// remapped is the fake daemon's remap range.
var remapped = owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536, Source: "test"}

// fakeResolver returns a fixed range or error.
type fakeResolver struct {
	rg    owner.Range
	err   error
	calls atomic.Int64
}

func (f *fakeResolver) Resolve(ctx context.Context) (owner.Range, error) {
	f.calls.Add(1)
	return f.rg, f.err
}

// testEnv is one plugin's world: a state directory, a volume root, and a
// host socket directory holding a live fake daemon socket, docker.sock,
// which echoes what it reads.
type testEnv struct {
	t        testing.TB
	base     string
	stateDir string
	volRoot  string
	sockDir  string
	store    *state.Store
	res      *fakeResolver
	upConns  atomic.Int64
	upLn     net.Listener
	modes    []Mode
	inUse    func(ctx context.Context, name string) (bool, error)
	ask      func(ctx context.Context, name string) (DaemonVolume, error)
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	base, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &testEnv{
		t:    t,
		base: base,
		// As in the plugin: the state lies inside the volume root.
		stateDir: filepath.Join(base, "v", stateDirName),
		volRoot:  filepath.Join(base, "v"),
		sockDir:  filepath.Join(base, "h"),
		res:      &fakeResolver{rg: remapped},
	}
	if err := os.Mkdir(e.sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.startUpstream()
	e.store, err = state.New(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	e.modes = Modes(ModeDeps{Log: testLog(t)})
	return e
}

// startUpstream serves docker.sock: every connection is echoed.
func (e *testEnv) startUpstream() {
	ln, err := net.Listen("unix", filepath.Join(e.sockDir, "docker.sock"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.upLn = ln
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.upConns.Add(1)
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				io.Copy(c, c)
				c.(*net.UnixConn).CloseWrite()
			})
		}
	})
	e.t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

func testLog(t testing.TB) *slog.Logger {
	// Only a test may log through t: a fuzz target must not use f.Log.
	if _, isTest := t.(*testing.T); isTest && testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// driver starts a Driver on the env, closed at cleanup.
func (e *testEnv) driver() *Driver {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, Config{
		Log:            testLog(e.t),
		Store:          e.store,
		Owner:          e.res,
		VolumeRoot:     e.volRoot,
		HostSocketDir:  "/var/run",
		SocketDirMount: e.sockDir,
		Modes:          e.modes,
		InUse:          e.inUse,
		AskDaemon:      e.ask,
	})
	if err != nil {
		cancel()
		e.t.Fatalf("New: got %v, want nil", err)
	}
	var once sync.Once
	e.t.Cleanup(func() {
		once.Do(func() {
			d.Close()
			cancel()
		})
	})
	return d
}

// records reads the records as they are on disk, changing nothing; a
// damaged record is an error.
func (e *testEnv) records() (map[string]*state.Volume, error) {
	l, err := e.store.Read()
	if err != nil {
		return nil, err
	}
	if len(l.Damaged) > 0 {
		return l.Volumes, fmt.Errorf("damaged records: %v", l.Damaged)
	}
	return l.Volumes, nil
}

// recordBytes is every record's bytes, in name order.
func (e *testEnv) recordBytes() ([]byte, error) {
	dir := filepath.Join(e.stateDir, state.RecordsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, en := range ents {
		b, err := os.ReadFile(filepath.Join(dir, en.Name()))
		if err != nil {
			return nil, err
		}
		out = append(append(out, en.Name()...), b...)
	}
	return out, nil
}

// stateDirName is the state directory's name inside the volume root, as
// in the plugin's default settings.
const stateDirName = ".sockrelay"

// volumeDirs lists the volume root without the state directory.
func (e *testEnv) volumeDirs(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range entries(t, e.volRoot) {
		if n != stateDirName {
			out = append(out, n)
		}
	}
	return out
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: volume directories are chowned to root and sockets to the remapped root")
	}
}

func (e *testEnv) sockPath(name string) string {
	return filepath.Join(e.volRoot, name, DefaultSocket)
}

// ping dials a volume's socket and checks the fake daemon echoes.
func ping(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: got %v, want nil", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: got %v, want nil", err)
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "ping" {
		t.Fatalf("echo through %s: got %q, %v, want %q, nil", path, b, err, "ping")
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir %s: got %v, want nil", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func status(t *testing.T, d *Driver, name string) map[string]any {
	t.Helper()
	r, err := d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		t.Fatalf("Get %s: got %v, want nil", name, err)
	}
	return r.Volume.Status
}

func mountCount(t *testing.T, d *Driver, name string) int {
	t.Helper()
	return status(t, d, name)["mounts"].(int)
}

func mount(t *testing.T, d *Driver, name, id string) {
	t.Helper()
	r, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		t.Fatalf("Mount %s %s: got %v, want nil", name, id, err)
	}
	if want := filepath.Join(d.cfg.VolumeRoot, name); r.Mountpoint != want {
		t.Errorf("Mountpoint: got %v, want %v", r.Mountpoint, want)
	}
}

func unmount(t *testing.T, d *Driver, name, id string) {
	t.Helper()
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		t.Fatalf("Unmount %s %s: got %v, want nil", name, id, err)
	}
}

func create(t *testing.T, d *Driver, name string, opts map[string]string) {
	t.Helper()
	if err := d.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		t.Fatalf("Create %s: got %v, want nil", name, err)
	}
}

func TestCreateGetStatus(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	before := time.Now().UTC().Truncate(time.Second)
	create(t, d, "v1", map[string]string{"uid": "1000", "gid": "2000", "perm": "0600", "target": "/run/docker.sock"})

	r, err := d.Get(&volume.GetRequest{Name: "v1"})
	if err != nil {
		t.Fatalf("Get: got %v, want nil", err)
	}
	v := r.Volume
	if v.Name != "v1" || v.Mountpoint != filepath.Join(e.volRoot, "v1") {
		t.Errorf("Get: got %q at %q, want %q at %q", v.Name, v.Mountpoint, "v1", filepath.Join(e.volRoot, "v1"))
	}
	at, err := time.Parse(time.RFC3339, v.CreatedAt)
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt: got %q, %v, want an RFC 3339 time of now", v.CreatedAt, err)
	}
	want := map[string]any{
		"mode":    "relay",
		"owner":   "101000:102000",
		"perm":    "0600",
		"socket":  "docker.sock",
		"target":  "/var/run/docker.sock",
		"mounts":  0,
		"serving": false,
		"remap":   "100000:100000/65536",
	}
	for k, w := range want {
		if got := v.Status[k]; got != w {
			t.Errorf("Status[%q]: got %v, want %v", k, got, w)
		}
	}
	if _, ok := v.Status["last_error"]; ok {
		t.Errorf("Status: got last_error %v, want none", v.Status["last_error"])
	}

	// Path and List agree.
	p, err := d.Path(&volume.PathRequest{Name: "v1"})
	if err != nil || p.Mountpoint != v.Mountpoint {
		t.Errorf("Path: got %v, %v, want %v, nil", p, err, v.Mountpoint)
	}
	l, err := d.List()
	if err != nil || len(l.Volumes) != 1 || l.Volumes[0].Name != "v1" || l.Volumes[0].Status != nil {
		t.Errorf("List: got %+v, %v, want v1 without status, nil", l, err)
	}
	if got := d.Capabilities().Capabilities.Scope; got != "local" {
		t.Errorf("Capabilities scope: got %v, want local", got)
	}

	// The record is on disk.
	vols, err := e.records()
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	sv := vols["v1"]
	if sv == nil || sv.UID != 101000 || sv.GID != 102000 || sv.Perm != 0o600 || sv.Target != "/var/run/docker.sock" || sv.Mode != "relay" {
		t.Errorf("stored volume: got %+v, want v1 101000:102000 0600", sv)
	}
	// No socket until mounted.
	if exists(e.sockPath("v1")) {
		t.Errorf("socket before Mount: got it, want none")
	}
}

func TestVolumeDirRootOwned(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()

	check := func(name string) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(e.volRoot, name), &st); err != nil {
			t.Fatalf("lstat: got %v, want nil", err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Mode&0o7777 != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("volume directory %s: got mode %o owner %d:%d, want a 0755 directory of 0:0", name, st.Mode, st.Uid, st.Gid)
		}
	}
	create(t, d, "fresh", nil)
	check("fresh")

	// An existing directory (left by an older install) is taken over.
	old := filepath.Join(e.volRoot, "old")
	if err := os.Mkdir(old, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(old, 12345, 23456); err != nil {
		t.Fatal(err)
	}
	create(t, d, "old", nil)
	check("old")
}

// A symlink in place of the volume directory is refused and not followed.
func TestCreateRefusesSymlinkedDir(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	elsewhere := filepath.Join(e.base, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(elsewhere, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(elsewhere, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(e.volRoot, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "evil"}); err == nil {
		t.Fatal("Create over a symlink: got nil, want an error")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(elsewhere, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 12345 || st.Mode&0o777 != 0o777 {
		t.Errorf("symlink target: got mode %o owner %d, want it untouched (0777, 12345)", st.Mode&0o777, st.Uid)
	}
	if vols, _ := e.records(); len(vols) != 0 {
		t.Errorf("state: got %v, want no volume", vols)
	}
}

// Bad input changes nothing: no directory, no state record. None of these
// reach the directory code, so they run as any user.
func TestCreateInvalidLeavesNothing(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.sockDir, "file.sock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(e.sockDir, "escape.sock")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../etc/passwd", filepath.Join(e.sockDir, "up.sock")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     volume.CreateRequest
		res     *fakeResolver
		invalid bool // wraps ErrInvalid
	}{
		{"empty name", volume.CreateRequest{Name: ""}, nil, true},
		{"slash", volume.CreateRequest{Name: "a/b"}, nil, true},
		{"dot dot", volume.CreateRequest{Name: "../x"}, nil, true},
		{"dot", volume.CreateRequest{Name: "."}, nil, true},
		{"leading dot", volume.CreateRequest{Name: ".x"}, nil, true},
		{"NUL", volume.CreateRequest{Name: "a\x00b"}, nil, true},
		{"long name", volume.CreateRequest{Name: strings.Repeat("n", 101)}, nil, true},
		{"bad perm", volume.CreateRequest{Name: "ok", Options: map[string]string{"perm": "0400"}}, nil, true},
		{"unknown option", volume.CreateRequest{Name: "ok", Options: map[string]string{"o": "x"}}, nil, true},
		{"policy", volume.CreateRequest{Name: "ok", Options: map[string]string{"policy": "x"}}, nil, true},
		{"target outside", volume.CreateRequest{Name: "ok", Options: map[string]string{"target": "/etc/x.sock"}}, nil, true},
		{"target missing", volume.CreateRequest{Name: "ok", Options: map[string]string{"target": "/var/run/none.sock"}}, nil, true},
		{"target a file", volume.CreateRequest{Name: "ok", Options: map[string]string{"target": "/var/run/file.sock"}}, nil, true},
		{"target symlink out", volume.CreateRequest{Name: "ok", Options: map[string]string{"target": "/var/run/escape.sock"}}, nil, true},
		{"target relative symlink out", volume.CreateRequest{Name: "ok", Options: map[string]string{"target": "/var/run/up.sock"}}, nil, true},
		{"uid beyond the remap range", volume.CreateRequest{Name: "ok", Options: map[string]string{"uid": "5000"}},
			&fakeResolver{rg: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 1000}}, true},
		{"owner unknown", volume.CreateRequest{Name: "ok"}, &fakeResolver{err: fmt.Errorf("test: %w", owner.ErrUnknown)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.res != nil {
				e.res = tt.res
			} else {
				e.res = &fakeResolver{rg: remapped}
			}
			d := e.driver()
			err := d.Create(&tt.req)
			if err == nil {
				t.Fatalf("Create(%q, %v): got nil, want an error", tt.req.Name, tt.req.Options)
			}
			if tt.invalid && !errors.Is(err, ErrInvalid) {
				t.Errorf("Create: got %v, want an error wrapping ErrInvalid", err)
			}
			if tt.res != nil && tt.res.err != nil && !errors.Is(err, owner.ErrUnknown) {
				t.Errorf("Create: got %v, want an error wrapping owner.ErrUnknown", err)
			}
			// Bad names and options are refused before any daemon lookup.
			if tt.res == nil && e.res.calls.Load() != 0 {
				t.Errorf("owner lookups: got %d, want 0", e.res.calls.Load())
			}
			if got := e.volumeDirs(t); len(got) != 0 {
				t.Errorf("volume root: got %v, want empty", got)
			}
			if got := entries(t, e.base); !slices.Equal(got, []string{"h", "v"}) {
				t.Errorf("base directory: got %v, want [h v]", got)
			}
			vols, err := e.records()
			if err != nil || len(vols) != 0 {
				t.Errorf("state: got %v, %v, want empty, nil", vols, err)
			}
			if l, _ := d.List(); len(l.Volumes) != 0 {
				t.Errorf("List: got %v, want empty", l.Volumes)
			}
		})
	}
}

func TestCreateIdempotentAndExists(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	opts := map[string]string{"uid": "0", "perm": "0660"}
	create(t, d, "v", opts)
	b1, _ := e.recordBytes()
	// Same options, spelled differently: same volume.
	create(t, d, "v", map[string]string{"perm": "660", "gid": "0", "target": "/run/docker.sock"})
	create(t, d, "v", nil)
	b2, _ := e.recordBytes()
	if !bytes.Equal(b1, b2) {
		t.Errorf("state after an idempotent Create: got a change, want none")
	}
	for _, other := range []map[string]string{{"uid": "1"}, {"perm": "0600"}, {"socket": "other.sock"}} {
		err := d.Create(&volume.CreateRequest{Name: "v", Options: other})
		if !errors.Is(err, ErrExists) {
			t.Errorf("Create with %v: got %v, want ErrExists", other, err)
		}
	}
	if got := status(t, d, "v")["perm"]; got != "0660" {
		t.Errorf("perm after refused Creates: got %v, want 0660", got)
	}
}

func TestMountCountsPerID(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)
	sock := e.sockPath("v")

	mount(t, d, "v", "id1")
	if !exists(sock) {
		t.Fatal("socket after the first Mount: got none, want it")
	}
	ping(t, sock)
	if got := e.upConns.Load(); got != 1 {
		t.Errorf("connections at the fake daemon: got %d, want 1", got)
	}
	mount(t, d, "v", "id1") // docker cp reuses a container's ID
	mount(t, d, "v", "id2")
	if got := mountCount(t, d, "v"); got != 3 {
		t.Errorf("mounts: got %d, want 3", got)
	}
	vols, _ := e.records()
	if got := vols["v"].Mounts; got["id1"] != 2 || got["id2"] != 1 {
		t.Errorf("stored mounts: got %v, want id1:2 id2:1", got)
	}
	if st := status(t, d, "v"); st["serving"] != true {
		t.Errorf("serving: got %v, want true", st["serving"])
	}

	steps := []struct {
		id        string
		wantCount int
	}{
		{"id2", 2}, {"id1", 1}, {"id1", 0},
	}
	for _, s := range steps {
		unmount(t, d, "v", s.id)
		if got := mountCount(t, d, "v"); got != s.wantCount {
			t.Errorf("mounts after Unmount %s: got %d, want %d", s.id, got, s.wantCount)
		}
		if got, want := exists(sock), s.wantCount > 0; got != want {
			t.Errorf("socket exists after Unmount %s: got %v, want %v", s.id, got, want)
		}
		if s.wantCount > 0 {
			ping(t, sock)
		}
	}
	// An ID that is not mounted changes nothing.
	unmount(t, d, "v", "id1")
	unmount(t, d, "v", "never")
	if got := mountCount(t, d, "v"); got != 0 {
		t.Errorf("mounts: got %d, want 0", got)
	}
	vols, _ = e.records()
	if got := vols["v"].Mounts; len(got) != 0 {
		t.Errorf("stored mounts: got %v, want none", got)
	}
	if st := status(t, d, "v"); st["serving"] != false {
		t.Errorf("serving: got %v, want false", st["serving"])
	}
	// And it serves again on the next Mount.
	mount(t, d, "v", "id3")
	ping(t, sock)
}

func TestMountBadRequests(t *testing.T) {
	e := newEnv(t)
	d := e.driver()
	if _, err := d.Mount(&volume.MountRequest{Name: "nope", ID: "id"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Mount of an unknown volume: got %v, want ErrNotFound", err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "nope"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Mount without an ID: got %v, want ErrInvalid", err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "nope", ID: "id"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Unmount of an unknown volume: got %v, want ErrNotFound", err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unknown volume: got %v, want ErrNotFound", err)
	}
	if _, err := d.Path(&volume.PathRequest{Name: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Path of an unknown volume: got %v, want ErrNotFound", err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "nope"}); err != nil {
		t.Errorf("Remove of an unknown volume: got %v, want nil", err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "../etc"}); err != nil {
		t.Errorf("Remove of an unknown, invalid name: got %v, want nil", err)
	}
	if !exists(filepath.Join(e.base, "v")) || !exists(e.sockDir) {
		t.Errorf("Remove of ../etc: got a sibling removed, want nothing touched")
	}
	// The state directory lives among the volume directories; it is no
	// volume, and no call may touch it.
	if err := d.Create(&volume.CreateRequest{Name: stateDirName}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create %s: got %v, want ErrInvalid", stateDirName, err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: stateDirName, ID: "id"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Mount %s: got %v, want ErrNotFound", stateDirName, err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: stateDirName}); err != nil {
		t.Errorf("Remove %s: got %v, want nil", stateDirName, err)
	}
	if !exists(e.stateDir) {
		t.Errorf("state directory after Remove %s: got it gone, want it kept", stateDirName)
	}
	if l, _ := d.List(); len(l.Volumes) != 0 {
		t.Errorf("List: got %v, want no volume", l.Volumes)
	}
}

func TestSocketOwnerAndPerm(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name     string
		opts     map[string]string
		rg       owner.Range
		uid, gid uint32
		perm     uint32
	}{
		{"defaults", nil, remapped, 100000, 100000, 0o660},
		{"ids and perm", map[string]string{"uid": "1000", "gid": "2000", "perm": "0600"}, remapped, 101000, 102000, 0o600},
		{"world", map[string]string{"perm": "0666"}, remapped, 100000, 100000, 0o666},
		{"no remap", map[string]string{"uid": "0", "gid": "999"}, owner.Range{Size: 1<<32 - 1}, 0, 999, 0o660},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.res = &fakeResolver{rg: tt.rg}
			d := e.driver()
			create(t, d, "v", tt.opts)
			mount(t, d, "v", "id")
			var st syscall.Stat_t
			if err := syscall.Lstat(e.sockPath("v"), &st); err != nil {
				t.Fatalf("lstat socket: got %v, want nil", err)
			}
			if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
				t.Errorf("type: got %o, want a socket", st.Mode&syscall.S_IFMT)
			}
			if st.Uid != tt.uid || st.Gid != tt.gid || st.Mode&0o7777 != tt.perm {
				t.Errorf("socket: got %d:%d %04o, want %d:%d %04o", st.Uid, st.Gid, st.Mode&0o7777, tt.uid, tt.gid, tt.perm)
			}
			ping(t, e.sockPath("v"))
			if _, ok := status(t, d, "v")["remap"]; ok != tt.rg.Remapped {
				t.Errorf("Status has remap: got %v, want %v", ok, tt.rg.Remapped)
			}
		})
	}
}

func TestSocketName(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", map[string]string{"socket": "api.sock"})
	mount(t, d, "v", "id")
	ping(t, filepath.Join(e.volRoot, "v", "api.sock"))
	if exists(e.sockPath("v")) {
		t.Errorf("docker.sock: got it, want only api.sock")
	}
}

func TestRemove(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)
	mount(t, d, "v", "id")
	err := d.Remove(&volume.RemoveRequest{Name: "v"})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove while mounted: got %v, want ErrInUse", err)
	}
	ping(t, e.sockPath("v"))
	unmount(t, d, "v", "id")
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove: got %v, want nil", err)
	}
	if exists(filepath.Join(e.volRoot, "v")) {
		t.Errorf("volume directory after Remove: got it, want it gone")
	}
	if _, err := d.Get(&volume.GetRequest{Name: "v"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: got %v, want ErrNotFound", err)
	}
	if vols, _ := e.records(); len(vols) != 0 {
		t.Errorf("state after Remove: got %v, want empty", vols)
	}
	// Removing twice is fine; creating again is too.
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Errorf("second Remove: got %v, want nil", err)
	}
	create(t, d, "v", map[string]string{"perm": "0600"})
	mount(t, d, "v", "id")
	ping(t, e.sockPath("v"))
}

// Mounts the plugin still counts when the daemon asks to remove a volume
// are Unmounts that never reached it: the daemon is asked whether a
// container uses the volume, and only a clear "no" lets the Remove go on.
func TestRemoveWithMountsLeftOver(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		inUse   func(ctx context.Context, name string) (bool, error)
		removed bool
		msg     string
	}{
		{"daemon not asked", nil, false, "stop the containers that use it first"},
		{"daemon says in use", func(context.Context, string) (bool, error) { return true, nil }, false, "stop the containers that use it first"},
		{"daemon does not answer", func(context.Context, string) (bool, error) {
			return false, errors.New("GET /containers/json: status 500")
		}, false, "could not ask the daemon whether a container still uses it (GET /containers/json: status 500)"},
		{"daemon says unused", func(context.Context, string) (bool, error) { return false, nil }, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var asked []string
			if tc.inUse != nil {
				e.inUse = func(ctx context.Context, name string) (bool, error) {
					asked = append(asked, name)
					return tc.inUse(ctx, name)
				}
			}
			d := e.driver()
			create(t, d, "v", nil)
			mount(t, d, "v", "gone-container")
			err := d.Remove(&volume.RemoveRequest{Name: "v"})
			if tc.inUse != nil && !slices.Equal(asked, []string{"v"}) {
				t.Fatalf("daemon asked about %q, want [v]", asked)
			}
			if !tc.removed {
				if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Remove: got %v, want ErrInUse saying %q", err, tc.msg)
				}
				ping(t, e.sockPath("v"))
				if vols, _ := e.records(); vols["v"] == nil {
					t.Fatalf("state after a refused Remove: the volume is gone")
				}
				return
			}
			if err != nil {
				t.Fatalf("Remove: got %v, want nil", err)
			}
			if exists(filepath.Join(e.volRoot, "v")) {
				t.Errorf("volume directory after Remove: got it, want it gone")
			}
			if vols, _ := e.records(); len(vols) != 0 {
				t.Errorf("state after Remove: got %v, want empty", vols)
			}
			if d.serving("v") {
				t.Errorf("still serving after Remove")
			}
		})
	}
}

// A stale socket left in the directory (a crash) does not block Remove.
func TestRemoveWithStaleSocket(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)
	staleSocket(t, e.sockPath("v"))
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove: got %v, want nil", err)
	}
	if exists(filepath.Join(e.volRoot, "v")) {
		t.Errorf("volume directory after Remove: got it, want it gone")
	}
}

func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// After a restart (Close, then a new Driver on the same state), Reconcile
// serves the mounted volumes again: dockerd never replays Mount.
func TestRestartServesMountedVolumes(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d1 := e.driver()
	create(t, d1, "mounted", nil)
	create(t, d1, "idle", nil)
	mount(t, d1, "mounted", "id1")
	mount(t, d1, "mounted", "id2")
	d1.Close()
	if exists(e.sockPath("mounted")) {
		t.Errorf("socket after Close: got it, want it removed")
	}

	// The volume directories vanish too (a new propagatedMount).
	if err := os.RemoveAll(filepath.Join(e.volRoot, "idle")); err != nil {
		t.Fatal(err)
	}

	d2 := e.driver()
	if exists(e.sockPath("mounted")) {
		t.Errorf("socket before Reconcile: got it, want none")
	}
	d2.Reconcile()
	ping(t, e.sockPath("mounted"))
	if !exists(filepath.Join(e.volRoot, "idle")) {
		t.Errorf("idle volume directory after Reconcile: got none, want it re-created")
	}
	if exists(e.sockPath("idle")) {
		t.Errorf("idle volume socket after Reconcile: got it, want none")
	}
	if st := status(t, d2, "mounted"); st["mounts"] != 2 || st["serving"] != true {
		t.Errorf("status after restart: got mounts %v serving %v, want 2 true", st["mounts"], st["serving"])
	}
	unmount(t, d2, "mounted", "id1")
	ping(t, e.sockPath("mounted"))
	unmount(t, d2, "mounted", "id2")
	if exists(e.sockPath("mounted")) {
		t.Errorf("socket after the last Unmount: got it, want it removed")
	}
}

// After a crash the socket file is still there with nobody behind it.
func TestRestartAfterCrashReplacesStaleSocket(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d1 := e.driver()
	create(t, d1, "v", nil)
	mount(t, d1, "v", "id")
	d1.Close()
	staleSocket(t, e.sockPath("v"))

	d2 := e.driver()
	d2.Reconcile()
	ping(t, e.sockPath("v"))
	if st := status(t, d2, "v"); st["serving"] != true || st["last_error"] != nil {
		t.Errorf("status: got serving %v last_error %v, want true and none", st["serving"], st["last_error"])
	}
}

// A Mount that comes in before Reconcile is not undone by it.
func TestMountBeforeReconcile(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d1 := e.driver()
	create(t, d1, "v", nil)
	mount(t, d1, "v", "id1")
	d1.Close()

	d2 := e.driver()
	mount(t, d2, "v", "id2")
	d2.Reconcile()
	ping(t, e.sockPath("v"))
	st := status(t, d2, "v")
	if st["mounts"] != 2 || st["serving"] != true || st["last_error"] != nil {
		t.Errorf("status: got mounts %v serving %v last_error %v, want 2 true none", st["mounts"], st["serving"], st["last_error"])
	}
}

// breakState makes every Save fail by putting a file where the state
// directory was; the returned func puts the directory back.
func (e *testEnv) breakState(t *testing.T) (restore func()) {
	t.Helper()
	aside := filepath.Join(e.base, "state.aside")
	if err := os.Rename(e.stateDir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.stateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(e.stateDir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(aside, e.stateDir); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStateWriteFailures(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)

	// Mount: the count stays, and no socket is left.
	restore := e.breakState(t)
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: "id"}); err == nil {
		t.Fatal("Mount with a broken state: got nil, want an error")
	}
	if got := mountCount(t, d, "v"); got != 0 {
		t.Errorf("mounts after failed Mount: got %d, want 0", got)
	}
	if st := status(t, d, "v"); st["serving"] != false {
		t.Errorf("serving after failed Mount: got %v, want false", st["serving"])
	}
	if exists(e.sockPath("v")) {
		t.Errorf("socket after failed Mount: got it, want none")
	}
	// Create: no record and no directory.
	if err := d.Create(&volume.CreateRequest{Name: "w"}); err == nil {
		t.Error("Create with a broken state: got nil, want an error")
	}
	if exists(filepath.Join(e.volRoot, "w")) {
		t.Errorf("directory after failed Create: got it, want none")
	}
	if _, err := d.Get(&volume.GetRequest{Name: "w"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after failed Create: got %v, want ErrNotFound", err)
	}
	restore()

	mount(t, d, "v", "id")
	ping(t, e.sockPath("v"))

	// A second Mount of a served volume: the count stays and the socket
	// keeps serving.
	restore = e.breakState(t)
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: "id2"}); err == nil {
		t.Fatal("second Mount with a broken state: got nil, want an error")
	}
	if got := mountCount(t, d, "v"); got != 1 {
		t.Errorf("mounts after failed second Mount: got %d, want 1", got)
	}
	ping(t, e.sockPath("v"))

	// Unmount: still mounted and serving.
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: "id"}); err == nil {
		t.Fatal("Unmount with a broken state: got nil, want an error")
	}
	if got := mountCount(t, d, "v"); got != 1 {
		t.Errorf("mounts after failed Unmount: got %d, want 1", got)
	}
	ping(t, e.sockPath("v"))
	restore()

	unmount(t, d, "v", "id")
	if exists(e.sockPath("v")) {
		t.Errorf("socket after Unmount: got it, want none")
	}

	// Remove: the volume stays.
	restore = e.breakState(t)
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err == nil {
		t.Fatal("Remove with a broken state: got nil, want an error")
	}
	if _, err := d.Get(&volume.GetRequest{Name: "v"}); err != nil {
		t.Errorf("Get after failed Remove: got %v, want nil", err)
	}
	if !exists(filepath.Join(e.volRoot, "v")) {
		t.Errorf("directory after failed Remove: got none, want it kept")
	}
	restore()

	// What is on disk matches what the driver says.
	vols, err := e.records()
	if err != nil || len(vols) != 1 || vols["v"].MountCount() != 0 {
		t.Errorf("state: got %v, %v, want v unmounted", vols, err)
	}
}

// failingMode is the relay mode, but its Start fails.
type failingMode struct{ *RelayMode }

func (failingMode) Start(context.Context, Dir, *Volume) (Server, error) {
	return nil, errors.New("test start failure")
}

// A failing start is reported in Status and leaves the count alone.
func TestMountStartFailureInStatus(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	e.modes = []Mode{failingMode{&RelayMode{Log: testLog(t)}}}
	d := e.driver()
	create(t, d, "v", nil)
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: "id"}); err == nil {
		t.Fatal("Mount with a failing start: got nil, want an error")
	}
	st := status(t, d, "v")
	if st["mounts"] != 0 || st["serving"] != false {
		t.Errorf("status: got mounts %v serving %v, want 0 false", st["mounts"], st["serving"])
	}
	if le, _ := st["last_error"].(string); !strings.Contains(le, "test start failure") {
		t.Errorf("last_error: got %q, want the start error", le)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(st["last_error_at"])); err != nil {
		t.Errorf("last_error_at: got %v, want an RFC 3339 time", st["last_error_at"])
	}
	if vols, _ := e.records(); vols["v"].MountCount() != 0 {
		t.Errorf("stored mounts: got %v, want none", vols["v"].Mounts)
	}

	// A mode missing from this build is reported the same way.
	e.modes = []Mode{&IdmapMode{}}
	d2 := e.driver()
	if _, err := d2.Mount(&volume.MountRequest{Name: "v", ID: "id"}); err == nil {
		t.Fatal("Mount of a mode this build lacks: got nil, want an error")
	}
	if le, _ := status(t, d2, "v")["last_error"].(string); !strings.Contains(le, "not available") {
		t.Errorf("last_error: got %q, want it to say the mode is not available", le)
	}
}

// The relay's figures show in Status; a daemon that goes away counts as
// upstream failures.
func TestStatusRelayFigures(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)
	mount(t, d, "v", "id")
	ping(t, e.sockPath("v"))
	ping(t, e.sockPath("v"))
	e.upLn.Close() // the daemon stops
	c, err := net.Dial("unix", e.sockPath("v"))
	if err != nil {
		t.Fatalf("dial: got %v, want nil", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read with the daemon down: got data, want the client closed")
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	var st map[string]any
	for time.Now().Before(deadline) {
		st = status(t, d, "v")
		if st["connections"] == int64(0) && st["upstream_failures"] == uint64(1) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := map[string]any{"connections": int64(0), "connections_total": uint64(3), "upstream_failures": uint64(1), "bytes_relayed": uint64(16)}
	for k, w := range want {
		if st[k] != w {
			t.Errorf("Status[%q]: got %v (%T), want %v", k, st[k], st[k], w)
		}
	}
}

// Many Mounts and Unmounts of one volume at once: the count ends at zero
// and the socket is gone; per-volume locks keep them in order.
func TestConcurrentMounts(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	for i := range 4 {
		create(t, d, fmt.Sprintf("v%d", i), nil)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			name := fmt.Sprintf("v%d", i%4)
			id := fmt.Sprintf("id%d", i)
			for range 5 {
				if _, err := d.Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
					t.Errorf("Mount: got %v, want nil", err)
					return
				}
				d.Get(&volume.GetRequest{Name: name})
				d.List()
				if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
					t.Errorf("Unmount: got %v, want nil", err)
					return
				}
			}
		})
	}
	wg.Wait()
	vols, err := e.records()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		name := fmt.Sprintf("v%d", i)
		if got := mountCount(t, d, name); got != 0 {
			t.Errorf("%s mounts: got %d, want 0", name, got)
		}
		if got := vols[name].MountCount(); got != 0 {
			t.Errorf("%s stored mounts: got %d, want 0", name, got)
		}
		if exists(e.sockPath(name)) {
			t.Errorf("%s socket: got it, want none", name)
		}
	}
}

// Close stops every socket and the goroutines behind them.
func TestCloseStopsEverything(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	for i := range 3 {
		n := fmt.Sprintf("v%d", i)
		create(t, d, n, nil)
		mount(t, d, n, "id")
	}
	c, err := net.Dial("unix", e.sockPath("v0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.ReadFull(c, make([]byte, 1))
	done := make(chan struct{})
	go func() {
		d.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s with a connection open")
	}
	for i := range 3 {
		if exists(e.sockPath(fmt.Sprintf("v%d", i))) {
			t.Errorf("socket v%d after Close: got it, want none", i)
		}
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("open connection after Close: got data, want it cut")
	}
}

// pluginAPI serves the VolumeDriver protocol for d on a real Unix socket
// and returns an HTTP client for it.
func pluginAPI(t testing.TB, d *Driver) *http.Client {
	dir, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		volume.NewHandler(d).Serve(ln)
	}()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ln.Close()
		<-done
		os.RemoveAll(dir)
	})
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type apiReply struct {
	status int
	body   []byte
}

func post(t testing.TB, c *http.Client, endpoint string, body []byte) apiReply {
	t.Helper()
	resp, err := c.Post("http://plugin/"+endpoint, "application/vnd.docker.plugins.v1.1+json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s %q: got %v, want a reply", endpoint, body, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read reply: got %v, want nil", endpoint, err)
	}
	return apiReply{resp.StatusCode, b}
}

func TestHTTPCreateBadOptions(t *testing.T) {
	e := newEnv(t)
	d := e.driver()
	c := pluginAPI(t, d)

	r := post(t, c, "Plugin.Activate", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "VolumeDriver") {
		t.Errorf("Activate: got %d %q, want 200 implementing VolumeDriver", r.status, r.body)
	}

	tests := []struct {
		name, body, want string
	}{
		{"bad perm", `{"Name":"v","Opts":{"perm":"SECRET-0400"}}`, "option perm"},
		{"unknown option", `{"Name":"v","Opts":{"password":"SECRET"}}`, `unknown option "password"`},
		{"target outside", `{"Name":"v","Opts":{"target":"/etc/SECRET"}}`, "option target"},
		{"policy", `{"Name":"v","Opts":{"policy":"SECRET"}}`, "option policy"},
		{"bad name", `{"Name":"../SECRET"}`, "volume name"},
		{"no name", `{}`, "volume name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(t, c, "VolumeDriver.Create", []byte(tt.body))
			if r.status != http.StatusInternalServerError {
				t.Errorf("status: got %d, want %d", r.status, http.StatusInternalServerError)
			}
			var reply map[string]any
			if err := json.Unmarshal(r.body, &reply); err != nil {
				t.Fatalf("reply: got %q, %v, want JSON", r.body, err)
			}
			msg, _ := reply["Err"].(string)
			if len(reply) != 1 || msg == "" {
				t.Fatalf("reply: got %q, want only a non-empty Err", r.body)
			}
			if !strings.Contains(msg, ErrInvalid.Error()) || !strings.Contains(msg, tt.want) {
				t.Errorf("Err: got %q, want it to hold %q and %q", msg, ErrInvalid.Error(), tt.want)
			}
			if tt.name != "bad name" && strings.Contains(msg, "SECRET") {
				t.Errorf("Err: got %q, want no option value in it", msg)
			}
		})
	}
	if got := e.volumeDirs(t); len(got) != 0 {
		t.Errorf("volume root: got %v, want empty", got)
	}

	// A body that is not JSON is refused by the protocol layer.
	r = post(t, c, "VolumeDriver.Create", []byte("{"))
	if r.status != http.StatusBadRequest {
		t.Errorf("Create with a broken body: got %d %q, want 400", r.status, r.body)
	}
	// Unknown volumes through the protocol.
	r = post(t, c, "VolumeDriver.Get", []byte(`{"Name":"nope"}`))
	if r.status != http.StatusInternalServerError || !strings.Contains(string(r.body), ErrNotFound.Error()) {
		t.Errorf("Get of an unknown volume: got %d %q, want 500 with %q", r.status, r.body, ErrNotFound)
	}
	r = post(t, c, "VolumeDriver.Remove", []byte(`{"Name":"nope"}`))
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "{}" {
		t.Errorf("Remove of an unknown volume: got %d %q, want 200 {}", r.status, r.body)
	}
	r = post(t, c, "VolumeDriver.Capabilities", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"Scope":"local"`) {
		t.Errorf("Capabilities: got %d %q, want 200 with local scope", r.status, r.body)
	}
}

// The whole life of a volume through the protocol.
func TestHTTPLifecycle(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	c := pluginAPI(t, d)
	steps := []struct {
		endpoint, body string
		status         int
		want           string
	}{
		{"VolumeDriver.Create", `{"Name":"v","Opts":{"uid":"0","perm":"0660"}}`, 200, `{}`},
		{"VolumeDriver.Get", `{"Name":"v"}`, 200, `"owner":"100000:100000"`},
		{"VolumeDriver.List", `{}`, 200, `"Name":"v"`},
		{"VolumeDriver.Path", `{"Name":"v"}`, 200, `"Mountpoint":"` + filepath.Join(e.volRoot, "v") + `"`},
		{"VolumeDriver.Mount", `{"Name":"v","ID":"abc"}`, 200, `"Mountpoint":"` + filepath.Join(e.volRoot, "v") + `"`},
		{"VolumeDriver.Remove", `{"Name":"v"}`, 500, ErrInUse.Error()},
		{"VolumeDriver.Unmount", `{"Name":"v","ID":"abc"}`, 200, `{}`},
		{"VolumeDriver.Remove", `{"Name":"v"}`, 200, `{}`},
		{"VolumeDriver.Get", `{"Name":"v"}`, 500, ErrNotFound.Error()},
	}
	for i, s := range steps {
		r := post(t, c, s.endpoint, []byte(s.body))
		if r.status != s.status || !strings.Contains(string(r.body), s.want) {
			t.Fatalf("step %d %s: got %d %q, want %d with %q", i, s.endpoint, r.status, r.body, s.status, s.want)
		}
		if s.endpoint == "VolumeDriver.Mount" {
			ping(t, e.sockPath("v"))
		}
	}
}

var fuzzEndpoints = []string{
	"VolumeDriver.Create", "VolumeDriver.Remove", "VolumeDriver.Mount", "VolumeDriver.Unmount",
	"VolumeDriver.Path", "VolumeDriver.Get", "VolumeDriver.List", "VolumeDriver.Capabilities", "Plugin.Activate",
}

// FuzzVolumeDriverHTTP posts arbitrary bodies to every endpoint. The plugin
// must always answer (a panic in a handler drops the connection), with
// 200, 400 or 500, and never make a directory for a name it refuses.
func FuzzVolumeDriverHTTP(f *testing.F) {
	seeds := []struct {
		ep   uint8
		body string
	}{
		{0, `{"Name":"v","Opts":{"uid":"0"}}`},
		{0, `{"Name":"../x"}`},
		{0, `{"Name":"v","Opts":{"target":"/run/docker.sock","perm":"0600","socket":"s"}}`},
		{0, `{"Name":"a/b","Opts":null}`},
		{0, `{"name":"V","opts":{"MODE":"relay"}}`},
		{2, `{"Name":"v","ID":"x"}`},
		{2, `{"Name":"","ID":""}`},
		{3, `{"Name":"v","ID":"x"}`},
		{1, `{"Name":"v"}`},
		{1, `{"Name":"."}`},
		{4, `{"Name":"v"}`},
		{5, `{"Name":"v"}`},
		{6, `{}`},
		{7, ``},
		{8, `null`},
		{0, `[1,2]`},
		{0, `{"Name":1}`},
	}
	for _, s := range seeds {
		f.Add(s.ep, []byte(s.body))
	}
	e := newEnv(f)
	d := e.driver()
	c := pluginAPI(f, d)
	root := os.Getuid() == 0
	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		endpoint := fuzzEndpoints[int(ep)%len(fuzzEndpoints)]
		r := post(t, c, endpoint, body)
		switch r.status {
		case http.StatusOK, http.StatusBadRequest:
		case http.StatusInternalServerError:
			var reply struct{ Err string }
			if err := json.Unmarshal(r.body, &reply); err != nil || reply.Err == "" {
				t.Errorf("%s %q: got 500 with %q, want a JSON Err", endpoint, body, r.body)
			}
		default:
			t.Errorf("%s %q: got status %d, want 200, 400 or 500", endpoint, body, r.status)
		}
		if endpoint == "VolumeDriver.Create" {
			var req volume.CreateRequest
			if json.Unmarshal(body, &req) == nil && ValidateName(req.Name) != nil && r.status == http.StatusOK {
				t.Errorf("Create of the bad name %q: got 200, want an error", req.Name)
			}
		}
		// Every directory is a known volume with a good name.
		for _, n := range e.volumeDirs(t) {
			if err := ValidateName(n); err != nil {
				t.Errorf("%s %q: got a directory %q, want none for a refused name", endpoint, body, n)
			}
			if root && d.volume(n) == nil {
				t.Errorf("%s %q: got a directory %q of no volume, want none", endpoint, body, n)
			}
		}
		if got := entries(t, e.base); !slices.Equal(got, []string{"h", "v"}) {
			t.Errorf("%s %q: base directory got %v, want [h v]", endpoint, body, got)
		}
		resetDriver(t, d)
		if root {
			if got := e.volumeDirs(t); len(got) != 0 {
				t.Errorf("volume root after reset: got %v, want empty", got)
			}
		}
	})
}

// resetDriver unmounts and removes every volume, so that each fuzz input
// starts from nothing.
func resetDriver(t *testing.T, d *Driver) {
	t.Helper()
	d.mu.Lock()
	vols := make([]*state.Volume, 0, len(d.vols))
	for _, v := range d.vols {
		vols = append(vols, v)
	}
	d.mu.Unlock()
	for _, v := range vols {
		for id, n := range v.Mounts {
			for range n {
				if err := d.Unmount(&volume.UnmountRequest{Name: v.Name, ID: id}); err != nil {
					t.Fatalf("reset: Unmount %q %q: got %v, want nil", v.Name, id, err)
				}
			}
		}
		if err := d.Remove(&volume.RemoveRequest{Name: v.Name}); err != nil {
			t.Fatalf("reset: Remove %q: got %v, want nil", v.Name, err)
		}
	}
}

func TestMain(m *testing.M) { mounttest.Main(m) }

// A served volume is a read-only view of its directory: a container's
// root owns the socket in it, and still cannot chmod, chown, touch,
// rename or unlink it, nor set an xattr on it. The socket works through
// the view, and the view goes with the last Unmount.
func TestServedVolumeIsReadOnly(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "v", nil)
	mount(t, d, "v", "id")
	sock := e.sockPath("v")
	ping(t, sock)
	var before unix.Stat_t
	if err := unix.Lstat(sock, &before); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"chmod":     os.Chmod(sock, 0o666),
		"chown":     os.Chown(sock, 101000, 101000),
		"utimes":    os.Chtimes(sock, time.Unix(0, 0), time.Unix(0, 0)),
		"setxattr":  unix.Setxattr(sock, "user.x", []byte("1"), 0),
		"unlink":    os.Remove(sock),
		"rename":    os.Rename(sock, filepath.Join(e.volRoot, "v", "moved")),
		"create":    os.WriteFile(filepath.Join(e.volRoot, "v", "planted"), nil, 0o600),
		"chmod-dir": os.Chmod(filepath.Join(e.volRoot, "v"), 0o777),
	} {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through the volume's mountpoint: got %v, want EROFS", what, err)
		}
	}
	var after unix.Stat_t
	if err := unix.Lstat(sock, &after); err != nil || after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid || after.Mtim != before.Mtim {
		t.Fatalf("socket after the tries: %v, %o %d:%d, want it as before (%o %d:%d)", err, after.Mode, after.Uid, after.Gid, before.Mode, before.Uid, before.Gid)
	}
	ping(t, sock)
	if !readOnly(t, filepath.Join(e.volRoot, "v")) {
		t.Fatal("mountpoint: got writable, want read-only")
	}
	unmount(t, d, "v", "id")
	if readOnly(t, filepath.Join(e.volRoot, "v")) {
		t.Fatal("mountpoint after the last Unmount: got the read-only view, want it gone")
	}
}

// A plugin that died leaves its read-only views behind (dockerd restarts
// a crashed plugin without unmounting them): the next run serves its
// mounted volumes through new ones and takes them off the idle ones.
func TestRestartAfterCrashReplacesStaleViews(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d1 := e.driver()
	create(t, d1, "mounted", nil)
	create(t, d1, "idle", nil)
	mount(t, d1, "mounted", "id")
	d1.Close()
	root, err := os.Open(e.volRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, name := range []string{"mounted", "idle"} {
		dir, err := os.Open(filepath.Join(e.volRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := mounts.ReadOnlyBind(dir, root, name); err != nil {
			t.Fatal(err)
		}
		dir.Close()
	}

	d2 := e.driver()
	d2.Reconcile()
	ping(t, e.sockPath("mounted"))
	if !readOnly(t, filepath.Join(e.volRoot, "mounted")) {
		t.Error("mounted volume after the restart: got writable, want read-only")
	}
	if readOnly(t, filepath.Join(e.volRoot, "idle")) {
		t.Error("idle volume after the restart: got the stale view, want none")
	}
	if st := status(t, d2, "mounted"); st["serving"] != true || st["last_error"] != nil {
		t.Errorf("status: got serving %v last_error %v, want true and none", st["serving"], st["last_error"])
	}
	if err := d2.Remove(&volume.RemoveRequest{Name: "idle"}); err != nil {
		t.Fatalf("Remove idle: %v", err)
	}
}

func readOnly(t *testing.T, path string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Flags&unix.ST_RDONLY != 0
}

// Records written before records kept their options are read as they
// were meant: the owner in host ids, the mode bits and the policy become
// the options; a Create with the same options is the same volume; and a
// record written now still carries the fields an older build reads.
func TestLegacyRecords(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	legacy := map[string]*state.Volume{
		"r": {Name: "r", Mode: "relay", UID: 101000, GID: 100050, Perm: 0o600, Socket: "docker.sock", Target: "/var/run/docker.sock",
			Remap: &state.Remap{UID: 100000, GID: 100000, Size: 65536}},
		"p": {Name: "p", Mode: "policy", UID: 100000, GID: 100000, Perm: 0o660, Socket: "docker.sock", Target: "/var/run/docker.sock",
			Policy: "read-only", Remap: &state.Remap{UID: 100000, GID: 100000, Size: 65536}},
	}
	if err := state.WriteLegacy(e.store.LegacyPath(), legacy); err != nil {
		t.Fatal(err)
	}
	d := e.driver()
	st := status(t, d, "r")
	if st["owner"] != "101000:100050" || st["perm"] != "0600" {
		t.Fatalf("legacy relay volume: got owner %v perm %v, want 101000:100050 0600", st["owner"], st["perm"])
	}
	if st := status(t, d, "p"); st["policy"] != "read-only" || st["owner"] != "100000:100000" {
		t.Fatalf("legacy policy volume: got %v, want policy read-only owned 100000:100000", st)
	}
	create(t, d, "r", map[string]string{"uid": "1000", "gid": "50", "perm": "0600"})
	if err := d.Create(&volume.CreateRequest{Name: "r", Options: map[string]string{"uid": "1000"}}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create of r with other options: got %v, want ErrExists", err)
	}
	mount(t, d, "r", "id")
	var fst unix.Stat_t
	if err := unix.Lstat(e.sockPath("r"), &fst); err != nil || fst.Uid != 101000 || fst.Gid != 100050 || fst.Mode&0o777 != 0o600 {
		t.Fatalf("legacy volume's socket: %v, %d:%d %o, want 101000:100050 0600", err, fst.Uid, fst.Gid, fst.Mode&0o777)
	}

	// Written back with its options, and the fields an older build reads.
	vols, err := e.records()
	if err != nil {
		t.Fatal(err)
	}
	r := vols["r"]
	if r.Options["uid"] != "1000" || r.Options["gid"] != "50" || r.Options["perm"] != "0600" {
		t.Errorf("record options: got %v, want uid 1000 gid 50 perm 0600", r.Options)
	}
	if r.UID != 101000 || r.GID != 100050 || r.Perm != 0o600 {
		t.Errorf("record's older fields: got %d:%d %o, want 101000:100050 600", r.UID, r.GID, r.Perm)
	}
	create(t, d, "n", map[string]string{"policy": "no-escalation", "uid": "7"})
	vols, _ = e.records()
	if n := vols["n"]; n.Policy != "no-escalation" || n.UID != 100007 || n.Perm != 0o660 || n.Options["policy"] != "no-escalation" {
		t.Errorf("new record: got %+v, want the options and the older fields (policy, uid 100007, perm 660)", n)
	}
}

// A volume that names no mode is left to auto, which says in its Status
// why it chose: relay here, where the driver makes no user namespaces (the
// e2e suite covers idmap's branch on a real daemon). An explicit mode
// shows no choice. A Create left to auto of a volume auto could have made
// (here, one made when relay was the default) is the same volume.
func TestCreateAuto(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	d := e.driver()
	create(t, d, "auto", nil)
	create(t, d, "owner", map[string]string{"uid": "1000"})
	create(t, d, "named", map[string]string{"mode": "relay"})
	for name, want := range map[string]string{
		"auto":  chosenNoIdmap + "this process makes no user namespaces",
		"owner": chosenOwner,
		"named": "",
	} {
		st := status(t, d, name)
		got, _ := st["mode_chosen"].(string)
		if st["mode"] != "relay" || got != want || st["perm"] != "0660" {
			t.Errorf("%s: got mode %v, mode_chosen %q, perm %v; want relay, %q, 0660", name, st["mode"], got, st["perm"], want)
		}
	}
	// The reason is kept in the record, never among the options a mode sees.
	vols, err := e.records()
	if err != nil {
		t.Fatal(err)
	}
	if got := vols["auto"].Options[chosenKey]; got != chosenNoIdmap+"this process makes no user namespaces" {
		t.Errorf("record of auto: got %q, want the reason", got)
	}
	if v := d.view(vols["auto"]); v.Options[chosenKey] != "" || v.Chosen == "" {
		t.Errorf("view of auto: got options %v, chosen %q; want the reason out of the options", v.Options, v.Chosen)
	}
	b1, _ := e.recordBytes()
	create(t, d, "named", nil)
	create(t, d, "auto", map[string]string{"mode": "auto"})
	if b2, _ := e.recordBytes(); !bytes.Equal(b1, b2) {
		t.Errorf("state after Creates of the same volumes: got a change, want none")
	}
	if err := d.Create(&volume.CreateRequest{Name: "owner", Options: nil}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of owner (uid=1000) left to auto: got %v, want ErrExists", err)
	}
}
