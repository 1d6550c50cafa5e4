package apiproxy

import (
	"bufio"
	"bytes"
	"context"
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
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// rawUpstream is a fake daemon that counts the connections it accepts
// and answers each request by what its path asks for:
//
//	/_ping     200 "OK" (Content-Length)
//	/close     200 "OK" with Connection: close, then closes
//	/eof       200 "OK" delimited by close (no Content-Length)
//	…/attach   101, then echoes until the client half-closes
//	/big       200 with a 64 MiB body
//	/early     200 at once, the body unread; then, after earlyClose,
//	           closes, as Go's server does when a body it did not read
//	           is too large to drain
//	/slow      200 "OK" after slowAnswer
//	…/wait     no answer: waits for the connection to close, as
//	           dockerd's container wait does for a running container;
//	           says so on waiting, and when it closed on waitEnded
//
// After each response, shutRD (if set) shuts the connection's reading
// side, as a daemon going away would, without closing it.
type rawUpstream struct {
	sock     string
	accepted atomic.Int64
	open     atomic.Int64
	shutRD   atomic.Bool
	stop     chan struct{}
	answered chan struct{} // a value for each answer to /early
	waiting  chan struct{} // a value for each …/wait request read
	waitEnd  chan struct{} // a value for each …/wait whose connection closed
	waits    atomic.Int64  // …/wait requests pending

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// dropAll closes every connection the daemon holds, as a restart does.
func (u *rawUpstream) dropAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		c.Close()
	}
}

func newRawUpstream(t *testing.T, dir string) *rawUpstream {
	t.Helper()
	u := &rawUpstream{sock: filepath.Join(dir, "raw.sock"), stop: make(chan struct{}), conns: map[net.Conn]bool{},
		answered: make(chan struct{}, 100), waiting: make(chan struct{}, 2000), waitEnd: make(chan struct{}, 2000)}
	ln, err := net.Listen("unix", u.sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.open.Add(1)
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			wg.Go(func() {
				defer u.open.Add(-1)
				defer func() {
					u.mu.Lock()
					delete(u.conns, c)
					u.mu.Unlock()
					c.Close()
				}()
				u.serve(c.(*net.UnixConn))
			})
		}
	})
	t.Cleanup(func() {
		close(u.stop)
		ln.Close()
		wg.Wait()
	})
	return u
}

func (u *rawUpstream) serve(c *net.UnixConn) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-u.stop:
			c.Close()
		case <-done:
		}
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/early" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
			u.answered <- struct{}{}
			select {
			case <-time.After(earlyClose):
			case <-u.stop:
			}
			return
		}
		io.Copy(io.Discard, req.Body)
		path := req.URL.Path
		if strings.HasSuffix(path, "/attach") {
			path = "/attach"
		}
		if strings.HasSuffix(path, "/wait") {
			u.waits.Add(1)
			u.waiting <- struct{}{}
			io.Copy(io.Discard, br) // until the proxy closes the connection
			u.waits.Add(-1)
			u.waitEnd <- struct{}{}
			return
		}
		switch path {
		case "/slow":
			time.Sleep(slowAnswer)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
		case "/close":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
			return
		case "/eof":
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nOK")
			return
		case "/attach":
			io.WriteString(c, "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
			io.Copy(c, br)
			return
		case "/big":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
			if _, err := io.Copy(c, io.LimitReader(seeded{}, 64<<20)); err != nil {
				return
			}
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
		}
		if req.Close {
			return
		}
		if u.shutRD.Load() {
			c.CloseRead()
			<-u.stop
			return
		}
	}
}

// earlyClose is how long the fake daemon keeps a connection open after
// answering /early.
const earlyClose = 300 * time.Millisecond

// slowAnswer is how long the fake daemon takes to answer /slow: longer
// than watchAfter, so the client is watched meanwhile.
const slowAnswer = 4 * watchAfter

// startPooled serves a preset in front of u; it returns the
// proxy's socket, the proxy, and a function that stops it.
func startPooled(t *testing.T, dir string, u *rawUpstream, preset string) (string, *Proxy, func()) {
	t.Helper()
	sock := filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{
		Volume: "v", Upstream: u.sock, Policy: func() *policy.Policy { return pol },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: audit.New(io.Discard), Stats: &Stats{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return sock, p, stop
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "srpool") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// once sends raw on a new connection and reads one response and then
// the end of the connection; it returns the response and whether the
// proxy closed the connection after it.
func once(t *testing.T, sock, raw string) (*http.Response, string, bool) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	b, _ := io.ReadAll(resp.Body)
	_, err = br.ReadByte()
	return resp, string(b), err == io.EOF
}

// waitFor polls cond for a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that opens a connection per request and asks to close it
// (the docker CLI's way) is served over one daemon connection: its close
// is answered, not passed on.
func TestPoolServesClientConnectionsOverOneUpstream(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, p, _ := startPooled(t, dir, u, "read-only")
	for i := 0; i < 5; i++ {
		resp, body, closed := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 200 || body != "OK" {
			t.Fatalf("request %d: got %d %q, want 200 OK", i, resp.StatusCode, body)
		}
		if !resp.Close || !closed {
			t.Fatalf("request %d: Connection: close in the answer %v, connection closed %v; want both", i, resp.Close, closed)
		}
		waitFor(t, "the connection to end", func() bool { return p.Stats.Active.Load() == 0 })
	}
	if got := u.accepted.Load(); got != 1 {
		t.Fatalf("daemon connections: got %d, want 1", got)
	}
	if got := p.IdleUpstreams(); got != 1 {
		t.Fatalf("idle upstreams: got %d, want 1", got)
	}
}

// An upstream connection whose state is not known to be clean is never
// handed to another client.
func TestPoolKeepsOnlyCleanConnections(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		idle      int
	}{
		{"plain", "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", 1},
		{"daemon asks to close", "GET /close HTTP/1.1\r\nHost: d\r\n\r\n", 0},
		{"close-delimited answer", "GET /eof HTTP/1.1\r\nHost: d\r\n\r\n", 0},
		{"HTTP/1.0", "GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n", 0},
		{"denied after a clean exchange", "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nPOST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"denied first", "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tempDir(t)
			u := newRawUpstream(t, dir)
			sock, p, _ := startPooled(t, dir, u, "read-only")
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			c.Close()
			waitFor(t, "the connection to end", func() bool { return p.Stats.Active.Load() == 0 })
			if got := p.IdleUpstreams(); got != tc.idle {
				t.Fatalf("idle upstreams: got %d, want %d", got, tc.idle)
			}
		})
	}
}

// After a protocol switch the connection is the client's stream, and
// after a client leaves in the middle of an answer the connection is in
// an unknown state: neither goes back to the pool.
func TestPoolDropsStreamsAndCutAnswers(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, p, _ := startPooled(t, dir, u, "full")

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "POST /containers/x/attach?stream=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: got %v %v, want 101", resp, err)
	}
	c.Close()

	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c2, "GET /big HTTP/1.1\r\nHost: d\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("big: got %v %v, want 200", resp, err)
	}
	c2.Close() // 64 MiB unread

	waitFor(t, "both connections to end", func() bool { return p.Stats.Active.Load() == 0 })
	if got := p.IdleUpstreams(); got != 0 {
		t.Fatalf("idle upstreams: got %d, want 0", got)
	}
	waitFor(t, "the daemon to see both closed", func() bool { return u.open.Load() == 0 })
}

// A pooled connection the daemon closed (a restart) costs the client
// nothing: one idle for a while is checked before use, and a fresh one
// refuses the write whole, which is then made on a new connection.
func TestPoolSkipsClosedConnections(t *testing.T) {
	for _, aged := range []bool{false, true} {
		t.Run(fmt.Sprintf("idle over checkAfter %v", aged), func(t *testing.T) {
			dir := tempDir(t)
			u := newRawUpstream(t, dir)
			sock, p, _ := startPooled(t, dir, u, "read-only")
			once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
			waitFor(t, "the connection to be pooled", func() bool { return p.IdleUpstreams() == 1 })
			u.dropAll()
			waitFor(t, "the daemon to close", func() bool { return u.open.Load() == 0 })
			if aged {
				p.pool.mu.Lock()
				p.pool.idle[0].since = time.Now().Add(-checkAfter)
				p.pool.mu.Unlock()
			}
			resp, body, _ := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 || body != "OK" {
				t.Fatalf("after the daemon closed: got %d %q, want 200 OK", resp.StatusCode, body)
			}
			if got := u.accepted.Load(); got != 2 {
				t.Fatalf("daemon connections: got %d, want 2", got)
			}
		})
	}
}

// quiet tells an open, silent connection from one whose peer closed or
// sent bytes nobody asked for.
func TestQuiet(t *testing.T) {
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if !quiet(a) {
		t.Fatal("an open, silent connection: quiet false, want true")
	}
	b.Write([]byte("x"))
	if quiet(a) {
		t.Fatal("a connection with unread bytes: quiet true, want false")
	}
	b.Close()
	c, d, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d.Close()
	if quiet(c) {
		t.Fatal("a connection whose peer closed: quiet true, want false")
	}
}

// A pooled connection that refuses the write (the daemon shut it for
// reading a moment ago) costs the client nothing: nothing reached the
// daemon, so the request is written again on a new connection.
func TestPoolRetriesARefusedWrite(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, _, _ := startPooled(t, dir, u, "read-only")
	u.shutRD.Store(true)
	once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
	waitFor(t, "the daemon to shut its reading side", func() bool { return u.accepted.Load() == 1 })
	time.Sleep(20 * time.Millisecond)
	resp, body, _ := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "OK" {
		t.Fatalf("got %d %q, want 200 OK", resp.StatusCode, body)
	}
	if got := u.accepted.Load(); got != 2 {
		t.Fatalf("daemon connections: got %d, want 2 (the refused one and its replacement)", got)
	}
}

// When the proxy stops, its idle connections are closed.
func TestPoolClosedWithTheProxy(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, p, stop := startPooled(t, dir, u, "read-only")
	once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
	waitFor(t, "the connection to be pooled", func() bool { return p.IdleUpstreams() == 1 })
	stop()
	waitFor(t, "the daemon to see it closed", func() bool { return u.open.Load() == 0 })
}

// The pool keeps at most maxIdle connections, closes those idle for
// idleTimeout, and closes everything once closed.
func TestPoolBounds(t *testing.T) {
	var p pool
	var peers []net.Conn
	conn := func() *net.UnixConn {
		a, b, err := socketPair()
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, b)
		return a
	}
	defer func() {
		for _, c := range peers {
			c.Close()
		}
	}()
	for i := 0; i < maxIdle+3; i++ {
		p.put(conn())
	}
	if got := p.len(); got != maxIdle {
		t.Fatalf("after %d puts: %d idle, want %d", maxIdle+3, got, maxIdle)
	}
	if !closedPeer(peers[maxIdle]) || closedPeer(peers[0]) {
		t.Fatalf("the puts over the bound must be closed, the others kept")
	}

	// Age half of them past the timeout.
	p.mu.Lock()
	for i := range p.idle[:maxIdle/2] {
		p.idle[i].since = time.Now().Add(-idleTimeout)
	}
	p.mu.Unlock()
	p.expire()
	if got := p.len(); got != maxIdle/2 {
		t.Fatalf("after expiry: %d idle, want %d", got, maxIdle/2)
	}
	if !closedPeer(peers[0]) || closedPeer(peers[maxIdle-1]) {
		t.Fatalf("expired connections must be closed, fresh ones kept")
	}

	// get returns the newest, and skips one idle for checkAfter whose
	// peer is gone.
	peers[maxIdle-1].Close()
	p.mu.Lock()
	p.idle[len(p.idle)-1].since = time.Now().Add(-checkAfter)
	p.mu.Unlock()
	c, reused, err := p.get("/nonexistent")
	if err != nil || !reused {
		t.Fatalf("get: %v reused=%v, want a pooled connection", err, reused)
	}
	c.Close()
	if got := p.len(); got != maxIdle/2-2 {
		t.Fatalf("after get: %d idle, want %d", got, maxIdle/2-2)
	}

	p.close()
	if got := p.len(); got != 0 {
		t.Fatalf("after close: %d idle, want 0", got)
	}
	p.put(conn())
	if got := p.len(); got != 0 || !closedPeer(peers[len(peers)-1]) {
		t.Fatalf("a put after close must close the connection")
	}
}

func socketPair() (*net.UnixConn, net.Conn, error) {
	dir, err := os.MkdirTemp("", "srpair")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a.(*net.UnixConn), b, nil
}

// closedPeer reports whether the other end of c was closed.
func closedPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || (err != nil && !strings.Contains(err.Error(), "timeout"))
}

// bulk gives both sockets of a connection the relay's large buffers.
func TestBulkSizesBothSockets(t *testing.T) {
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	c, d, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer d.Close()
	before := sndbuf(t, a)
	cc := &clientConn{c: a, up: c}
	cc.bulk()
	if got := sndbuf(t, a); got <= before {
		t.Fatalf("client socket: SO_SNDBUF %d after bulk, want more than %d", got, before)
	}
	if got := sndbuf(t, c); got <= before {
		t.Fatalf("upstream socket: SO_SNDBUF %d after bulk, want more than %d", got, before)
	}
}

func sndbuf(t *testing.T, c *net.UnixConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var serr error
	rc.Control(func(fd uintptr) { n, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) })
	if serr != nil {
		t.Fatal(serr)
	}
	return n
}

// A chunked body asks for bulk buffers at a large chunk, or once
// bulkBody bytes have passed in small ones; a small body never does.
func TestChunkedAsksForBulk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []int
		want   bool
	}{
		{"small", []int{100, 2000}, false},
		{"one large chunk", []int{bulkBody + 1}, true},
		{"many small chunks", slices.Repeat([]int{32 << 10}, 12), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body bytes.Buffer
			total := 0
			for _, n := range tc.chunks {
				fmt.Fprintf(&body, "%x\r\n%s\r\n", n, bytes.Repeat([]byte("x"), n))
				total += n
			}
			body.WriteString("0\r\n\r\n")
			src, srcPeer, err := socketPair()
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			defer srcPeer.Close()
			dst, dstPeer, err := socketPair()
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			defer dstPeer.Close()
			go io.Copy(io.Discard, dstPeer)
			go srcPeer.Write(body.Bytes())
			src.SetDeadline(time.Now().Add(10 * time.Second))
			asked := false
			n, err := copyChunked(dst, bufio.NewReader(src), src, func() { asked = true })
			if err != nil || n != int64(total) {
				t.Fatalf("copyChunked: %d, %v; want %d", n, err, total)
			}
			if asked != tc.want {
				t.Fatalf("bulk asked %v, want %v", asked, tc.want)
			}
		})
	}
}
