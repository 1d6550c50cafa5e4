package state_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/state"
)

func newStore(t *testing.T) (*state.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	s, err := state.New(dir)
	if err != nil {
		t.Fatalf("New: got %v, want nil", err)
	}
	return s, dir
}

func sample() map[string]*state.Volume {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	return map[string]*state.Volume{
		"a": {Name: "a", CreatedAt: at, Mode: "relay", UID: 100000, GID: 100000, Perm: 0o660, Socket: "docker.sock", Target: "/var/run/docker.sock"},
		"b.2": {Name: "b.2", CreatedAt: at, Mode: "relay", UID: 101000, GID: 102000, Perm: 0o600, Socket: "s", Target: "/var/run/x.sock",
			Remap: &state.Remap{UID: 100000, GID: 100000, Size: 65536}, Mounts: map[string]int{"id1": 2, "id2": 1}},
	}
}

// tempFiles lists entries of dir other than the state file.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir: got %v, want nil", err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != state.FileName {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestNewCreatesPrivateDir(t *testing.T) {
	_, dir := newStore(t)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("Stat: got %v, want nil", err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: got %v, want a 0700 directory", fi.Mode())
	}
}

func TestNewFailsUnderAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := state.New(filepath.Join(f, "state")); err == nil {
		t.Errorf("New under a file: got nil error, want an error")
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	s, _ := newStore(t)
	vols, err := s.ReadLegacy()
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	if vols == nil || len(vols) != 0 {
		t.Errorf("Load: got %v, want an empty non-nil map", vols)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s, dir := newStore(t)
	want := sample()
	if err := state.WriteLegacy(s.LegacyPath(), want); err != nil {
		t.Fatalf("Save: got %v, want nil", err)
	}
	got, err := s.ReadLegacy()
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load: got %+v, want %+v", got, want)
	}
	fi, err := os.Stat(s.LegacyPath())
	if err != nil {
		t.Fatalf("Stat: got %v, want nil", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("state file mode: got %v, want no group or other bits", fi.Mode())
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("directory: got extra entries %v, want none", left)
	}

	// Saving again replaces the whole state.
	if err := state.WriteLegacy(s.LegacyPath(), map[string]*state.Volume{}); err != nil {
		t.Fatalf("Save empty: got %v, want nil", err)
	}
	got, err = s.ReadLegacy()
	if err != nil || len(got) != 0 {
		t.Errorf("Load after empty Save: got %v, %v, want empty, nil", got, err)
	}
	// A nil map saves as an empty state too.
	if err := state.WriteLegacy(s.LegacyPath(), nil); err != nil {
		t.Fatalf("Save nil: got %v, want nil", err)
	}
	got, err = s.ReadLegacy()
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("Load after nil Save: got %v, %v, want empty, nil", got, err)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("directory: got extra entries %v, want none", left)
	}
}

func TestLegacyPath(t *testing.T) {
	s, dir := newStore(t)
	if got, want := s.LegacyPath(), filepath.Join(dir, state.FileName); got != want {
		t.Errorf("LegacyPath: got %v, want %v", got, want)
	}
}

func TestLoadCorrupt(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"empty file", ""},
		{"not JSON", "hello"},
		{"truncated", `{"version":1,"volumes":{"a":{"name":"a"`},
		{"wrong version", `{"version":2,"volumes":{}}`},
		{"no version", `{"volumes":{}}`},
		{"unknown field", `{"version":1,"volumes":{},"extra":true}`},
		{"unknown volume field", `{"version":1,"volumes":{"a":{"name":"a","bogus":1}}}`},
		{"name does not match key", `{"version":1,"volumes":{"a":{"name":"b"}}}`},
		{"null record", `{"version":1,"volumes":{"a":null}}`},
		{"wrong type", `{"version":"1","volumes":{}}`},
		{"array", `[]`},
		{"trailing garbage", `{"version":1,"volumes":{}} garbage`},
		{"two documents", `{"version":1,"volumes":{}}{"version":1,"volumes":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			if err := os.WriteFile(s.LegacyPath(), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			vols, err := s.ReadLegacy()
			if !errors.Is(err, state.ErrCorrupt) {
				t.Errorf("Load: got %v, %v, want an error wrapping ErrCorrupt", vols, err)
			}
		})
	}
}

func TestLoadValidEdgeCases(t *testing.T) {
	tests := []struct {
		name, content string
		want          int
	}{
		{"null volumes", `{"version":1,"volumes":null}`, 0},
		{"no volumes", `{"version":1}`, 0},
		{"trailing newline", "{\"version\":1,\"volumes\":{\"a\":{\"name\":\"a\"}}}\n\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			if err := os.WriteFile(s.LegacyPath(), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			vols, err := s.ReadLegacy()
			if err != nil {
				t.Fatalf("Load: got %v, want nil", err)
			}
			if vols == nil || len(vols) != tt.want {
				t.Errorf("Load: got %v, want %d volumes in a non-nil map", vols, tt.want)
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	s, _ := newStore(t)
	// A directory where the file should be: a read error, not "missing".
	if err := os.Mkdir(s.LegacyPath(), 0o700); err != nil {
		t.Fatal(err)
	}
	vols, err := s.ReadLegacy()
	if err == nil {
		t.Errorf("Load: got %v, nil error, want an error", vols)
	}
}

// failSave runs a Save that must fail and checks the previous state file is
// untouched and no temporary file is left behind.
func checkUntouched(t *testing.T, dir string, before []byte) {
	t.Helper()
	after, err := os.ReadFile(filepath.Join(dir, state.FileName))
	if err != nil {
		t.Fatalf("read state after failed Save: got %v, want nil", err)
	}
	if !bytes.Equal(after, before) {
		t.Errorf("state after failed Save: got %q, want it byte-identical to %q", after, before)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("directory after failed Save: got extra entries %v, want none", left)
	}
}

// A write that fails after the temporary file exists (here: the file size
// limit) must remove that file and leave the old state alone. Root is
// bound by RLIMIT_FSIZE too, so this works as any user.
func TestSaveFailsWritingKeepsOldState(t *testing.T) {
	s, dir := newStore(t)
	old := map[string]*state.Volume{"a": sample()["a"]}
	if err := state.WriteLegacy(s.LegacyPath(), old); err != nil {
		t.Fatalf("Save: got %v, want nil", err)
	}
	before, err := os.ReadFile(s.LegacyPath())
	if err != nil {
		t.Fatal(err)
	}

	big := sample()
	for i := range 50 {
		n := fmt.Sprintf("vol%d", i)
		big[n] = &state.Volume{Name: n, Mode: "relay", Socket: strings.Repeat("s", 60)}
	}
	// The Go runtime ignores SIGXFSZ, so write(2) fails with EFBIG.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = 512
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	err = state.WriteLegacy(s.LegacyPath(), big)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); rerr != nil {
		t.Fatalf("restore RLIMIT_FSIZE: %v", rerr)
	}
	if err == nil {
		t.Fatal("Save over the file size limit: got nil error, want an error")
	}
	if !errors.Is(err, syscall.EFBIG) {
		t.Errorf("Save: got %v, want an error wrapping EFBIG", err)
	}
	checkUntouched(t, dir, before)
	got, err := s.ReadLegacy()
	if err != nil || !reflect.DeepEqual(got, old) {
		t.Errorf("Load after failed Save: got %v, %v, want %v, nil", got, err, old)
	}
}

// A state directory replaced by a file: the temporary file cannot even be
// created. Root ignores permission bits, so this stands in for a
// read-only directory.
func TestSaveFailsStateDirReplaced(t *testing.T) {
	s, dir := newStore(t)
	if err := state.WriteLegacy(s.LegacyPath(), sample()); err != nil {
		t.Fatalf("Save: got %v, want nil", err)
	}
	before, err := os.ReadFile(s.LegacyPath())
	if err != nil {
		t.Fatal(err)
	}
	aside := dir + ".aside"
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := state.WriteLegacy(s.LegacyPath(), map[string]*state.Volume{}); err == nil {
		t.Error("Save with the state dir replaced by a file: got nil error, want an error")
	}
	if err := state.WriteLegacy(s.LegacyPath(), map[string]*state.Volume{}); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Save: got %v, want an error wrapping ENOTDIR", err)
	}
	checkUntouched(t, aside, before)

	// Once the directory is back, the old state is read and Save works.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadLegacy()
	if err != nil || !reflect.DeepEqual(got, sample()) {
		t.Errorf("Load after restore: got %v, %v, want %v, nil", got, err, sample())
	}
	if err := state.WriteLegacy(s.LegacyPath(), map[string]*state.Volume{}); err != nil {
		t.Errorf("Save after restore: got %v, want nil", err)
	}
}

// A directory squatting on the state file's name makes the rename fail,
// after the temporary file was written: it must be removed.
func TestSaveFailsRenameRemovesTemp(t *testing.T) {
	s, dir := newStore(t)
	if err := os.Mkdir(s.LegacyPath(), 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(s.LegacyPath(), "keep")
	if err := os.WriteFile(keep, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := state.WriteLegacy(s.LegacyPath(), sample()); err == nil {
		t.Fatal("Save onto a directory: got nil error, want an error")
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("directory after failed Save: got extra entries %v, want none", left)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep" {
		t.Errorf("squatting directory: got %q, %v, want it untouched", b, err)
	}
}

// An unencodable state fails before touching the disk.
func TestSaveFailsEncodingKeepsOldState(t *testing.T) {
	s, dir := newStore(t)
	if err := state.WriteLegacy(s.LegacyPath(), sample()); err != nil {
		t.Fatalf("Save: got %v, want nil", err)
	}
	before, err := os.ReadFile(s.LegacyPath())
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]*state.Volume{"x": {Name: "x", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	if err := state.WriteLegacy(s.LegacyPath(), bad); err == nil {
		t.Fatal("Save of a year-10000 time: got nil error, want an error")
	}
	checkUntouched(t, dir, before)
}

// Concurrent Saves are serialised: the file is always one whole state and
// no temporary file is left.
func TestSaveConcurrent(t *testing.T) {
	s, dir := newStore(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				n := fmt.Sprintf("v%d-%d", i, j)
				if err := state.WriteLegacy(s.LegacyPath(), map[string]*state.Volume{n: {Name: n, Mode: "relay"}}); err != nil {
					t.Errorf("Save: got %v, want nil", err)
				}
			}
		})
	}
	wg.Wait()
	got, err := s.ReadLegacy()
	if err != nil || len(got) != 1 {
		t.Errorf("Load: got %v, %v, want one volume, nil", got, err)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("directory: got extra entries %v, want none", left)
	}
}

func TestVolumeCloneAndMountCount(t *testing.T) {
	v := sample()["b.2"]
	if got, want := v.MountCount(), 3; got != want {
		t.Errorf("MountCount: got %v, want %v", got, want)
	}
	c := v.Clone()
	if !reflect.DeepEqual(c, v) {
		t.Errorf("Clone: got %+v, want %+v", c, v)
	}
	c.Mounts["id3"] = 5
	c.Name = "other"
	c.Remap.UID = 1
	if _, ok := v.Mounts["id3"]; ok || v.Name != "b.2" || v.Remap.UID != 100000 {
		t.Errorf("original after changing the clone: got %+v, want it unchanged", v)
	}
	empty := &state.Volume{Name: "e"}
	if got := empty.MountCount(); got != 0 {
		t.Errorf("MountCount of no mounts: got %v, want 0", got)
	}
	if c := empty.Clone(); c.Mounts != nil || c.Remap != nil {
		t.Errorf("Clone of nil Mounts and Remap: got %v, %v, want nil, nil", c.Mounts, c.Remap)
	}
}
