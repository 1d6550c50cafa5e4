package apiproxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// Each audit line names the client's container, as its cgroup and the
// daemon say, on every request of a kept-alive connection; the daemon is
// asked once. The client is this process, over a real socket; its cgroup
// file is a stand-in that puts it in a container.
func TestAuditNamesTheContainer(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	proc := t.TempDir()
	me := filepath.Join(proc, strconv.Itoa(os.Getpid()))
	os.Mkdir(me, 0o755)
	if err := os.WriteFile(filepath.Join(me, "cgroup"), []byte("0::/system.slice/docker-"+id+".scope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	asked := 0
	var askedSocket string
	res := &peer.Resolver{Proc: proc, Inspect: func(_ context.Context, socket, ref string) (peer.Container, error) {
		asked++
		askedSocket = socket
		if ref != id {
			return peer.Container{}, fmt.Errorf("%w: %s", peer.ErrNotFound, ref)
		}
		return peer.Container{ID: id, Name: "web\n{\"forged\":1}", Image: "alpine:3.20", ImageID: "sha256:aa"}, nil
	}}

	dir, err := os.MkdirTemp("", "srp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pol, _ := policy.Preset("full")
	sock := filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	up := upstream(t, dir)
	a := audit.New(&out)
	p := &Proxy{Volume: "v", Upstream: up, Policy: func() *policy.Policy { return pol },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: a, Stats: &Stats{}, Identify: res}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	f := &fixture{sock: sock}
	c := f.client()
	for range 3 {
		if code, body := get(t, c, "/_ping"); code != 200 {
			t.Fatalf("GET /_ping: %d %s", code, body)
		}
	}
	var lines []map[string]any
	for deadline := time.Now().Add(5 * time.Second); len(lines) < 3 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines = out.lines(t)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d audit lines, want 3", len(lines))
	}
	for _, l := range lines {
		for k, want := range map[string]any{"caller": "container", "container_id": id, "container_name": "web\n{\"forged\":1}",
			"image": "alpine:3.20", "image_id": "sha256:aa", "peer_pid": float64(os.Getpid())} {
			if l[k] != want {
				t.Errorf("audit %s: got %v, want %v", k, l[k], want)
			}
		}
	}
	if asked != 1 || askedSocket != up {
		t.Errorf("the daemon was asked %d times, at %s; want once, at the volume's upstream %s", asked, askedSocket, up)
	}
}
