package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// upstream is a fake daemon on a real Unix socket.
func upstream(t testing.TB, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("/v1.41/containers/json", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "[]") })
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		io.Copy(w, io.LimitReader(seeded{}, n))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: chunked, a chunk per write.
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		buf := make([]byte, 32<<10)
		for ; n > 0; n -= len(buf) {
			w.Write(buf[:min(n, len(buf))])
		}
	})
	mux.HandleFunc("/v1.41/containers/create", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"Id":"x","Len":%d}`, len(b))
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		// A stream: each event is flushed; the next waits for the client
		// to have seen the previous one (the test says so on /ack).
		f := w.(http.Flusher)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "{\"event\":%d}\n", i)
			f.Flush()
			select {
			case <-acks:
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("/containers/x/attach", func(w http.ResponseWriter, r *http.Request) {
		// Like dockerd: 101, then a raw stream; echo stdin, then "bye"
		// after the client's half-close.
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
		c.Write([]byte("bye"))
		c.(*net.UnixConn).CloseWrite()
	})
	mux.HandleFunc("/grpc", serveGRPC)
	mux.HandleFunc("/v1.51/grpc", serveGRPC)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

var acks = make(chan struct{}, 1)

// seeded is a deterministic byte stream.
type seeded struct{}

func (seeded) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return len(b), nil
}

type fixture struct {
	sock     string
	upstream string // the fake daemon's socket
	audit    *syncBuffer
	stats    *Stats
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func start(t testing.TB, preset string) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "srp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pol, err := policy.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{sock: filepath.Join(dir, "p.sock"), audit: &syncBuffer{}, stats: &Stats{}}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	f.upstream = upstream(t, dir)
	p := &Proxy{
		Volume: "v", Upstream: f.upstream, Policy: func() *policy.Policy { return pol },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: audit.New(f.audit), Stats: f.stats,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f
}

func (f *fixture) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", f.sock)
		},
		MaxIdleConnsPerHost: 1,
	}}
}

func (f *fixture) dial(t *testing.T) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get("http://docker" + url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Every request on a kept-alive connection is decided, and answered.
func TestKeptAliveEachRequestDecided(t *testing.T) {
	f := start(t, "read-only")
	c := f.client()
	for i := 0; i < 3; i++ {
		if code, body := get(t, c, "/v1.41/containers/json"); code != 200 || body != "[]" {
			t.Fatalf("request %d: got %d %q, want 200 []", i, code, body)
		}
	}
	resp, err := c.Post("http://docker/v1.41/containers/create", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), `"message":"sockrelay: read-only`) {
		t.Fatalf("POST under read-only: got %d %s, want 403 with the sockrelay message", resp.StatusCode, b)
	}
	if got := f.stats.Requests.Load(); got != 4 {
		t.Fatalf("requests counted: got %d, want 4", got)
	}
}

// Pipelined requests: the second, denied, is refused even though it came
// in the same write as an allowed one.
func TestPipelinedSecondRequestDenied(t *testing.T) {
	f := start(t, "read-only")
	c := f.dial(t)
	io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nPOST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}")
	br := bufio.NewReader(c)
	r1, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := io.ReadAll(r1.Body)
	r2, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	if r1.StatusCode != 200 || string(b1) != "OK" || r2.StatusCode != 403 || !strings.Contains(string(b2), "sockrelay: read-only") {
		t.Fatalf("pipelined: got %d %q then %d %q, want 200 OK then 403 sockrelay", r1.StatusCode, b1, r2.StatusCode, b2)
	}
}

// Transfer-Encoding with Content-Length is refused with 400, and nothing
// reaches the daemon.
func TestSmugglingRefused(t *testing.T) {
	f := start(t, "full")
	for _, raw := range []string{
		"POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length : 4\r\n\r\nabcd",
	} {
		c := f.dial(t)
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 {
			t.Errorf("%q: got %d, want 400", raw, resp.StatusCode)
		}
	}
}

// Bulk bodies in both directions arrive intact (spliced, not buffered).
func TestBulkBothWays(t *testing.T) {
	f := start(t, "full")
	c := f.client()
	const n = 32 << 20
	resp, err := c.Get(fmt.Sprintf("http://docker/download?n=%d", n))
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	k, _ := io.Copy(got, resp.Body)
	resp.Body.Close()
	want := sha256.New()
	io.Copy(want, io.LimitReader(seeded{}, n))
	if k != n || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("download: got %d bytes, sha mismatch=%v", k, !bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	payload := make([]byte, 16<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // unknown length: chunked
		}
		resp, err := c.Post("http://docker/upload", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %x", len(payload), sum); string(b) != want {
			t.Fatalf("upload (chunked=%v): got %q, want %q", chunked, b, want)
		}
	}
}

// A stream passes each event as it comes.
func TestStreamPassesAtOnce(t *testing.T) {
	f := start(t, "read-only")
	resp, err := f.client().Get("http://docker/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("{\"event\":%d}\n", i) {
			t.Fatalf("event %d: got %q %v", i, line, err)
		}
		acks <- struct{}{} // only now does the daemon send the next one
	}
}

// An allowed upgrade becomes a raw stream with half-close passed on; a
// policy that allows no upgrade refuses it.
func TestUpgradeHalfClose(t *testing.T) {
	f := start(t, "no-escalation")
	c := f.dial(t)
	io.WriteString(c, "POST /containers/x/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("attach: got %v %v, want 101", resp, err)
	}
	io.WriteString(c, "hello")
	c.CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "hellobye" {
		t.Fatalf("after the half-close: got %q %v, want hellobye", rest, err)
	}

	ro := start(t, "read-only")
	c = ro.dial(t)
	io.WriteString(c, "POST /containers/x/attach HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("attach under read-only: got %v %v, want 403", resp, err)
	}
}

// Inspected bodies are bounded; a privileged create is refused with a
// message for the user; the audit log has a line for each request.
func TestCreateChecksAndAudit(t *testing.T) {
	f := start(t, "no-escalation")
	c := f.client()
	post := func(body string) (int, string) {
		resp, err := c.Post("http://docker/v1.41/containers/create", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"Image":"x","HostConfig":{"Privileged":true}}`); code != 403 || !strings.Contains(body, "sockrelay: ") || !strings.Contains(body, "Privileged") {
		t.Fatalf("privileged create: got %d %s, want 403 naming Privileged", code, body)
	}
	if code, body := post(`{"hostconfig":{"usernsmode":"host"}}`); code != 403 {
		t.Fatalf("usernsmode host in lower case: got %d %s, want 403", code, body)
	}
	if code, body := post(`{"Image":"x"}`); code != 201 || body != `{"Id":"x","Len":13}` {
		t.Fatalf("plain create: got %d %s, want 201 with the body forwarded whole", code, body)
	}
	big := `{"Image":"` + strings.Repeat("x", policy.MaxBody) + `"}`
	if code, _ := post(big); code != 413 {
		t.Fatalf("create with a %d-byte body: got %d, want 413", len(big), code)
	}
	// The refused big request is audited once its body is drained.
	var lines []map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if lines = f.audit.lines(t); len(lines) >= 4 {
			break
		}
	}
	if len(lines) != 4 {
		t.Fatalf("audit: got %d lines, want 4", len(lines))
	}
	// Lines of different connections may come in any order.
	var first, allowed map[string]any
	for _, l := range lines {
		switch {
		case l["rule"] == "no-privileged":
			first = l
		case l["decision"] == "allow":
			allowed = l
		}
	}
	if first == nil || allowed == nil {
		t.Fatalf("audit: no line for the privileged create or the allowed one: %v", lines)
	}
	for k, want := range map[string]any{"volume": "v", "method": "POST", "path": "/containers/create", "decision": "deny", "status": 403.0, "peer_pid": float64(os.Getpid()), "peer_uid": float64(os.Getuid()), "policy": "no-escalation"} {
		if first[k] != want {
			t.Errorf("audit %s: got %v, want %v", k, first[k], want)
		}
	}
	if allowed["status"] != 201.0 || allowed["bytes_in"] != 13.0 || allowed["rule"] != "" {
		t.Errorf("audit of the allowed create: got %v, want status 201, 13 bytes in", allowed)
	}
	for _, l := range lines {
		raw, _ := json.Marshal(l)
		if strings.Contains(string(raw), "Privileged") || strings.Contains(string(raw), "usernsmode") {
			t.Errorf("audit line carries the body: %s", raw)
		}
	}
}

// Shutdown cuts an open stream and Serve returns.
func TestShutdownCutsStreams(t *testing.T) {
	dir, _ := os.MkdirTemp("", "srp")
	defer os.RemoveAll(dir)
	pol, _ := policy.Preset("full")
	sock := filepath.Join(dir, "p.sock")
	ln, _ := net.Listen("unix", sock)
	p := &Proxy{Volume: "v", Upstream: upstream(t, dir), Policy: func() *policy.Policy { return pol },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: audit.New(io.Discard), Stats: &Stats{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	c, _ := net.Dial("unix", sock)
	defer c.Close()
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: d\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after shutdown with a stream open")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("client after shutdown: got %v, want EOF", err)
	}
}

// A client that sends half a header and stalls, and clients that send
// nothing, do not keep others from being served; the stalled ones hold no
// reader while they send nothing.
func TestStalledClientsDoNotStarveOthers(t *testing.T) {
	f := start(t, "full")
	var conns []net.Conn
	for i := range 100 {
		c := f.dial(t)
		if i%2 == 0 {
			io.WriteString(c, "GET /_ping HTTP/1.1\r\nHo") // and nothing more
		}
		conns = append(conns, c)
	}
	c := f.client()
	for i := range 50 {
		if code, body := get(t, c, "/_ping"); code != 200 || body != "OK" {
			t.Fatalf("ping %d beside 100 stalled clients: got %d %q", i, code, body)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// Expect: 100-continue gets its go-ahead from the proxy, which reads the
// body, for inspected and passed-through bodies alike.
func TestExpectContinue(t *testing.T) {
	f := start(t, "no-escalation")
	for _, tc := range []struct{ target, body, want string }{
		{"/v1.41/containers/create", `{"Image":"x"}`, `{"Id":"x","Len":13}`},
		{"/upload", "hello", "5 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
	} {
		c := f.dial(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", tc.target, len(tc.body))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("%s: got %q %v, want the 100 Continue first", tc.target, line, err)
		}
		br.ReadString('\n')
		io.WriteString(c, tc.body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != tc.want {
			t.Fatalf("%s: got %d %q, want %q", tc.target, resp.StatusCode, b, tc.want)
		}
	}
}

// A kept-alive connection's later requests are taken in by the read that
// waits for them: one larger than that first read (a long header and a
// body) arrives whole, and so does a small one after it.
func TestLaterRequestsLargerThanFirstRead(t *testing.T) {
	f := start(t, "full")
	c := f.dial(t)
	br := bufio.NewReader(c)
	roundTrip := func(raw string) (*http.Response, string) {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := roundTrip("GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"); resp.StatusCode != 200 || body != "OK" {
		t.Fatalf("first: got %d %q", resp.StatusCode, body)
	}
	time.Sleep(50 * time.Millisecond)                        // the proxy waits for the next request
	payload := bytes.Repeat([]byte("0123456789abcdef"), 640) // 10 KiB
	sum := sha256.Sum256(payload)
	raw := "POST /upload HTTP/1.1\r\nHost: d\r\nX-Pad: " + strings.Repeat("p", 3000) + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(payload)) + string(payload)
	want := fmt.Sprintf("%d %x", len(payload), sum)
	if resp, body := roundTrip(raw); resp.StatusCode != 200 || body != want {
		t.Fatalf("large: got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	time.Sleep(50 * time.Millisecond)
	if resp, body := roundTrip("GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"); resp.StatusCode != 200 || body != "OK" {
		t.Fatalf("third: got %d %q", resp.StatusCode, body)
	}
	// The daemon's handlers take any method: the audit log shows what
	// the proxy read. A request's line follows its answer.
	for deadline := time.Now().Add(5 * time.Second); len(f.audit.lines(t)) < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	var got []string
	for _, l := range f.audit.lines(t) {
		got = append(got, fmt.Sprint(l["method"], " ", l["path"], " ", l["bytes_in"]))
	}
	if want := []string{"GET /_ping 0", "POST /upload 10240", "GET /_ping 0"}; !slices.Equal(got, want) {
		t.Fatalf("requests read: got %q, want %q", got, want)
	}
}

// unixPair is a connected pair of non-blocking Unix sockets.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}
