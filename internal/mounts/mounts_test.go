package mounts

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/mounts/mounttest"
)

func TestMain(m *testing.M) { mounttest.Main(m) }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) for mounts")
	}
}

// A read-only bind covers the directory: what is made through the
// directory's own descriptor shows through it, nothing can be changed
// through it, and a socket in it still takes connections. Detach takes
// it away again.
func TestReadOnlyBind(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	parent, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	vol := filepath.Join(base, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	rw, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if err := ReadOnlyBind(rw, parent, "vol"); err != nil {
		t.Fatalf("ReadOnlyBind: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })

	view, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if ro, err := ReadOnly(view); err != nil || !ro {
		t.Fatalf("ReadOnly(view): got %v, %v, want true", ro, err)
	}
	if ro, err := ReadOnly(rw); err != nil || ro {
		t.Fatalf("ReadOnly(directory): got %v, %v, want false: it was opened before the bind", ro, err)
	}
	var st unix.Statfs_t
	unix.Fstatfs(int(view.Fd()), &st)
	for _, f := range []struct {
		name string
		bit  int64
	}{{"nosuid", unix.ST_NOSUID}, {"nodev", unix.ST_NODEV}, {"noexec", unix.ST_NOEXEC}} {
		if st.Flags&f.bit == 0 {
			t.Errorf("the view is not %s (flags %#x)", f.name, st.Flags)
		}
	}

	// A socket made through the directory is seen, and served, through
	// the view.
	addr := "/proc/self/fd/" + strconv.Itoa(int(rw.Fd())) + "/s.sock"
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	sock := filepath.Join(vol, "s.sock")
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("connect through the view: %v", err)
	}
	b := make([]byte, 2)
	c.Read(b)
	c.Close()
	if string(b) != "hi" {
		t.Fatalf("through the view: got %q, want hi", b)
	}

	// Nothing in it can be changed through the view.
	var before unix.Stat_t
	if err := unix.Lstat(sock, &before); err != nil {
		t.Fatal(err)
	}
	tries := map[string]error{
		"chmod":     os.Chmod(sock, 0o666),
		"chown":     os.Chown(sock, 1000, 1000),
		"utimes":    os.Chtimes(sock, time.Unix(0, 0), time.Unix(0, 0)),
		"unlink":    os.Remove(sock),
		"rename":    os.Rename(sock, filepath.Join(vol, "moved")),
		"create":    os.WriteFile(filepath.Join(vol, "f"), nil, 0o600),
		"setxattr":  unix.Setxattr(sock, "user.x", []byte("1"), 0),
		"chmod-dir": os.Chmod(vol, 0o777),
	}
	for what, err := range tries {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through the view: got %v, want EROFS", what, err)
		}
	}
	var after unix.Stat_t
	if err := unix.Lstat(sock, &after); err != nil || after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid || after.Mtim != before.Mtim {
		t.Fatalf("socket after the tries: %v, mode %o %d:%d, want it as before (%o %d:%d)", err, after.Mode, after.Uid, after.Gid, before.Mode, before.Uid, before.Gid)
	}

	if err := Detach(parent, "vol"); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	dir, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if ro, _ := ReadOnly(dir); ro {
		t.Fatal("after Detach: the directory is still read-only")
	}
	if err := Detach(parent, "vol"); err != nil {
		t.Fatalf("Detach of nothing: got %v, want nil", err)
	}
}

// The bind is of the directory's own mount only: a mount below the
// directory is not in it.
func TestReadOnlyBindLeavesSubmountsOut(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	parent, _ := os.Open(base)
	defer parent.Close()
	vol := filepath.Join(base, "vol")
	os.MkdirAll(filepath.Join(vol, "sub"), 0o755)
	os.WriteFile(filepath.Join(base, "marker"), nil, 0o600)
	if err := unix.Mount(base, filepath.Join(vol, "sub"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(vol, "sub"), unix.MNT_DETACH) })
	rw, _ := os.Open(vol)
	defer rw.Close()
	if err := ReadOnlyBind(rw, parent, "vol"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })
	if _, err := os.Stat(filepath.Join(vol, "sub", "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("submount seen through the view: got %v, want not exist", err)
	}
}
