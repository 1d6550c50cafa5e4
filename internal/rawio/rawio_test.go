package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

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

func rawConnOf(t *testing.T, c *net.UnixConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// Raw reads and writes wait in the netpoller when they would block: 8 MiB
// through a socket pair whose buffers hold far less, read back whole,
// then EOF once the writer closes.
func TestRawReadWriteWaitAndEOF(t *testing.T) {
	a, b := unixPair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 512<<10)
	errc := make(chan error, 1)
	go func() {
		n, err := Write(rawConnOf(t, a), want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		a.Close()
		errc <- err
	}()
	got, err := io.ReadAll(&Reader{rawConnOf(t, b)})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(want))
	}
}

// A read deadline ends a raw read that waits; a closed peer fails a raw
// write with EPIPE (which writeHead retries on), not a hang.
func TestRawReadDeadlineAndWriteToClosedPeer(t *testing.T) {
	a, b := unixPair(t)
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := (&Reader{rawConnOf(t, b)}).Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: got %v, want a deadline error", err)
	}
	b.Close()
	if _, err := Write(rawConnOf(t, a), []byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write to a closed peer: got %v, want EPIPE", err)
	}
}
