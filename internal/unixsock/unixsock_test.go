package unixsock_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// shortDir returns a short temporary directory (sun_path is 108 bytes) and
// the directory opened.
func shortDir(t *testing.T) (string, *os.File) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, openDir(t, dir)
}

func openDir(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func self() unixsock.Owner {
	return unixsock.Owner{UID: os.Getuid(), GID: os.Getgid(), Perm: 0o600}
}

func listen(t *testing.T, dir *os.File, name string, o unixsock.Owner) *unixsock.Listener {
	t.Helper()
	ln, err := unixsock.Listen(dir, name, o)
	if err != nil {
		t.Fatalf("Listen: got %v, want nil", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// echoOnce accepts one connection and echoes one line back.
func serveEcho(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func roundTrip(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: got %v, want nil", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: got %v, want nil", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: got %q, %v, want %q, nil", buf, err, "ping")
	}
}

func lstat(t *testing.T, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: got %v, want nil", path, err)
	}
	return &st
}

func TestListenServes(t *testing.T) {
	dir, f := shortDir(t)
	ln := listen(t, f, "docker.sock", self())
	serveEcho(ln)
	roundTrip(t, filepath.Join(dir, "docker.sock"))
	if got := ln.Addr().Network(); got != "unix" {
		t.Errorf("Addr().Network(): got %v, want unix", got)
	}
}

func TestListenOwnerAndMode(t *testing.T) {
	o := unixsock.Owner{UID: os.Getuid(), GID: os.Getgid(), Perm: 0o640}
	if os.Getuid() == 0 {
		o.UID, o.GID = 12345, 23456
	}
	for _, perm := range []os.FileMode{0o640, 0o600, 0o666, 0o777} {
		t.Run(perm.String(), func(t *testing.T) {
			dir, f := shortDir(t)
			o := o
			o.Perm = perm
			// Extra bits beyond the permission bits are dropped.
			o.Perm |= os.ModeSetuid
			listen(t, f, "s", o)
			st := lstat(t, filepath.Join(dir, "s"))
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				t.Errorf("type: got %o, want a socket", st.Mode&unix.S_IFMT)
			}
			if got, want := st.Mode&0o7777, uint32(perm); got != want {
				t.Errorf("mode: got %04o, want %04o", got, want)
			}
			if int(st.Uid) != o.UID || int(st.Gid) != o.GID {
				t.Errorf("owner: got %d:%d, want %d:%d", st.Uid, st.Gid, o.UID, o.GID)
			}
		})
	}
}

// A client that gets through must see the final owner and mode: Listen
// sets them between bind and listen. A prober dials as fast as it can
// while Listen runs and stats the socket right after its first success.
func TestListenOwnerSetBeforeConnect(t *testing.T) {
	o := unixsock.Owner{UID: os.Getuid(), GID: os.Getgid(), Perm: 0o640}
	if os.Getuid() == 0 {
		o.UID, o.GID = 12345, 23456
	}
	for i := range 20 {
		dir, f := shortDir(t)
		path := filepath.Join(dir, "s")
		var stop atomic.Bool
		seen := make(chan *unix.Stat_t, 1)
		go func() {
			defer close(seen)
			for !stop.Load() {
				c, err := net.Dial("unix", path)
				if err != nil {
					continue
				}
				var st unix.Stat_t
				serr := unix.Lstat(path, &st)
				c.Close()
				if serr == nil {
					seen <- &st
				}
				return
			}
		}()
		ln, err := unixsock.Listen(f, "s", o)
		if err != nil {
			stop.Store(true)
			t.Fatalf("Listen: got %v, want nil", err)
		}
		var st *unix.Stat_t
		select {
		case st = <-seen:
		case <-time.After(10 * time.Second):
		}
		stop.Store(true)
		ln.Close()
		if st == nil {
			t.Fatalf("round %d: prober never connected", i)
		}
		if int(st.Uid) != o.UID || int(st.Gid) != o.GID || st.Mode&0o7777 != 0o640 {
			t.Fatalf("round %d: first connect saw %d:%d %04o, want %d:%d 0640", i, st.Uid, st.Gid, st.Mode&0o7777, o.UID, o.GID)
		}
	}
}

func TestListenChownFailsAsNonRoot(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root may chown to anyone")
	}
	dir, f := shortDir(t)
	_, err := unixsock.Listen(f, "s", unixsock.Owner{UID: 12345, GID: 23456, Perm: 0o660})
	if err == nil {
		t.Fatal("Listen with a foreign owner as non-root: got nil error, want an error")
	}
	if _, err := os.Lstat(filepath.Join(dir, "s")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after failed Listen: got %v, want it removed", err)
	}
}

// staleSocket leaves a socket file with nobody behind it.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial stale socket: got %v, want ECONNREFUSED", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	dir, f := shortDir(t)
	path := filepath.Join(dir, "s")
	staleSocket(t, path)
	ln := listen(t, f, "s", self())
	serveEcho(ln)
	roundTrip(t, path)
}

func TestListenLiveSocketInUse(t *testing.T) {
	dir, f := shortDir(t)
	path := filepath.Join(dir, "s")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })
	serveEcho(live)
	before := lstat(t, path)

	ln, err := unixsock.Listen(f, "s", self())
	if !errors.Is(err, unixsock.ErrInUse) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen over a live socket: got %v, want ErrInUse", err)
	}
	after := lstat(t, path)
	if after.Ino != before.Ino {
		t.Errorf("live socket inode: got %d, want %d (untouched)", after.Ino, before.Ino)
	}
	roundTrip(t, path)

	// Two unixsock listeners on one name: the second is refused too.
	dir2, f2 := shortDir(t)
	first := listen(t, f2, "s", self())
	serveEcho(first)
	if _, err := unixsock.Listen(f2, "s", self()); !errors.Is(err, unixsock.ErrInUse) {
		t.Errorf("second Listen: got %v, want ErrInUse", err)
	}
	roundTrip(t, filepath.Join(dir2, "s"))
}

func TestListenNonSocketEntryUntouched(t *testing.T) {
	tests := []struct {
		name  string
		make  func(t *testing.T, dir, path string)
		check func(t *testing.T, path string)
	}{
		{
			name: "regular file",
			make: func(t *testing.T, dir, path string) {
				if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
					t.Errorf("file: got %q, %v, want %q", b, err, "precious")
				}
			},
		},
		{
			name: "directory",
			make: func(t *testing.T, dir, path string) {
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				if fi, err := os.Lstat(path); err != nil || !fi.IsDir() {
					t.Errorf("directory: got %v, %v, want it still there", fi, err)
				}
			},
		},
		{
			name: "symlink to a stale socket",
			make: func(t *testing.T, dir, path string) {
				staleSocket(t, filepath.Join(dir, "real"))
				if err := os.Symlink("real", path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				if tgt, err := os.Readlink(path); err != nil || tgt != "real" {
					t.Errorf("symlink: got %q, %v, want %q", tgt, err, "real")
				}
				if fi, err := os.Lstat(filepath.Join(filepath.Dir(path), "real")); err != nil || fi.Mode().Type() != os.ModeSocket {
					t.Errorf("link target: got %v, %v, want the socket left alone", fi, err)
				}
			},
		},
		{
			name: "symlink to a file elsewhere",
			make: func(t *testing.T, dir, path string) {
				other := filepath.Join(t.TempDir(), "passwd")
				if err := os.WriteFile(other, []byte("root"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(other, path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				fi, err := os.Stat(path)
				if err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("link target: got %v, %v, want mode 0644 unchanged", fi, err)
				}
				if b, err := os.ReadFile(path); err != nil || string(b) != "root" {
					t.Errorf("link target: got %q, %v, want it unchanged", b, err)
				}
			},
		},
		{
			name: "dangling symlink",
			make: func(t *testing.T, dir, path string) {
				if err := os.Symlink("/nonexistent/x", path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				if tgt, err := os.Readlink(path); err != nil || tgt != "/nonexistent/x" {
					t.Errorf("symlink: got %q, %v, want it unchanged", tgt, err)
				}
			},
		},
		{
			name: "fifo",
			make: func(t *testing.T, dir, path string) {
				if err := unix.Mkfifo(path, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
					t.Errorf("fifo: got %v, %v, want it still there", fi, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, f := shortDir(t)
			path := filepath.Join(dir, "s")
			tt.make(t, dir, path)
			ln, err := unixsock.Listen(f, "s", unixsock.Owner{UID: os.Getuid(), GID: os.Getgid(), Perm: 0o666})
			if err == nil {
				ln.Close()
				t.Fatal("Listen over a non-socket: got nil error, want an error")
			}
			if errors.Is(err, unixsock.ErrInUse) {
				t.Errorf("Listen over a non-socket: got %v, want an error other than ErrInUse", err)
			}
			tt.check(t, path)
		})
	}
}

func TestCloseRemovesAndIsIdempotent(t *testing.T) {
	dir, f := shortDir(t)
	path := filepath.Join(dir, "s")
	ln, err := unixsock.Listen(f, "s", self())
	if err != nil {
		t.Fatalf("Listen: got %v, want nil", err)
	}
	// The caller's directory may be closed at once: the listener holds
	// its own descriptor.
	f.Close()
	if err := ln.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: got %v, want it removed", err)
	}
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: got %v, want net.ErrClosed", err)
	}
}

func TestCloseWhenFileAlreadyGone(t *testing.T) {
	dir, f := shortDir(t)
	ln, err := unixsock.Listen(f, "s", self())
	if err != nil {
		t.Fatalf("Listen: got %v, want nil", err)
	}
	if err := os.Remove(filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Errorf("Close with the file gone: got %v, want nil", err)
	}
}

// Directories deeper than sun_path allows still work: bind goes through
// /proc/self/fd.
func TestListenLongDirectory(t *testing.T) {
	base, _ := shortDir(t)
	dir := base
	for len(dir) <= 150 {
		dir = filepath.Join(dir, strings.Repeat("d", 30))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "docker.sock")
	if len(path) <= 108 {
		t.Fatalf("path length: got %d, want more than 108", len(path))
	}
	if _, err := net.Listen("unix", path); err == nil {
		t.Log("the plain path was accepted; the kernel or Go changed")
	}
	f := openDir(t, dir)
	ln := listen(t, f, "docker.sock", self())
	serveEcho(ln)

	st := lstat(t, path)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Fatalf("type: got %o, want a socket", st.Mode&unix.S_IFMT)
	}
	// A client reaches it through a short name for the directory.
	roundTrip(t, "/proc/self/fd/"+strconv.Itoa(int(f.Fd()))+"/docker.sock")

	if err := ln.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: got %v, want it removed", err)
	}
}

func TestListenBadNames(t *testing.T) {
	for _, name := range []string{"", "a/b", "/abs", ".", "..", "../x", "a\x00b", strings.Repeat("n", 200)} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			dir, f := shortDir(t)
			ln, err := unixsock.Listen(f, name, self())
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%q): got nil error, want an error", name)
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 0 {
				t.Errorf("directory after Listen(%q): got %v, want empty", name, ents)
			}
		})
	}
}

func TestListenNotADirectory(t *testing.T) {
	dir, _ := shortDir(t)
	p := filepath.Join(dir, "file")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ln, err := unixsock.Listen(f, "s", self()); err == nil {
		ln.Close()
		t.Errorf("Listen in a regular file: got nil error, want an error")
	}
}

func TestBacklog(t *testing.T) {
	if got := unixsock.Backlog(); got < 4096 {
		t.Errorf("Backlog: got %d, want at least 4096", got)
	}
}

// Listen and Close in a loop must not leak descriptors.
func TestListenCloseNoFDLeak(t *testing.T) {
	_, f := shortDir(t)
	// Warm up the poller so its descriptors are in the baseline.
	ln := listen(t, f, "s", self())
	ln.Close()
	before := countFDs(t)
	for range 50 {
		ln, err := unixsock.Listen(f, "s", self())
		if err != nil {
			t.Fatalf("Listen: got %v, want nil", err)
		}
		if err := ln.Close(); err != nil {
			t.Fatalf("Close: got %v, want nil", err)
		}
		// Failed Listens must not leak either.
		if _, err := unixsock.Listen(f, "a/b", self()); err == nil {
			t.Fatal("Listen(a/b): got nil error, want an error")
		}
	}
	if after := countFDs(t); after > before {
		t.Errorf("open descriptors: got %d, want at most %d", after, before)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}
