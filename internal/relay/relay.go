// Package relay relays every connection of a listener to an upstream
// socket, byte for byte, dialling the upstream anew for each one: a
// daemon that restarts is reached again at the next connection.
package relay

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/sockrelay/sockrelay/internal/accept"
	"github.com/sockrelay/sockrelay/internal/splice"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// Stats are a relay's live counters.
type Stats struct {
	Active atomic.Int64  // connections open now
	Total  atomic.Uint64 // connections accepted
	Failed atomic.Uint64 // connections closed because the upstream was down
	// In and Out are the bytes copied to the upstream and from it,
	// counted when a connection ends.
	In, Out atomic.Uint64
	// LastError is the last upstream failure, with its time.
	LastError atomic.Pointer[TimedError]
}

// Bytes is the bytes copied both ways.
func (s *Stats) Bytes() uint64 { return s.In.Load() + s.Out.Load() }

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
	return accept.Serve(ctx, ln, s.Log, func(c net.Conn) {
		s.Stats.Total.Add(1)
		s.Stats.Active.Add(1)
		defer s.Stats.Active.Add(-1)
		s.handle(ctx, c)
	})
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	dctx, cancel := context.WithTimeout(ctx, unixsock.DialTimeout)
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
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	start := time.Now()
	in, out := splice.Pipe(c, up)
	s.Stats.In.Add(uint64(in))
	s.Stats.Out.Add(uint64(out))
	s.Log.Debug("connection closed", "bytes_in", in, "bytes_out", out, "duration", time.Since(start))
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
