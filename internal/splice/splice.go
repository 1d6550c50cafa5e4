// Package splice copies bytes between sockets, by splice(2) where both
// are Unix sockets: page references move through a pipe and never through
// this process's memory. Pipe relays two connections both ways, passing
// half-closes on; CopyN copies an exact count (an HTTP body).
package splice

import (
	"io"
	"net"
	"sync"
)

const (
	// sockBuf is the buffer size SizeForBulk asks for (the kernel caps it
	// at net.core.wmem_max and rmem_max).
	sockBuf = 4 << 20
	// bulkAfter is how many bytes one direction of a Pipe moves before
	// both its sockets get sockBuf: fewer, larger wakeups for images,
	// archives and build contexts, and no setsockopt for the short
	// exchanges that most connections are.
	bulkAfter = 256 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Pipe copies a to b and b to a until both directions end, passing a
// half-close on: when one side stops sending, the other side's write half
// is shut so it sees EOF, and the reverse direction keeps flowing. When a
// side hangs up entirely, or an error comes in either direction, both are
// closed at once: a client that goes away never leaves its upstream open.
// Pipe closes a and b and returns the bytes copied each way: a to b, and
// b to a.
//
// Once one direction has moved bulkAfter bytes, both sockets get the
// buffers of SizeForBulk.
func Pipe(a, b net.Conn) (ab, ba int64) {
	var wg sync.WaitGroup
	var sized sync.Once
	bulk := func() {
		sized.Do(func() {
			for _, c := range []net.Conn{a, b} {
				if uc, ok := c.(*net.UnixConn); ok {
					SizeForBulk(uc)
				}
			}
		})
	}
	one := func(dst, src net.Conn, n *int64) {
		k, err := copyLimit(dst, src, -1, bulk)
		*n = k
		if err == nil && !hungUp(src) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
		}
		a.Close()
		b.Close()
	}
	wg.Go(func() { one(b, a, &ab) })
	one(a, b, &ba)
	wg.Wait()
	a.Close()
	b.Close()
	return ab, ba
}

// CopyN copies exactly n bytes from src to dst, by splice(2) between Unix
// sockets; fewer bytes before EOF is io.ErrUnexpectedEOF.
func CopyN(dst, src net.Conn, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	return copyLimit(dst, src, n, nil)
}

// copyLimit copies src to dst, limit bytes or (limit < 0) until EOF: by
// splice(2) between Unix sockets, calling bulk once when bulkAfter bytes
// have moved; with a pooled buffer otherwise.
func copyLimit(dst, src net.Conn, limit int64, bulk func()) (int64, error) {
	if d, ok := dst.(*net.UnixConn); ok {
		if s, ok := src.(*net.UnixConn); ok {
			n, err := spliceCopy(d, s, limit, bulk)
			if err != errNoSplice {
				return n, err
			}
		}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	if limit < 0 {
		return io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *buf)
	}
	n, err := io.CopyBuffer(onlyWriter{dst}, io.LimitReader(onlyReader{src}, limit), *buf)
	if err == nil && n < limit {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo so CopyBuffer uses the
// pooled buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
