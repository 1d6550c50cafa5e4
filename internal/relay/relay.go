// Package relay copies bytes between the clients of a listener and an
// upstream socket, dialled anew for every connection.
package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// sockBuf sizes both relay sockets' buffers (capped by the kernel's
// net.core.wmem_max and rmem_max).
const sockBuf = 4 << 20

// DialTimeout bounds how long a client waits for the upstream to answer.
const DialTimeout = 5 * time.Second

// Stats are a relay's live counters.
type Stats struct {
	Active atomic.Int64  // connections open now
	Total  atomic.Uint64 // connections accepted
	Failed atomic.Uint64 // connections closed because the upstream was down
	Bytes  atomic.Uint64 // bytes copied, both directions
	// LastError is the last upstream failure, with its time.
	LastError atomic.Pointer[TimedError]
}

// TimedError is an error and when it happened.
type TimedError struct {
	Err string
	At  time.Time
}

// Server relays every connection accepted on a listener to Upstream.
type Server struct {
	// Upstream is the socket path dialled for each client.
	Upstream string
	Log      *slog.Logger
	Stats    *Stats

	// While the upstream is down every client fails; one warning a
	// second, with the count of those not logged, keeps the log readable.
	lastWarn   atomic.Int64
	suppressed atomic.Uint64
}

// Serve accepts on ln until ctx ends or ln is closed, and returns only
// when every connection it started has been closed. When ctx ends, open
// connections are cut.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return Accept(ctx, ln, s.Log, func(c net.Conn) {
		s.Stats.Total.Add(1)
		s.Stats.Active.Add(1)
		defer s.Stats.Active.Add(-1)
		s.handle(ctx, c)
	})
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	var d net.Dialer
	up, err := d.DialContext(dctx, "unix", s.Upstream)
	cancel()
	if err != nil {
		s.Stats.Failed.Add(1)
		s.Stats.LastError.Store(&TimedError{Err: "upstream unreachable: " + err.Error(), At: time.Now().UTC()})
		c.Close()
		s.warnUpstream(err)
		return
	}
	if uc, ok := c.(*net.UnixConn); ok {
		setBuffers(uc, sockBuf)
	}
	if uc, ok := up.(*net.UnixConn); ok {
		setBuffers(uc, sockBuf)
	}
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	start := time.Now()
	n := Pipe(c, up)
	s.Stats.Bytes.Add(uint64(n))
	s.Log.Debug("connection closed", "bytes", n, "duration", time.Since(start))
}

func (s *Server) warnUpstream(err error) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		s.suppressed.Add(1)
		return
	}
	s.Log.Warn("upstream unreachable; client closed", "upstream", s.Upstream, "err", err, "also_closed", s.suppressed.Swap(0))
}

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
