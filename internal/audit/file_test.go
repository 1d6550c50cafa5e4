package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s ends inside a line", path)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !json.Valid([]byte(l)) {
			t.Fatalf("%s: not a JSON line: %q", path, l)
		}
		lines = append(lines, l)
	}
	return lines
}

func entry(i int) Entry {
	return Entry{Time: time.Unix(1700000000, 0), Volume: "v", Policy: "full", Method: "GET",
		Path: fmt.Sprintf("/containers/%d/json", i), Allow: true, Rule: "full", Status: 200,
		Peer: &Peer{PID: 1, UID: 0, Caller: "host"}}
}

// Lines go to the file, whole, mode 0640, and the file is rotated by
// size: Path.1 the newest of the rotated, at most Keep of them, none
// larger than MaxSize, and the newest lines all kept.
func TestAuditFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenFile(FileConfig{Path: path, MaxSize: MinFileSize, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // about 4 files of 64 KiB
	for i := range n {
		a.Request(entry(i))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", st.Mode().Perm())
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatalf("%s.3 kept (Keep 2): %v", path, err)
	}
	var all []string
	for _, p := range []string{path + ".2", path + ".1", path} {
		if st, err := os.Stat(p); err != nil || st.Size() > MinFileSize {
			t.Fatalf("%s: %v, size over %d", p, err, MinFileSize)
		}
		all = append(all, fileLines(t, p)...)
	}
	// The kept lines are the newest, in order, with none missing.
	last := n - len(all)
	if last <= 0 {
		t.Fatalf("%d lines in 3 files: no rotation happened", len(all))
	}
	for i, l := range all {
		if want := fmt.Sprintf(`"path":"/containers/%d/json"`, last+i); !strings.Contains(l, want) {
			t.Fatalf("line %d: %s, want %s", i, l, want)
		}
	}
}

// An existing file is appended to, and its size counts toward rotation.
func TestAuditFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(path, []byte("{\"old\":1}\n"), 0o600)
	a, err := OpenFile(FileConfig{Path: path, MaxSize: MinFileSize, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	a.Request(entry(1))
	a.Close()
	lines := fileLines(t, path)
	if len(lines) != 2 || lines[0] != `{"old":1}` {
		t.Fatalf("got %q", lines)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("an existing file's mode changed to %v", st.Mode().Perm())
	}
}

// Bad paths are refused at open, with what is wrong, and change nothing.
func TestAuditFileBadPath(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	os.WriteFile(filepath.Join(dir, "afile"), nil, 0o644)
	for _, tc := range []struct {
		name string
		cfg  FileConfig
		want string
	}{
		{"missing directory", FileConfig{Path: filepath.Join(dir, "nodir", "audit.log"), MaxSize: MinFileSize, Keep: 1}, "no such file or directory"},
		{"parent is a file", FileConfig{Path: filepath.Join(dir, "afile", "audit.log"), MaxSize: MinFileSize, Keep: 1}, "not a directory"},
		{"a symbolic link", FileConfig{Path: filepath.Join(dir, "link"), MaxSize: MinFileSize, Keep: 1}, "too many levels of symbolic links"},
		{"a directory", FileConfig{Path: filepath.Join(dir, "adir"), MaxSize: MinFileSize, Keep: 1}, "is a directory"},
		{"too small", FileConfig{Path: filepath.Join(dir, "x.log"), MaxSize: 100, Keep: 1}, "maximum size"},
		{"keep none", FileConfig{Path: filepath.Join(dir, "x.log"), MaxSize: MinFileSize, Keep: 0}, "keep at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := OpenFile(tc.cfg)
			if err == nil {
				a.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.log")); !os.IsNotExist(err) {
		t.Fatalf("a refused setting created the file: %v", err)
	}
	if os.Getuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if _, err := OpenFile(FileConfig{Path: filepath.Join(ro, "audit.log"), MaxSize: MinFileSize, Keep: 1}); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("an unwritable directory: got %v", err)
		}
	}
}

// fakeDisk is a file that fails: full after room bytes (a partial write,
// then ENOSPC), or stuck in write until released.
type fakeDisk struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	room  int
	stuck chan struct{} // nil: not stuck
}

func (d *fakeDisk) Write(p []byte) (int, error) {
	if d.stuck != nil {
		<-d.stuck
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(p) > d.room {
		n := d.room
		d.buf.Write(p[:n])
		d.room = 0
		return n, syscall.ENOSPC
	}
	d.room -= len(p)
	return d.buf.Write(p)
}

func (d *fakeDisk) Truncate(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.room += d.buf.Len() - int(size)
	d.buf.Truncate(int(size))
	return nil
}

func (*fakeDisk) Close() error { return nil }

func (d *fakeDisk) setRoom(n int) {
	d.mu.Lock()
	d.room = n
	d.mu.Unlock()
}

func (d *fakeDisk) contents() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.buf.String()
}

func withDisk(t *testing.T, d *fakeDisk) {
	old := openFile
	openFile = func(string) (appendFile, int64, error) { return d, 0, nil }
	t.Cleanup(func() { openFile = old })
}

// logBuffer collects the sink's warnings.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A full disk: the write that does not fit is undone (no part of a line
// stays), the lines are dropped and counted, a warning says so, and once
// there is room again lines are written, whole.
func TestAuditFileFull(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprint("refuse=", refuse), func(t *testing.T) {
			d := &fakeDisk{room: 100}
			withDisk(t, d)
			var warn logBuffer
			a, err := OpenFile(FileConfig{Path: filepath.Join(t.TempDir(), "a.log"), MaxSize: 1 << 20, Keep: 1, Refuse: refuse, Log: slog.New(slog.NewTextHandler(&warn, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			a.Request(entry(1)) // longer than 100 bytes
			waitFor(t, func() bool { return a.Dropped() == 1 })
			if got := d.contents(); got != "" {
				t.Fatalf("part of a line stayed: %q", got)
			}
			if a.Refusing() != refuse {
				t.Fatalf("Refusing: got %v, want %v", a.Refusing(), refuse)
			}
			if w := warn.String(); !strings.Contains(w, "no space left on device") || !strings.Contains(w, "audit lines dropped") {
				t.Fatalf("warnings: %s", w)
			}
			d.setRoom(1 << 20)
			a.Request(entry(2))
			waitFor(t, func() bool { return strings.Contains(d.contents(), "/containers/2/json") })
			if a.Refusing() {
				t.Fatal("still refusing after a write succeeded")
			}
			sc := bufio.NewScanner(strings.NewReader(d.contents()))
			for sc.Scan() {
				if !json.Valid(sc.Bytes()) {
					t.Fatalf("not a JSON line: %q", sc.Text())
				}
			}
		})
	}
}

// A disk that does not answer never holds a request: lines queue up to
// MaxQueue, then are dropped (and, set to refuse, requests refused);
// when the disk answers, what was queued is written.
func TestAuditFileStuckNeverBlocks(t *testing.T) {
	d := &fakeDisk{room: 1 << 30, stuck: make(chan struct{})}
	withDisk(t, d)
	a, err := OpenFile(FileConfig{Path: filepath.Join(t.TempDir(), "a.log"), MaxSize: 1 << 30, Keep: 1, Refuse: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	const n = 40000 // about 8 MiB of lines: twice MaxQueue
	go func() {
		for i := range n {
			a.Request(entry(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("requests waited for a stuck disk")
	}
	if a.Dropped() == 0 || !a.Refusing() {
		t.Fatalf("a stuck disk: dropped %d, refusing %v; want lines dropped and requests refused", a.Dropped(), a.Refusing())
	}
	close(d.stuck)
	a.Close()
	got := strings.Count(d.contents(), "\n")
	if got == 0 || uint64(got)+a.Dropped() != n {
		t.Fatalf("written %d + dropped %d, want %d", got, a.Dropped(), n)
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !f(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
