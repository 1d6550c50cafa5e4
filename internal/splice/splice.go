// Package splice copies bytes between sockets, by splice(2) where both
// are Unix sockets: page references move through a pipe and never through
// this process's memory. Pipe relays two connections both ways, passing
// half-closes on; CopyN copies an exact count (an HTTP body).
package splice

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// sockBuf is the buffer size SizeForBulk asks for (the kernel caps it at
// net.core.wmem_max and rmem_max).
const sockBuf = 4 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Pipe copies a to b and b to a until both directions end, passing a
// half-close on: when one side stops sending, the other side's write half
// is shut so it sees EOF, and the reverse direction keeps flowing. When a
// side hangs up entirely, or an error comes in either direction, both are
// closed at once: a client that goes away never leaves its upstream open.
// Pipe closes a and b and returns the bytes copied.
func Pipe(a, b net.Conn) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	one := func(dst, src net.Conn) {
		k, err := copyConn(dst, src)
		n.Add(k)
		if err == nil && !hungUp(src) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
		}
		a.Close()
		b.Close()
	}
	wg.Go(func() { one(b, a) })
	one(a, b)
	wg.Wait()
	a.Close()
	b.Close()
	return n.Load()
}

// copyConn copies src to dst until EOF (nil) or an error: by splice(2)
// between Unix sockets, with a pooled buffer otherwise.
func copyConn(dst, src net.Conn) (int64, error) {
	return copyLimit(dst, src, -1)
}

// CopyN copies exactly n bytes from src to dst, by splice(2) between Unix
// sockets; fewer bytes before EOF is io.ErrUnexpectedEOF.
func CopyN(dst, src net.Conn, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	return copyLimit(dst, src, n)
}

func copyLimit(dst, src net.Conn, limit int64) (int64, error) {
	if d, ok := dst.(*net.UnixConn); ok {
		if s, ok := src.(*net.UnixConn); ok {
			n, err := spliceCopy(d, s, limit)
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
