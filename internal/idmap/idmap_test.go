package idmap

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/mounts"
	"github.com/sockrelay/sockrelay/internal/mounts/mounttest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the namespace holder.
	if len(os.Args) > 1 && os.Args[1] == HelperArg {
		RunHelper()
		os.Exit(0)
	}
	mounttest.Main(m)
}

func TestMappingValidate(t *testing.T) {
	cases := []struct {
		m    Mapping
		want string
	}{
		{Mapping{UID: 100000, GID: 100000, Size: 65536}, ""},
		{Mapping{UID: 231072, GID: 231072, Size: 65536}, ""},
		{Mapping{UID: 0, GID: 0, Size: 1<<32 - 1}, "userns-remapped"},
		{Mapping{UID: 100000, GID: 100000, Size: 0}, "userns-remapped"},
		{Mapping{UID: 1<<32 - 100, GID: 100000, Size: 65536}, "past the last id"},
	}
	for _, c := range cases {
		err := c.m.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("Validate(%v): got %q, want %q", c.m, got, c.want)
		}
	}
	if got, want := (Mapping{UID: 100000, GID: 100001, Size: 65536}).String(), "uid 0 100000 65536, gid 0 100001 65536"; got != want {
		t.Errorf("String: got %q, want %q", got, want)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) for user namespaces with maps and mounts")
	}
}

// The namespace has the mapping, is cached, and no holder process is
// left behind.
func TestNamespaces(t *testing.T) {
	needRoot(t)
	n := &Namespaces{Self: os.Args[0]}
	defer n.Close()
	m := Mapping{UID: 300000, GID: 400000, Size: 65536}
	f, err := n.Get(m)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := n.Get(m)
	if err != nil || f2 != f {
		t.Fatalf("second Get: got %v %v, want the cached descriptor", f2, err)
	}
	// The holder is reaped: this process has no children left.
	if kids := children(); len(kids) != 0 {
		t.Fatalf("holder processes left behind: %v", kids)
	}
	self, _ := os.Readlink("/proc/self/ns/user")
	nsLink, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if nsLink == self || !strings.HasPrefix(nsLink, "user:[") {
		t.Fatalf("namespace: got %q (ours %q), want a new user namespace", nsLink, self)
	}
}

// An idmapped bind of a socket owned by root shows it owned by the
// mapped ids, and connecting through it reaches the same listener.
func TestCloneAttachDetach(t *testing.T) {
	needRoot(t)
	dir, err := os.MkdirTemp("", "sridm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", src)
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
	n := &Namespaces{Self: os.Args[0]}
	defer n.Close()
	m := Mapping{UID: 100000, GID: 200000, Size: 65536}
	if err := n.Probe(src, m); err != nil {
		t.Skipf("idmapped mounts not supported here: %v", err)
	}
	ns, _ := n.Get(m)
	vol := filepath.Join(dir, "vol")
	os.Mkdir(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "docker.sock"), nil, 0o600)
	d, err := os.Open(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tree, err := Clone(src, ns)
	if err != nil {
		t.Fatal(err)
	}
	if err := mounts.Attach(tree, d, "docker.sock"); err != nil {
		t.Fatal(err)
	}
	tree.Close()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(vol, "docker.sock"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 100000 || st.Gid != 200000 || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Fatalf("through the idmapped mount: got %d:%d mode %o, want 100000:200000 socket", st.Uid, st.Gid, st.Mode)
	}
	// Through the mount the mapped root owns the socket; the mount is
	// read-only, so it cannot change the source's owner or mode.
	var srcBefore, srcAfter unix.Stat_t
	unix.Stat(src, &srcBefore)
	p := filepath.Join(vol, "docker.sock")
	for what, err := range map[string]error{
		"chmod":    os.Chmod(p, 0o666),
		"chown":    os.Chown(p, 101000, 101000),
		"utimes":   os.Chtimes(p, time.Unix(0, 0), time.Unix(0, 0)),
		"setxattr": unix.Setxattr(p, "user.x", []byte("1"), 0),
	} {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through the idmapped mount: got %v, want EROFS", what, err)
		}
	}
	unix.Stat(src, &srcAfter)
	if srcAfter.Mode != srcBefore.Mode || srcAfter.Uid != srcBefore.Uid || srcAfter.Gid != srcBefore.Gid || srcAfter.Mtim != srcBefore.Mtim {
		t.Errorf("the source socket changed: %o %d:%d, was %o %d:%d", srcAfter.Mode, srcAfter.Uid, srcAfter.Gid, srcBefore.Mode, srcBefore.Uid, srcBefore.Gid)
	}
	var sfs unix.Statfs_t
	unix.Statfs(p, &sfs)
	if want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC); sfs.Flags&want != want {
		t.Errorf("idmapped mount flags: got %#x, want ro, nosuid, nodev and noexec", sfs.Flags)
	}
	c, err := net.Dial("unix", filepath.Join(vol, "docker.sock"))
	if err != nil {
		t.Fatalf("connect through the idmapped mount: %v", err)
	}
	b := make([]byte, 2)
	c.Read(b)
	c.Close()
	if string(b) != "hi" {
		t.Fatalf("got %q, want hi", b)
	}
	if err := mounts.Detach(d, "docker.sock"); err != nil {
		t.Fatal(err)
	}
	unix.Stat(filepath.Join(vol, "docker.sock"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Fatalf("after Detach: got mode %o, want the plain file back", st.Mode)
	}
	if err := mounts.Detach(d, "docker.sock"); err != nil {
		t.Fatalf("Detach of nothing: got %v, want nil", err)
	}
}

// children lists the child processes of every thread of this process.
func children() []string {
	var kids []string
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}

// A filesystem that cannot be idmapped (proc) is refused with the kernel
// release and the filesystem named.
func TestProbeUnsupported(t *testing.T) {
	needRoot(t)
	n := &Namespaces{Self: os.Args[0]}
	defer n.Close()
	err := n.Probe("/proc/version", Mapping{UID: 100000, GID: 100000, Size: 65536})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Probe on procfs: got %v, want ErrUnsupported", err)
	}
	var u unix.Utsname
	unix.Uname(&u)
	for _, want := range []string{"kernel " + unix.ByteSliceToString(u.Release[:]), "proc filesystem", "5.12"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Probe error %q: want it to contain %q", err, want)
		}
	}
}
