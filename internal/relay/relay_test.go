package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/relay"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// upstream is a fake upstream on a real Unix socket. Every connection is
// given to handle; stop closes the listener and every connection and
// waits for the handlers.
type upstream struct {
	path  string
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	once  sync.Once
}

func startUpstream(t *testing.T, handle func(c *net.UnixConn)) *upstream {
	t.Helper()
	u := &upstream{path: filepath.Join(shortDir(t), "up.sock"), conns: map[net.Conn]bool{}}
	ln, err := net.Listen("unix", u.path)
	if err != nil {
		t.Fatal(err)
	}
	u.ln = ln
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			u.wg.Go(func() {
				defer func() {
					c.Close()
					u.mu.Lock()
					delete(u.conns, c)
					u.mu.Unlock()
				}()
				handle(c.(*net.UnixConn))
			})
		}
	})
	t.Cleanup(u.stop)
	return u
}

func (u *upstream) stop() {
	u.once.Do(func() {
		u.ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
}

// echo copies everything back and then closes its write side.
func echo(c *net.UnixConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// relayed is a relay.Server serving on a real Unix socket.
type relayed struct {
	network string
	path    string // the address: a socket path, or host:port for tcp
	stats   *relay.Stats
	cancel  context.CancelFunc
	done    chan error
}

func startRelay(t *testing.T, upstreamPath string) *relayed {
	t.Helper()
	return startRelayOn(t, "unix", upstreamPath)
}

// startRelayOn serves the relay on a Unix socket, or on loopback TCP: a
// client that is not a Unix socket takes the buffered copy, not splice.
func startRelayOn(t *testing.T, network, upstreamPath string) *relayed {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(shortDir(t), "r.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	r := serveOn(t, ln, ln.Addr().String(), upstreamPath)
	r.network = network
	return r
}

// halfCloser is a connection that can shut its write side.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func dialRelay(t *testing.T, r *relayed) halfCloser {
	t.Helper()
	network := r.network
	if network == "" {
		network = "unix"
	}
	c, err := net.DialTimeout(network, r.path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: got %v, want nil", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(halfCloser)
}

var networks = []string{"unix", "tcp"}

func serveOn(t *testing.T, ln net.Listener, path, upstreamPath string) *relayed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &relayed{path: path, stats: &relay.Stats{}, cancel: cancel, done: make(chan error, 1)}
	srv := &relay.Server{Upstream: upstreamPath, Log: quietLog(), Stats: r.stats}
	go func() { r.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return r
}

func dial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: got %v, want nil", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.UnixConn)
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRelayLargeBothWays(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) { testLargeBothWays(t, network) })
	}
}

func testLargeBothWays(t *testing.T, network string) {
	const size = 8 << 20
	down := randomBytes(t, size) // upstream -> client
	up := randomBytes(t, size)   // client -> upstream
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	u := startUpstream(t, func(c *net.UnixConn) {
		var wg sync.WaitGroup
		wg.Go(func() {
			c.Write(down)
			c.CloseWrite()
		})
		h := sha256.New()
		n, err := io.Copy(h, c)
		wg.Wait()
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	})
	r := startRelayOn(t, network, u.path)
	c := dialRelay(t, r)

	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		_, werr = c.Write(up)
		if werr == nil {
			werr = c.CloseWrite()
		}
	})
	h := sha256.New()
	n, err := io.Copy(h, c)
	wg.Wait()
	if werr != nil {
		t.Fatalf("client write: got %v, want nil", werr)
	}
	if err != nil || n != size {
		t.Fatalf("client read: got %d bytes, %v, want %d, nil", n, err, size)
	}
	if !bytes.Equal(h.Sum(nil), sha256Of(down)) {
		t.Errorf("upstream->client sha256: got %x, want %x", h.Sum(nil), sha256Of(down))
	}
	res := <-got
	if res.err != nil || res.n != size {
		t.Fatalf("upstream read: got %d bytes, %v, want %d, nil", res.n, res.err, size)
	}
	if !bytes.Equal(res.sum[:], sha256Of(up)) {
		t.Errorf("client->upstream sha256: got %x, want %x", res.sum, sha256Of(up))
	}
	c.Close()
	if !waitFor(5*time.Second, func() bool { return r.stats.In.Load() == size && r.stats.Out.Load() == size }) {
		t.Errorf("Stats.In, Out: got %d, %d, want %d each", r.stats.In.Load(), r.stats.Out.Load(), size)
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// The client closes its write side: the upstream sees EOF and can still
// answer, as an HTTP server does for a request without a body.
func TestRelayHalfCloseFromClient(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) { testHalfCloseFromClient(t, network) })
	}
}

func testHalfCloseFromClient(t *testing.T, network string) {
	seen := make(chan string, 1)
	u := startUpstream(t, func(c *net.UnixConn) {
		b, err := io.ReadAll(c)
		if err != nil {
			seen <- "error: " + err.Error()
			return
		}
		seen <- string(b)
		c.Write([]byte("reply to " + string(b)))
	})
	r := startRelayOn(t, network, u.path)
	c := dialRelay(t, r)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatalf("write: got %v, want nil", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: got %v, want nil", err)
	}
	select {
	case s := <-seen:
		if s != "request" {
			t.Errorf("upstream read: got %q, want %q", s, "request")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw EOF after the client's CloseWrite")
	}
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "reply to request" {
		t.Errorf("client read: got %q, %v, want %q, nil", b, err, "reply to request")
	}
}

// The upstream closes its write side: the client sees EOF and can still
// send, as `docker attach` does after the output ends.
func TestRelayHalfCloseFromUpstream(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) { testHalfCloseFromUpstream(t, network) })
	}
}

func testHalfCloseFromUpstream(t *testing.T, network string) {
	seen := make(chan string, 1)
	u := startUpstream(t, func(c *net.UnixConn) {
		c.Write([]byte("hello"))
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			seen <- "error: " + err.Error()
			return
		}
		seen <- string(b)
	})
	r := startRelayOn(t, network, u.path)
	c := dialRelay(t, r)
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("client read: got %q, %v, want %q, nil", b, err, "hello")
	}
	if _, err := c.Write([]byte("after EOF")); err != nil {
		t.Fatalf("client write after EOF: got %v, want nil", err)
	}
	c.CloseWrite()
	select {
	case s := <-seen:
		if s != "after EOF" {
			t.Errorf("upstream read: got %q, want %q", s, "after EOF")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never got the client's bytes after its CloseWrite")
	}
}

// A peer that writes and then closes entirely, not just its write side:
// everything it wrote still arrives, then EOF.
func TestRelayPeerClosesAfterWriting(t *testing.T) {
	const size = 4 << 20
	payload := randomBytes(t, size)
	for _, network := range networks {
		t.Run(network+"/upstream closes", func(t *testing.T) {
			u := startUpstream(t, func(c *net.UnixConn) {
				c.Write(payload)
				// The handler returns: the connection is closed.
			})
			r := startRelayOn(t, network, u.path)
			c := dialRelay(t, r)
			b, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(b, payload) {
				t.Errorf("client read: got %d bytes, %v, want %d bytes, nil", len(b), err, size)
			}
		})
		t.Run(network+"/client closes", func(t *testing.T) {
			got := make(chan []byte, 1)
			u := startUpstream(t, func(c *net.UnixConn) {
				b, _ := io.ReadAll(c)
				got <- b
			})
			r := startRelayOn(t, network, u.path)
			c := dialRelay(t, r)
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("client write: got %v, want nil", err)
			}
			c.Close()
			select {
			case b := <-got:
				if !bytes.Equal(b, payload) {
					t.Errorf("upstream read: got %d bytes, want the %d written", len(b), size)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("upstream never saw EOF after the client closed")
			}
		})
	}
}

// With no upstream, a client is closed at once, well within DialTimeout.
func TestRelayUpstreamDown(t *testing.T) {
	tests := []struct {
		name string
		path func(t *testing.T) string
	}{
		{"no socket file", func(t *testing.T) string { return filepath.Join(shortDir(t), "none.sock") }},
		{"stale socket file", func(t *testing.T) string {
			p := filepath.Join(shortDir(t), "stale.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, tt.path(t))
			for i := range 3 {
				c := dial(t, r.path)
				start := time.Now()
				c.SetReadDeadline(start.Add(unixsock.DialTimeout))
				n, err := c.Read(make([]byte, 1))
				took := time.Since(start)
				if err == nil {
					t.Fatalf("read: got %d bytes, want EOF or an error", n)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("read: got a timeout after %v, want the relay to close the client", took)
				}
				if took > unixsock.DialTimeout/5 {
					t.Errorf("close took %v, want well within %v", took, unixsock.DialTimeout)
				}
				if !waitFor(5*time.Second, func() bool { return r.stats.Failed.Load() == uint64(i+1) }) {
					t.Errorf("Stats.Failed: got %d, want %d", r.stats.Failed.Load(), i+1)
				}
			}
			if !waitFor(5*time.Second, func() bool { return r.stats.Active.Load() == 0 }) {
				t.Errorf("Stats.Active: got %d, want 0", r.stats.Active.Load())
			}
			if got := r.stats.Total.Load(); got != 3 {
				t.Errorf("Stats.Total: got %d, want 3", got)
			}
		})
	}
}

// The upstream coming back is picked up: each client dials anew.
func TestRelayUpstreamComesBack(t *testing.T) {
	dir := shortDir(t)
	p := filepath.Join(dir, "up.sock")
	r := startRelay(t, p)
	c := dial(t, r.path)
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("read with no upstream: got %v, want EOF", err)
	}
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("back"))
		c.Close()
	}()
	c = dial(t, r.path)
	if b, err := io.ReadAll(c); err != nil || string(b) != "back" {
		t.Errorf("read: got %q, %v, want %q, nil", b, err, "back")
	}
}

func TestRelayManyConcurrent(t *testing.T) {
	const clients = 200
	u := startUpstream(t, echo)
	r := startRelay(t, u.path)

	var wg sync.WaitGroup
	var failed atomic.Int64
	var sent atomic.Int64
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			c, err := net.DialTimeout("unix", r.path, 10*time.Second)
			if err != nil {
				failed.Add(1)
				t.Errorf("client %d dial: got %v, want nil", i, err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			msg := bytes.Repeat(fmt.Appendf(nil, "client %d;", i), 100+i)
			sent.Add(int64(len(msg)))
			if _, err := c.Write(msg); err != nil {
				failed.Add(1)
				t.Errorf("client %d write: got %v, want nil", i, err)
				return
			}
			c.(*net.UnixConn).CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(b, msg) {
				failed.Add(1)
				t.Errorf("client %d echo: got %d bytes, %v, want %d bytes back, nil", i, len(b), err, len(msg))
			}
		})
	}
	close(start)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("failed clients: got %d, want 0", n)
	}
	if got := r.stats.Total.Load(); got != clients {
		t.Errorf("Stats.Total: got %d, want %d", got, clients)
	}
	if !waitFor(10*time.Second, func() bool { return r.stats.Active.Load() == 0 }) {
		t.Errorf("Stats.Active: got %d, want 0", r.stats.Active.Load())
	}
	if got, want := r.stats.Bytes(), uint64(2*sent.Load()); got != want {
		t.Errorf("Stats.Bytes: got %d, want %d", got, want)
	}
	if got := r.stats.Failed.Load(); got != 0 {
		t.Errorf("Stats.Failed: got %d, want 0", got)
	}
}

func TestRelayStatsActive(t *testing.T) {
	u := startUpstream(t, echo)
	r := startRelay(t, u.path)
	var cs []*net.UnixConn
	for range 5 {
		c := dial(t, r.path)
		// A round trip proves the connection is through to the upstream.
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("echo: got %v, want nil", err)
		}
		cs = append(cs, c)
	}
	if got := r.stats.Active.Load(); got != 5 {
		t.Errorf("Stats.Active: got %d, want 5", got)
	}
	for _, c := range cs {
		c.Close()
	}
	if !waitFor(10*time.Second, func() bool { return r.stats.Active.Load() == 0 }) {
		t.Errorf("Stats.Active after close: got %d, want 0", r.stats.Active.Load())
	}
	if got := r.stats.Total.Load(); got != 5 {
		t.Errorf("Stats.Total: got %d, want 5", got)
	}
	if got := r.stats.Bytes(); got != 10 {
		t.Errorf("Stats.Bytes: got %d, want 10", got)
	}
}

// fdCounts counts the process's descriptors: pipes apart, since the
// relay keeps a bounded pool of idle pipes for splice.
func fdCounts(t *testing.T) (pipes, others int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the descriptor ReadDir itself used
		}
		if strings.HasPrefix(l, "pipe:") {
			pipes++
		} else {
			others++
		}
	}
	return pipes, others
}

// maxPooledPipeFDs bounds the descriptors of the relay's idle pipe pool
// (64 pipes of two ends).
const maxPooledPipeFDs = 2 * 64

// Cancelling the context cuts open connections, Serve returns, and every
// goroutine and descriptor goes away.
func TestRelayCancelNoLeaks(t *testing.T) {
	// Warm up the poller and the buffer pool outside the baseline.
	func() {
		u := startUpstream(t, echo)
		r := startRelay(t, u.path)
		c := dial(t, r.path)
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		c.Close()
		r.cancel()
		<-r.done
		r.done <- nil // for the cleanup
		u.stop()
	}()
	runtime.GC()
	baseG := runtime.NumGoroutine()
	basePipes, baseFDs := fdCounts(t)

	func() {
		u := startUpstream(t, func(c *net.UnixConn) {
			echo(c)
		})
		path := filepath.Join(shortDir(t), "r.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stats := &relay.Stats{}
		done := make(chan error, 1)
		go func() {
			done <- (&relay.Server{Upstream: u.path, Log: quietLog(), Stats: stats}).Serve(ctx, ln)
		}()
		var cs []net.Conn
		for range 50 {
			c, err := net.DialTimeout("unix", path, 5*time.Second)
			if err != nil {
				t.Fatalf("dial: got %v, want nil", err)
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			c.Write([]byte("x"))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatalf("echo: got %v, want nil", err)
			}
			cs = append(cs, c)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: got %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10s of cancel")
		}
		if got := stats.Active.Load(); got != 0 {
			t.Errorf("Stats.Active after Serve returned: got %d, want 0", got)
		}
		// Every client was cut.
		for i, c := range cs {
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("client %d read after cancel: got data, want EOF or an error", i)
			}
			c.Close()
		}
		// The listener is closed: nobody answers any more.
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			t.Errorf("dial after cancel: got a connection, want an error")
		}
		u.stop()
	}()

	if !waitFor(10*time.Second, func() bool { return runtime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: got %d, want at most %d\n%s", runtime.NumGoroutine(), baseG, buf[:runtime.Stack(buf, true)])
	}
	if !waitFor(10*time.Second, func() bool { _, n := fdCounts(t); return n <= baseFDs }) {
		_, n := fdCounts(t)
		t.Errorf("open descriptors other than pipes: got %d, want at most %d", n, baseFDs)
	}
	if p, _ := fdCounts(t); p > basePipes+maxPooledPipeFDs {
		t.Errorf("pipe descriptors: got %d, want at most %d (the pool's bound)", p, basePipes+maxPooledPipeFDs)
	}
}

// Closing the listener also ends Serve.
func TestServeReturnsWhenListenerClosed(t *testing.T) {
	u := startUpstream(t, echo)
	path := filepath.Join(shortDir(t), "r.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- (&relay.Server{Upstream: u.path, Log: quietLog(), Stats: &relay.Stats{}}).Serve(t.Context(), ln)
	}()
	c := dial(t, path)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	ln.Close()
	// Serve waits for the open connection to end.
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a connection open, want it to wait", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the listener and the client closed")
	}
}

// flakyListener fails Accept a number of times, as with EMFILE, then
// hands on to a real listener.
type flakyListener struct {
	net.Listener
	fails atomic.Int64
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, syscall.EMFILE
	}
	return l.Listener.Accept()
}

func TestServeRetriesAcceptErrors(t *testing.T) {
	u := startUpstream(t, echo)
	path := filepath.Join(shortDir(t), "r.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(4)
	r := serveOn(t, fl, path, u.path)
	c := dial(t, path)
	c.Write([]byte("x"))
	c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "x" {
		t.Errorf("echo after Accept errors: got %q, %v, want %q, nil", b, err, "x")
	}
	if got := r.stats.Total.Load(); got != 1 {
		t.Errorf("Stats.Total: got %d, want 1", got)
	}
}

// A context cancelled while Serve backs off ends Serve at once.
func TestServeCancelDuringBackoff(t *testing.T) {
	path := filepath.Join(shortDir(t), "r.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(1 << 40)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&relay.Server{Upstream: path, Log: quietLog(), Stats: &relay.Stats{}}).Serve(ctx, fl)
	}()
	if !waitFor(5*time.Second, func() bool { return fl.fails.Load() < 1<<40-5 }) {
		t.Fatal("Serve never retried Accept")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of cancel")
	}
	// The backoff grows: far fewer than one retry per millisecond.
	if tries := 1<<40 - fl.fails.Load(); tries > 100 {
		t.Errorf("Accept retries: got %d, want the backoff to slow them", tries)
	}
}

// If the upstream drops the connection while the client is still sending,
// the client is cut too rather than left hanging.
func TestRelayUpstreamAbort(t *testing.T) {
	u := startUpstream(t, func(c *net.UnixConn) {
		io.ReadFull(c, make([]byte, 1))
		// Close with unread data: the relay's next write fails.
	})
	r := startRelay(t, u.path)
	c := dial(t, r.path)
	chunk := make([]byte, 64<<10)
	var err error
	for range 1000 {
		if _, err = c.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		_, err = io.ReadAll(c)
		if err == nil {
			// EOF is fine too: the client saw the end.
			return
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("client: got a timeout, want the relay to close it")
	}
	if !waitFor(5*time.Second, func() bool { return r.stats.Active.Load() == 0 }) {
		t.Errorf("Stats.Active: got %d, want 0", r.stats.Active.Load())
	}
}
