package peer

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	id1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func TestContainerIDs(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup string
		want         []string
	}{
		{"v2 systemd", "0::/system.slice/docker-" + id1 + ".scope\n", []string{id1}},
		{"v2 cgroupfs", "0::/docker/" + id1 + "\n", []string{id1}},
		{"v1, every hierarchy", "12:memory:/docker/" + id1 + "\n11:cpu,cpuacct:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n0::/\n", []string{id1}},
		{"another cgroup namespace", "0::/../../system.slice/docker-" + id1 + ".scope\n", []string{id1}},
		{"cgroup-parent, cgroupfs", "0::/my-parent/" + id1, []string{id1}},
		{"cgroup-parent, systemd", "0::/my.slice/my-parent.slice/docker-" + id1 + ".scope\n", []string{id1}},
		{"Docker in Docker: outer first", "0::/docker/" + id1 + "/docker/" + id2 + "\n", []string{id1, id2}},
		{"nested below a scope", "0::/system.slice/docker-" + id1 + ".scope/init.scope\n", []string{id1}},
		{"host process", "0::/user.slice/user-0.slice/session-1.scope\n", nil},
		{"host, v1", "9:name=systemd:/\n4:memory:/process_api/8ef044f190e8f81c23b7cae658bbdc24\n0::/\n", nil},
		{"too short", "0::/docker/" + id1[:63] + "\n", nil},
		{"too long", "0::/docker/" + id1 + "0\n", nil},
		{"upper case is not an ID", "0::/docker/" + strings.ToUpper(id1) + "\n", nil},
		{"no path", "garbage\n0:\n", nil},
		{"colon in path", "0::/a:b/docker-" + id1 + ".scope", []string{id1}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ContainerIDs([]byte(tc.cgroup)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Whatever a cgroup file holds, ContainerIDs returns well-formed IDs that
// are in it, and never panics.
func FuzzContainerIDs(f *testing.F) {
	f.Add("0::/system.slice/docker-" + id1 + ".scope\n")
	f.Add("12:memory:/docker/" + id1 + "/docker/" + id2)
	f.Fuzz(func(t *testing.T, s string) {
		for _, id := range ContainerIDs([]byte(s)) {
			if _, ok := idIn([]byte(id)); !ok || !strings.Contains(s, id) {
				t.Fatalf("ID %q from %q", id, s)
			}
		}
	})
}

// fakeProc writes /proc/<pid>/cgroup files under a directory.
func fakeProc(t *testing.T, files map[int32]string) string {
	dir := t.TempDir()
	for pid, content := range files {
		d := filepath.Join(dir, fmt.Sprint(pid))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// daemonFake answers Inspect as dockerd would for the containers it
// holds, counting questions.
type daemonFake struct {
	known map[string]Container
	asked atomic.Int32
	delay time.Duration
	err   error
}

func (d *daemonFake) inspect(ctx context.Context, socket, ref string) (Container, error) {
	d.asked.Add(1)
	if d.delay > 0 {
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return Container{}, ctx.Err()
		}
	}
	if d.err != nil {
		return Container{}, d.err
	}
	// dockerd takes a full ID first, then a name.
	if c, ok := d.known[ref]; ok {
		return c, nil
	}
	for _, c := range d.known {
		if c.Name == ref {
			return c, nil
		}
	}
	return Container{}, fmt.Errorf("%w: %s", ErrNotFound, ref)
}

func TestIdentify(t *testing.T) {
	web := Container{ID: id1, Name: "web", Image: "alpine:3.20", ImageID: "sha256:aa"}
	proc := fakeProc(t, map[int32]string{
		10: "0::/system.slice/docker-" + id1 + ".scope\n",
		11: "0::/user.slice/session-1.scope\n",
		12: "0::/docker/" + id2 + "\n",
		13: "0::/docker/" + id1 + "/docker/" + id2 + "\n",
	})
	for _, tc := range []struct {
		name   string
		creds  *Creds
		daemon *daemonFake
		want   Identity
	}{
		{"a container", &Creds{PID: 10, pidfd: -1}, &daemonFake{known: map[string]Container{id1: web}}, Identity{Caller: CallerContainer, Container: web}},
		{"the host", &Creds{PID: 11, pidfd: -1}, &daemonFake{}, Identity{Caller: CallerHost}},
		{"no pid (another pid namespace)", &Creds{PID: 0, pidfd: -1}, &daemonFake{}, Identity{Caller: CallerUnknown}},
		{"gone", &Creds{PID: 99, pidfd: -1}, &daemonFake{}, Identity{Caller: CallerUnknown}},
		{"an ID the daemon does not know", &Creds{PID: 12, pidfd: -1}, &daemonFake{}, Identity{Caller: CallerContainer, Container: Container{ID: id2}}},
		{"a daemon that cannot answer", &Creds{PID: 10, pidfd: -1}, &daemonFake{err: fmt.Errorf("connection refused")}, Identity{Caller: CallerContainer, Container: Container{ID: id1}}},
		{"a container named like another's ID", &Creds{PID: 12, pidfd: -1},
			&daemonFake{known: map[string]Container{id1: {ID: id1, Name: id2}}}, Identity{Caller: CallerContainer, Container: Container{ID: id2}}},
		{"outer container first", &Creds{PID: 13, pidfd: -1},
			&daemonFake{known: map[string]Container{id1: web, id2: {ID: id2, Name: "inner"}}}, Identity{Caller: CallerContainer, Container: web}},
		{"inner known only", &Creds{PID: 13, pidfd: -1},
			&daemonFake{known: map[string]Container{id2: {ID: id2, Name: "inner"}}}, Identity{Caller: CallerContainer, Container: Container{ID: id2, Name: "inner"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{Proc: proc, Inspect: tc.daemon.inspect}
			got, final := r.Identify(tc.creds, "/s").Get(5 * time.Second)
			if !final || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v (final %v), want %+v", got, final, tc.want)
			}
		})
	}
}

// The daemon is asked once per container, however many connections come
// at once, and again only once its answer expires.
func TestIdentifyCached(t *testing.T) {
	web := Container{ID: id1, Name: "web", Image: "alpine"}
	d := &daemonFake{known: map[string]Container{id1: web}, delay: 20 * time.Millisecond}
	r := &Resolver{Proc: fakeProc(t, map[int32]string{10: "0::/docker/" + id1}), Inspect: d.inspect, TTL: 300 * time.Millisecond}
	var ps []*Pending
	for range 20 {
		ps = append(ps, r.Identify(&Creds{PID: 10, pidfd: -1}, "/s"))
	}
	for _, p := range ps {
		if got, _ := p.Get(5 * time.Second); got.Container != web {
			t.Fatalf("got %+v", got)
		}
	}
	if n := d.asked.Load(); n != 1 {
		t.Fatalf("the daemon was asked %d times, want 1", n)
	}
	// Cached: final at once.
	if got, final := r.Identify(&Creds{PID: 10, pidfd: -1}, "/s").Get(0); !final || got.Container != web {
		t.Fatalf("cached: got %+v final %v", got, final)
	}
	// Another daemon's socket is another question.
	r.Identify(&Creds{PID: 10, pidfd: -1}, "/other").Get(5 * time.Second)
	if n := d.asked.Load(); n != 2 {
		t.Fatalf("the daemon was asked %d times, want 2", n)
	}
	time.Sleep(400 * time.Millisecond)
	r.Identify(&Creds{PID: 10, pidfd: -1}, "/s").Get(5 * time.Second)
	if n := d.asked.Load(); n != 3 {
		t.Fatalf("after the TTL: the daemon was asked %d times, want 3", n)
	}
}

// A slow daemon never holds the caller: Get tells the ID alone after
// its wait, and everything once the answer has come.
func TestIdentifySlowDaemon(t *testing.T) {
	web := Container{ID: id1, Name: "web"}
	d := &daemonFake{known: map[string]Container{id1: web}, delay: 300 * time.Millisecond}
	r := &Resolver{Proc: fakeProc(t, map[int32]string{10: "0::/docker/" + id1}), Inspect: d.inspect}
	p := r.Identify(&Creds{PID: 10, pidfd: -1}, "/s")
	start := time.Now()
	got, final := p.Get(20 * time.Millisecond)
	if final || got != (Identity{Caller: CallerContainer, Container: Container{ID: id1}}) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("before the answer: got %+v final %v after %v", got, final, time.Since(start))
	}
	if got, final := p.Get(5 * time.Second); !final || got.Container != web {
		t.Fatalf("after the answer: got %+v final %v", got, final)
	}
}

// Through a real Unix socket: SO_PEERCRED gives this process, with a
// pidfd of it where the kernel has SO_PEERPIDFD, and /proc/self/cgroup
// places it.
func TestOfRealSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc, _ := sc.SyscallConn()
	creds, ok := Of(rc)
	if !ok || creds.PID != int32(os.Getpid()) || creds.UID != int32(os.Getuid()) {
		t.Fatalf("got %+v ok %v, want pid %d uid %d", creds, ok, os.Getpid(), os.Getuid())
	}
	if creds.pidfd >= 0 && !creds.alive() {
		t.Fatal("this process is not alive by its pidfd")
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := CallerHost
	if len(ContainerIDs(self)) > 0 {
		want = CallerContainer
	}
	got, _ := (&Resolver{}).Identify(&creds, "/s").Get(0)
	if got.Caller != want {
		t.Fatalf("got %+v, want caller %s", got, want)
	}
	creds.Close()
	if creds.pidfd != -1 {
		t.Fatal("Close left the pidfd")
	}
}

// A pidfd of a process that has exited says so: its cgroup, read by a
// pid that may be another's by now, is not believed.
func TestExitedPeerUnknown(t *testing.T) {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Skip("no /bin/true:", err)
	}
	pidfd, err := pidfdOpen(p.Pid)
	if err != nil {
		t.Skip("no pidfd_open:", err)
	}
	p.Wait()
	c := &Creds{PID: int32(p.Pid), pidfd: pidfd}
	defer c.Close()
	proc := fakeProc(t, map[int32]string{int32(p.Pid): "0::/docker/" + id1})
	if got, _ := (&Resolver{Proc: proc}).Identify(c, "/s").Get(0); got.Caller != CallerUnknown {
		t.Fatalf("an exited peer: got %+v, want caller unknown", got)
	}
}
