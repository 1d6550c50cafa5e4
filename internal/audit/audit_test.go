package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// slogLine is the line log/slog's JSON handler writes for e: what the
// audit log wrote before it had its own encoder, and what readers of the
// daemon's log parse.
func slogLine(t testing.TB, e Entry) []byte {
	var b bytes.Buffer
	h := slog.NewJSONHandler(&b, nil).WithAttrs([]slog.Attr{slog.String("log", "audit")})
	decision := "deny"
	if e.Allow {
		decision = "allow"
	}
	r := slog.NewRecord(e.Time, slog.LevelInfo, "request", 0)
	r.Add("volume", e.Volume, "policy", e.Policy, "method", e.Method, "path", e.Path,
		"decision", decision, "rule", e.Rule, "status", e.Status,
		"bytes_in", e.In, "bytes_out", e.Out, "duration_ms", e.Duration.Milliseconds())
	if len(e.Uses) > 0 {
		r.Add("uses", e.Uses)
	}
	addPeer(&r, e.Peer)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func addPeer(r *slog.Record, p *Peer) {
	if p == nil {
		return
	}
	r.Add("peer_pid", p.PID, "peer_uid", p.UID)
	if p.Caller != "" {
		r.Add("caller", p.Caller)
	}
	for _, f := range [][2]string{{"container_id", p.ContainerID}, {"container_name", p.ContainerName}, {"image", p.Image}, {"image_id", p.ImageID}} {
		if f[1] != "" {
			r.Add(f[0], f[1])
		}
	}
}

// The hand encoder writes exactly what slog wrote, hostile strings
// included.
func TestAuditLineIsSlogsLine(t *testing.T) {
	now := time.Date(2026, 11, 29, 11, 2, 11, 123456789, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		name string
		e    Entry
	}{
		{"allowed", Entry{Policy: "full", Method: "GET", Path: "/containers/json", Rule: "full", Allow: true, Status: 200, In: 0, Out: 3, Duration: 3 * time.Millisecond, Peer: &Peer{PID: 4242, UID: 100000}}},
		{"denied, no peer", Entry{Policy: "file:ci", Method: "POST", Path: "/containers/create", Rule: "no-privileged", Status: 403, In: 1621, Out: 104}},
		{"bad request", Entry{Rule: "bad-request", Status: 400, Peer: &Peer{PID: 1, UID: 0}}},
		{"a container", Entry{Method: "GET", Path: "/_ping", Status: 200, Peer: &Peer{PID: 4242, UID: 100000, Caller: "container",
			ContainerID: strings.Repeat("ab", 32), ContainerName: "web", Image: "alpine:3.20", ImageID: "sha256:" + strings.Repeat("cd", 32)}}},
		{"the host", Entry{Method: "GET", Path: "/_ping", Status: 200, Peer: &Peer{PID: 7, UID: 0, Caller: "host"}}},
		{"a hostile name and image", Entry{Method: "GET", Path: "/_ping", Status: 200, Peer: &Peer{PID: 7, UID: 0, Caller: "container",
			ContainerID: "x", ContainerName: "a\nb\r\n{\"forged\":1}\n\u2028", Image: "evil\r\n\x00\xff"}}},
		{"learning", Entry{Policy: "learn:ci", Method: "POST", Path: "/containers/create", Allow: true, Status: 201, Uses: []string{"binds=/srv/a\"b\n", "privileged"}}},
		{"learning, control characters", Entry{Policy: "learn:ci", Method: "POST", Path: "/x\b\f", Allow: true, Status: 201, Uses: []string{"binds=/srv/\b\f\x01\u2028"}}},
		{"hostile path", Entry{Method: "G\"ET", Path: "/a\"b\\c\n\r\t\x00\x1f\x7f<>&\u2028\u2029é\xff\xfe" + "😀", Rule: "path-not-canonical", Status: 400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Time, tc.e.Volume = now, "vol.1"
			got := appendEntry(nil, tc.e)
			want := slogLine(t, tc.e)
			if !bytes.Equal(got, want) {
				t.Fatalf("audit line\n got %s\nwant %s", got, want)
			}
		})
	}
}

// Whatever a client sends as method or path, the line is slog's line:
// one line of valid JSON.
func FuzzAuditLine(f *testing.F) {
	f.Add("GET", "/containers/json")
	f.Add("P\"OST", "/a\\b\n\u2028\xff")
	f.Fuzz(func(t *testing.T, method, path string) {
		e := Entry{Time: time.Unix(1700000000, 5), Volume: "v", Policy: "full", Method: method, Path: path, Rule: "r", Status: 200,
			Peer: &Peer{PID: 7, UID: 100000, Caller: "container", ContainerID: path, ContainerName: method, Image: path + method},
			Uses: []string{"binds=" + path}}
		got := appendEntry(nil, e)
		if want := slogLine(t, e); !bytes.Equal(got, want) {
			t.Fatalf("audit line\n got %q\nwant %q", got, want)
		}
		if bytes.Count(got, []byte("\n")) != 1 || !json.Valid(got) {
			t.Fatalf("not one line of JSON: %q", got)
		}
	})
}

// Lines written at once by many requests all arrive whole, in writes
// that may carry several.
func TestAuditLogConcurrentLinesWhole(t *testing.T) {
	var out syncBuffer
	a := New(&out)
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				a.write(fmt.Appendf(nil, "{\"g\":%d,\"i\":%d}\n", g, i))
			}
		})
	}
	wg.Wait()
	seen := map[[2]int]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n") {
		var m struct{ G, I int }
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		seen[[2]int{m.G, m.I}] = true
	}
	if len(seen) != 50*200 {
		t.Fatalf("got %d distinct lines, want %d", len(seen), 50*200)
	}
}

// blockingWriter holds every write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	w.n += len(p)
	w.mu.Unlock()
	return len(p), nil
}

// An output that does not move holds requests back once maxPending bytes
// wait: memory stays bounded and no line is dropped.
func TestAuditLogBoundedWhenOutputStalls(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	a := New(w)
	line := []byte(strings.Repeat("x", 1023) + "\n")
	const writers = 600 // 600 KiB, over twice maxPending
	var returned sync.WaitGroup
	done := make(chan struct{})
	var count sync.Mutex
	n := 0
	for i := 0; i < writers; i++ {
		returned.Go(func() {
			a.write(line)
			count.Lock()
			n++
			count.Unlock()
		})
	}
	go func() { returned.Wait(); close(done) }()
	time.Sleep(200 * time.Millisecond)
	a.mu.Lock()
	pending := len(a.pending)
	a.mu.Unlock()
	count.Lock()
	got := n
	count.Unlock()
	if pending > maxPending+len(line) {
		t.Fatalf("%d bytes pending with the output stalled, want at most %d", pending, maxPending+len(line))
	}
	if got == writers {
		t.Fatalf("all %d writes returned with the output stalled; want them held back", writers)
	}
	close(w.release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writes still held after the output moved")
	}
	if w.n != writers*len(line) {
		t.Fatalf("wrote %d bytes, want %d", w.n, writers*len(line))
	}
}

// On a pipe, the log writes through its own non-blocking open of it, in
// atomic writes cut at line ends: lines of another writer of the same
// pipe (the operational log, on the original descriptor) never land
// inside an audit line, even with the pipe full and batches far larger
// than PIPE_BUF. The original descriptor stays blocking.
func TestAuditLogPipeLinesNeverInterleave(t *testing.T) {
	// A blocking pipe, as a plugin's stdout is (os.Pipe's are not).
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	defer r.Close()
	defer w.Close()
	a := New(w)
	defer a.Close()
	if a.prc == nil {
		t.Fatal("the audit log did not open the pipe for itself")
	}
	if fl, err := unix.FcntlInt(uintptr(fdOf(t, w)), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Fatalf("original descriptor flags %#o, %v: want it left blocking", fl, err)
	}

	const writers, lines = 20, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				// 300 to 1300 bytes: batches of many lines, over PIPE_BUF.
				pad := strings.Repeat("a", 300+(g*lines+i)%1000)
				a.write(fmt.Appendf(nil, "{\"g\":%d,\"i\":%d,\"pad\":%q}\n", g, i, pad))
			}
		})
	}
	wg.Go(func() { // the other writer: whole lines on the original descriptor
		for i := range lines {
			fmt.Fprintf(w, "{\"other\":%d,\"pad\":%q}\n", i, strings.Repeat("b", 2000))
		}
	})
	got := make(chan []string)
	go func() {
		// Read slowly at first, so the pipe fills and writers wait.
		time.Sleep(100 * time.Millisecond)
		b, _ := io.ReadAll(r)
		got <- strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}()
	wg.Wait()
	a.Close()
	w.Close()
	audit, other := 0, 0
	for _, l := range <-got {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("a line broken by another writer's: %.120q: %v", l, err)
		}
		if _, ok := m["other"]; ok {
			other++
		} else {
			audit++
		}
	}
	if audit != writers*lines || other != lines {
		t.Fatalf("got %d audit and %d other lines, want %d and %d", audit, other, writers*lines, lines)
	}
}

func fdOf(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// A file that is not a pipe is written as it is.
func TestAuditLogRegularFileAsIs(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := New(f)
	defer a.Close()
	if a.prc != nil {
		t.Fatal("the audit log opened a regular file again; want it written as it is")
	}
	a.write([]byte("{\"a\":1}\n"))
	a.write([]byte("{\"a\":2}\n"))
	b, err := os.ReadFile(f.Name())
	if err != nil || string(b) != "{\"a\":1}\n{\"a\":2}\n" {
		t.Fatalf("file holds %q, %v", b, err)
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// On a pipe, lines wait for linger to share a write, then go without a
// Close; many lines written within it arrive in few writes.
func TestAuditLogPipeLingers(t *testing.T) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fds[0], true) // the reader's deadline bounds the test
	r, w := os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	defer r.Close()
	defer w.Close()
	a := New(w)
	defer a.Close()
	const n = 20
	for i := range n {
		a.write(fmt.Appendf(nil, "{\"i\":%d}\n", i))
	}
	got, reads := 0, 0
	buf := make([]byte, 64<<10)
	r.SetReadDeadline(time.Now().Add(10 * linger))
	for got < n {
		k, err := r.Read(buf)
		if err != nil {
			t.Fatalf("after %d lines in %d reads: %v; want every line within the linger, without a Close", got, reads, err)
		}
		got += bytes.Count(buf[:k], []byte("\n"))
		reads++
	}
	if reads > 2 {
		t.Errorf("%d lines written at once came in %d reads, want them to share a write", n, reads)
	}
}
