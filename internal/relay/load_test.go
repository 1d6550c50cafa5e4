package relay_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// After 10,000 connections, 64 at a time, each with a request and a reply
// checked byte for byte, goroutines and descriptors are back to baseline
// while the relay is still serving.
func TestRelayTenThousandConnectionsNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	u := startUpstream(t, echo)
	r := startRelay(t, u.path)
	// Warm the pools and the poller.
	c := dial(t, r.path)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	waitFor(5*time.Second, func() bool { return r.stats.Active.Load() == 0 })
	runtime.GC()
	baseG := runtime.NumGoroutine()
	basePipes, baseFDs := fdCounts(t)

	const total, parallel = 10000, 64
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			msg := make([]byte, 300)
			got := make([]byte, 300)
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				for j := range msg {
					msg[j] = byte(i) + byte(j)
				}
				c, err := net.DialTimeout("unix", r.path, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				_, werr := c.Write(msg)
				c.(*net.UnixConn).CloseWrite()
				_, rerr := io.ReadFull(c, got)
				c.Close()
				if werr != nil || rerr != nil || !bytes.Equal(got, msg) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("failed connections: got %d of %d, want 0", n, total)
	}
	if got := r.stats.Total.Load(); got < total {
		t.Fatalf("connections accepted: got %d, want at least %d", got, total)
	}
	if !waitFor(10*time.Second, func() bool { return r.stats.Active.Load() == 0 && runtime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("after %d connections: %d active, %d goroutines, want 0 and at most %d\n%s",
			total, r.stats.Active.Load(), runtime.NumGoroutine(), baseG, buf[:runtime.Stack(buf, true)])
	}
	if !waitFor(10*time.Second, func() bool { _, n := fdCounts(t); return n <= baseFDs }) {
		_, n := fdCounts(t)
		t.Fatalf("descriptors other than pipes after %d connections: got %d, want at most %d", total, n, baseFDs)
	}
	if p, _ := fdCounts(t); p > basePipes+maxPooledPipeFDs {
		t.Fatalf("pipe descriptors: got %d, want at most %d (the pool's bound)", p, basePipes+maxPooledPipeFDs)
	}
}

const streamHead = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

// A client that goes away in the middle of a stream the upstream keeps
// quiet (docker events with nothing happening) does not leave the
// upstream connection open: the relay sees the hang-up, not a half-close.
func TestRelayClientGoneMidStreamClosesUpstream(t *testing.T) {
	closed := make(chan struct{})
	u := startUpstream(t, func(c *net.UnixConn) {
		c.Write([]byte(streamHead))
		// A quiet stream: it never writes again. Reading ends at the
		// relay's half-close or close; only a full close gives POLLHUP.
		io.Copy(io.Discard, c)
		rc, _ := c.SyscallConn()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			hup := false
			rc.Control(func(fd uintptr) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
				unix.Poll(fds, 0)
				hup = fds[0].Revents&unix.POLLHUP != 0
			})
			if hup {
				close(closed)
				return
			}
		}
	})
	r := startRelay(t, u.path)
	c := dial(t, r.path)
	c.Write([]byte("GET /events HTTP/1.1\r\nHost: d\r\n\r\n"))
	// Read all there is, so the close below is a plain hang-up (unread
	// data would make it a reset, which the relay sees as an error).
	head := make([]byte, len(streamHead))
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatal(err)
	}
	c.Close() // gone, mid-stream
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("the upstream connection stayed open after the client went away")
	}
	if !waitFor(10*time.Second, func() bool { return r.stats.Active.Load() == 0 }) {
		t.Fatalf("relayed connections still active: %d", r.stats.Active.Load())
	}
}

// Clients that connect and send nothing, or send a byte now and then, do
// not keep another client from being served.
func TestRelaySilentAndSlowClientsDoNotStarveOthers(t *testing.T) {
	u := startUpstream(t, echo)
	r := startRelay(t, u.path)
	var idle []net.Conn
	for range 200 {
		c, err := net.Dial("unix", r.path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		c, err := net.Dial("unix", r.path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					c.Write([]byte("x"))
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		for _, c := range idle {
			c.Close()
		}
	}()
	c := dial(t, r.path)
	msg := []byte("ping")
	got := make([]byte, len(msg))
	for i := range 200 {
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("exchange %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("exchange %d beside 220 silent or slow clients: got %q %v", i, got, err)
		}
	}
}

// 1,000 connections at once, held for a while: 600 quiet streams, 300
// clients pinging in a loop, 100 moving a megabyte each way. Nothing
// fails, and afterwards goroutines and descriptors are back to baseline.
func TestRelayThousandConcurrentMixed(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	u := startUpstream(t, func(c *net.UnixConn) {
		var kind [1]byte
		if _, err := io.ReadFull(c, kind[:]); err != nil {
			return
		}
		switch kind[0] {
		case 's': // a stream: an event every 100 ms until the client goes
			go func() { io.Copy(io.Discard, c); c.Close() }()
			for {
				if _, err := c.Write([]byte("event\n")); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		default:
			echo(c)
		}
	})
	r := startRelay(t, u.path)
	c := dial(t, r.path)
	c.Write([]byte("px"))
	io.ReadFull(c, make([]byte, 2))
	c.Close()
	waitFor(5*time.Second, func() bool { return r.stats.Active.Load() == 0 })
	runtime.GC()
	baseG := runtime.NumGoroutine()
	_, baseFDs := fdCounts(t)

	var failed atomic.Int64
	var whyMu sync.Mutex
	var why []string
	fail := func(kind string, err error) {
		if failed.Add(1) <= 5 {
			whyMu.Lock()
			why = append(why, fmt.Sprintf("%s: %v", kind, err))
			whyMu.Unlock()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	conn := func() net.Conn {
		c, err := net.DialTimeout("unix", r.path, 10*time.Second)
		if err != nil {
			fail("dial", err)
			return nil
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		return c
	}
	for range 600 {
		ready.Add(1)
		wg.Go(func() {
			c := conn()
			ready.Done()
			if c == nil {
				return
			}
			defer c.Close()
			c.Write([]byte("s"))
			line := make([]byte, 6)
			for {
				if _, err := io.ReadFull(c, line); err != nil || string(line) != "event\n" {
					fail("stream", fmt.Errorf("read %q: %v", line, err))
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		})
	}
	for range 300 {
		ready.Add(1)
		wg.Go(func() {
			c := conn()
			ready.Done()
			if c == nil {
				return
			}
			defer c.Close()
			c.Write([]byte("p"))
			got := make([]byte, 4)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write([]byte("ping")); err != nil {
					fail("ping write", err)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
					fail("ping read", fmt.Errorf("read %q: %v", got, err))
					return
				}
			}
		})
	}
	for i := range 100 {
		ready.Add(1)
		wg.Go(func() {
			c := conn()
			ready.Done()
			if c == nil {
				return
			}
			defer c.Close()
			payload := bytes.Repeat([]byte{byte(i)}, 1<<20)
			go func() {
				c.Write([]byte("b"))
				c.Write(payload)
				c.(*net.UnixConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, payload) {
				fail("bulk", fmt.Errorf("read %d of %d bytes (equal %v): %v", len(got), len(payload), bytes.Equal(got, payload), err))
			}
		})
	}
	ready.Wait()
	if !waitFor(30*time.Second, func() bool { return r.stats.Total.Load() >= 1001 }) {
		t.Fatalf("accepted %d of 1,000 connections", r.stats.Total.Load()-1)
	}
	time.Sleep(2 * time.Second) // held for a while
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("failed connections: got %d of 1,000, want 0; the first: %s", n, strings.Join(why, "; "))
	}
	if !waitFor(15*time.Second, func() bool { return r.stats.Active.Load() == 0 && runtime.NumGoroutine() <= baseG }) {
		t.Fatalf("after the load: %d active, %d goroutines, want 0 and at most %d", r.stats.Active.Load(), runtime.NumGoroutine(), baseG)
	}
	if !waitFor(15*time.Second, func() bool { _, n := fdCounts(t); return n <= baseFDs }) {
		_, n := fdCounts(t)
		t.Fatalf("descriptors other than pipes: got %d, want at most %d", n, baseFDs)
	}
}
