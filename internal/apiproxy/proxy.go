package apiproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockrelay/sockrelay/internal/accept"
	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/rawio"
)

// Stats are a proxy's live counters.
type Stats struct {
	Active   atomic.Int64  // client connections open now
	Total    atomic.Uint64 // client connections accepted
	Requests atomic.Uint64 // requests decided
	Denied   atomic.Uint64 // requests refused
	// In and Out are the body bytes to the daemon and from it (streams
	// after a switch of protocols included), counted when a request ends.
	In, Out atomic.Uint64
}

// Bytes is the body bytes both ways.
func (s *Stats) Bytes() uint64 { return s.In.Load() + s.Out.Load() }

// Observer hears of each request and each gRPC call as the audit log
// does, for metrics: what Stats cannot count, by decision and rule.
type Observer interface {
	// Request is one request: allowed or not, by which rule, its body
	// bytes each way and how long it took.
	Request(allow bool, rule string, in, out int64, d time.Duration)
	// Call is one gRPC call of a followed stream.
	Call(allow bool, rule string)
}

// Proxy is one volume's policy proxy.
type Proxy struct {
	Volume   string
	Upstream string // the daemon's socket
	// Policy returns the policy in force; it may change between requests
	// (a policy file that changed on disk), never during one.
	Policy func() *policy.Policy
	Log    *slog.Logger // operational events
	Audit  *audit.Log   // one line per request
	Stats  *Stats
	// Observer, when set, hears of every request and gRPC call.
	Observer Observer
	// Learned, under a learning policy, gathers each allowed request as
	// its audit line tells it.
	Learned *policy.Learned
	// Limits bound what this proxy's clients can hold; Shared bounds
	// what the clients of every proxy holding it can hold together
	// (nil: DefaultShared). See limits.go.
	Limits Limits
	Shared *Shared
	// Identify, when set, places each client in its container for the
	// audit lines (package peer).
	Identify *peer.Resolver
	// Resolver answers a scoped policy's questions about objects, from
	// a cache shared by the volumes of the daemon; nil: each request
	// asks the daemon.
	Resolver *daemon.Resolver

	pool pool // idle upstream connections

	once   sync.Once // sets what follows, at the first Serve
	limits Limits    // Limits with its defaults
	shared *Shared
	conns  budget // of limits.Conns
	bodies budget // of limits.BodyBytes
}

func (p *Proxy) init() {
	p.once.Do(func() {
		p.limits = p.Limits.withDefaults()
		p.shared = p.Shared
		if p.shared == nil {
			p.shared = DefaultShared
		}
		p.conns.limit = int64(p.limits.Conns)
		p.bodies.limit = p.limits.BodyBytes
	})
}

// IdleUpstreams is the number of upstream connections kept idle for the
// next client connection.
func (p *Proxy) IdleUpstreams() int { return p.pool.len() }

// Serve accepts on ln until ctx ends or ln is closed; it returns when
// every connection it started is closed. When ctx ends, open connections,
// streams included, are cut.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	p.init()
	defer p.pool.close()
	return accept.Serve(ctx, ln, p.Log.With("volume", p.Volume), func(c net.Conn) {
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return
		}
		rc, err := uc.SyscallConn()
		if err != nil {
			uc.Close()
			return
		}
		cc := &clientConn{p: p, c: uc, crc: rc, cr: rawio.Reader{RC: rc}, start: time.Now()}
		cc.identify()
		p.Stats.Total.Add(1)
		if !takeAll(1, 0, &p.conns, &p.shared.conns) {
			cc.turnAway()
			return
		}
		defer giveAll(1, &p.conns, &p.shared.conns)
		p.Stats.Active.Add(1)
		defer p.Stats.Active.Add(-1)
		stop := context.AfterFunc(ctx, cc.close)
		defer stop()
		cc.serve()
		cc.finish()
	})
}

// turnAway answers a connection over the limits and closes it. The
// request is not read, but what the client sends for turnAwayLinger is
// taken in and dropped: a client whose request is refused by a close,
// or meets the reset a close with unread bytes makes, reports a broken
// connection rather than the answer.
func (cc *clientConn) turnAway() {
	x := &exchange{start: cc.start, policy: cc.p.Policy().Name()}
	// Its line tells what is known now, without waiting.
	cc.waited.Store(true)
	cc.c.SetDeadline(time.Now().Add(turnAwayLinger)) // a new socket's buffer takes the answer at once
	cc.refuse(x, http.StatusServiceUnavailable, ruleTooManyConns, cc.p.tooManyConns())
	cc.audit(x)
	cc.c.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(&cc.cr, turnAwayBytes))
	cc.c.Close()
}

// What turnAway takes in before it closes.
const (
	turnAwayLinger = 250 * time.Millisecond
	turnAwayBytes  = 64 << 10
)
