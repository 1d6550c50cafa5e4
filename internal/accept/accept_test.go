package accept_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/accept"
)

// acceptOn runs accept.Serve on a new socket with handle; the returned
// stop cancels it and waits for it to return.
func acceptOn(t *testing.T, handle func(net.Conn)) (path string, stop func()) {
	t.Helper()
	path = filepath.Join(shortDir(t), "a.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- accept.Serve(ctx, ln, quietLog(), handle) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Accept: got %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Accept did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return path, stop
}

// A connection that keeps whoever serves it does not keep the next
// connections from being served: a lone connection is served by the
// goroutine that accepted it, and another takes over accepting.
func TestAcceptConnectionHeldDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{})
	var first atomic.Bool
	path, _ := acceptOn(t, func(c net.Conn) {
		defer c.Close()
		if first.CompareAndSwap(false, true) {
			close(held)
			<-release
			return
		}
		c.Write([]byte("ok"))
	})
	defer close(release)
	c1 := dial(t, path)
	defer c1.Close()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was never handled")
	}
	// Several, one after another, then several at once.
	for i := range 5 {
		if err := expectOK(path, 2*time.Second); err != nil {
			t.Fatalf("connection %d while the first is held: %v", i+2, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() { errs <- expectOK(path, 5*time.Second) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent connection while the first is held: %v", err)
		}
	}
}

func expectOK(path string, within time.Duration) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "ok" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// Cancelling while connections are held, one by the goroutine that
// accepted it and others by workers, ends Accept once they return, and
// leaves no goroutine behind.
func TestAcceptCancelWhileHeld(t *testing.T) {
	base := runtime.NumGoroutine()
	ctxs := make(chan net.Conn, 10)
	path, stop := acceptOn(t, func(c net.Conn) {
		ctxs <- c
		io.Copy(io.Discard, c) // until the test closes c
		c.Close()
	})
	var clients []net.Conn
	var held []net.Conn
	for range 3 {
		clients = append(clients, dial(t, path))
		select {
		case c := <-ctxs:
			held = append(held, c)
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d was not served while %d were held", len(clients), len(held))
		}
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Accept returned while connections were still being served")
	case <-time.After(100 * time.Millisecond):
	}
	for _, c := range held {
		c.Close()
	}
	<-stopped
	for _, c := range clients {
		c.Close()
	}
	if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= base+1 }) {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d, want at most %d\n%s", runtime.NumGoroutine(), base+1, buf[:runtime.Stack(buf, true)])
	}
}

// Many clients one after another and at once, with connections short and
// long mixed: every one is served exactly once.
func TestAcceptServesEveryConnectionOnce(t *testing.T) {
	var n atomic.Int64
	path, stop := acceptOn(t, func(c net.Conn) {
		defer c.Close()
		n.Add(1)
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		if b[0] == 'L' {
			time.Sleep(20 * time.Millisecond) // outlasts takeover
		}
		c.Write([]byte("ok"))
	})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				c, err := net.Dial("unix", path)
				if err != nil {
					failed.Add(1)
					continue
				}
				kind := "s"
				if (w+i)%17 == 0 {
					kind = "L"
				}
				c.Write([]byte(kind))
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if b, err := io.ReadAll(c); err != nil || string(b) != "ok" {
					failed.Add(1)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	stop()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of 800 connections failed", f)
	}
	if got := n.Load(); got != 800 {
		t.Errorf("handled %d connections, want 800", got)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// shortDir is a temporary directory with a short path (sun_path is 108
// bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
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
