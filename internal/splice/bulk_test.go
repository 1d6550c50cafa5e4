package splice

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// unixPair is a connected pair of Unix stream sockets on a path.
func unixPair(t *testing.T, dir, name string) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.UnixConn), s.(*net.UnixConn)
}

func sndbuf(t *testing.T, c *net.UnixConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v := -1
	rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) })
	return v
}

// A short exchange leaves Pipe's sockets as they were; once a direction
// has moved bulkAfter bytes, both get the large buffers.
func TestPipeSizesForBulkLate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes int
		bulk  bool
	}{{"short", 4 << 10, false}, {"bulk", 2 * bulkAfter, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "sp")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			client, a := unixPair(t, dir, "a.sock")
			b, server := unixPair(t, dir, "b.sock")
			before := sndbuf(t, a)
			sizes := make(chan [2]int, 1)
			go func() {
				// The far end reads it all, then takes the sizes before
				// its answer ends the exchange.
				io.CopyN(io.Discard, server, int64(tc.bytes))
				sizes <- [2]int{sndbuf(t, a), sndbuf(t, b)}
				server.Write([]byte("ok"))
				server.Close()
			}()
			done := make(chan struct{})
			go func() { Pipe(a, b); close(done) }()
			client.Write(make([]byte, tc.bytes))
			client.CloseWrite()
			io.Copy(io.Discard, client)
			<-done
			got := <-sizes
			grown := got[0] > before && got[1] > before
			if grown != tc.bulk || (!tc.bulk && (got[0] != before || got[1] != before)) {
				t.Errorf("%d bytes: SO_SNDBUF %v, was %d; want grown %v", tc.bytes, got, before, tc.bulk)
			}
		})
	}
}
