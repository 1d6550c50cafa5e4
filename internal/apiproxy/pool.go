package apiproxy

import (
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/rawio"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// Upstream connections outlive the client connections they served: a
// connection whose last exchange ended cleanly (the whole response read,
// no close asked for, no protocol switch) waits in the pool for the next
// client connection, as in any HTTP reverse proxy. A client that opens a
// connection per request, as the docker CLI and most SDKs do, then costs
// the daemon no connect, accept and teardown per request, and the proxy's
// latency falls by as much.
//
// A pooled connection carries nothing of the client it served: the daemon
// keeps no state per connection between requests, and every request on it
// is decided like any other before it is written.
const (
	// maxIdle bounds the idle connections one proxy keeps.
	maxIdle = 32
	// idleTimeout is how long an idle connection is kept.
	idleTimeout = 30 * time.Second
	// checkAfter is the idle time after which a connection is checked
	// before use. One idle for less is used as it is: if the daemon
	// closed it in the meantime, the write is refused whole and
	// writeHead makes a new one.
	checkAfter = time.Second
)

// pool holds idle upstream connections, newest last.
type pool struct {
	mu     sync.Mutex
	idle   []idleConn
	sweep  *time.Timer // set while idle is not empty
	closed bool
}

type idleConn struct {
	c     *net.UnixConn
	since time.Time
}

// get returns an idle connection that is still open, or dials one; reused
// says which.
func (p *pool) get(addr string) (c *net.UnixConn, reused bool, err error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		ic := p.idle[n-1]
		p.idle[n-1] = idleConn{}
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if age := time.Since(ic.since); age < checkAfter || age < idleTimeout && quiet(ic.c) {
			return ic.c, true, nil
		}
		ic.c.Close()
	}
	c2, err := net.DialTimeout("unix", addr, unixsock.DialTimeout)
	if err != nil {
		return nil, false, err
	}
	return c2.(*net.UnixConn), false, nil
}

// put keeps c for a later client connection, or closes it when the pool
// is full or closed.
func (p *pool) put(c *net.UnixConn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdle {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	if p.sweep == nil {
		p.sweep = time.AfterFunc(idleTimeout, p.expire)
	}
	p.mu.Unlock()
}

// expire closes the connections idle for idleTimeout or more, and comes
// back while any is left.
func (p *pool) expire() {
	p.mu.Lock()
	now := time.Now()
	var old []idleConn
	keep := p.idle[:0]
	for _, ic := range p.idle {
		if now.Sub(ic.since) >= idleTimeout {
			old = append(old, ic)
		} else {
			keep = append(keep, ic)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.sweep = nil
	if len(p.idle) > 0 && !p.closed {
		p.sweep = time.AfterFunc(idleTimeout-now.Sub(p.idle[0].since), p.expire)
	}
	p.mu.Unlock()
	for _, ic := range old {
		ic.c.Close()
	}
}

// close closes every idle connection and makes put close from now on.
func (p *pool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.Close()
	}
}

// len is the number of idle connections.
func (p *pool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// quiet reports whether an idle connection is still open and has sent
// nothing: a daemon that restarted or closed it shows EOF here, and one
// that sent bytes nobody asked for is not to be trusted with a request.
func quiet(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	return quietRaw(rc)
}

// quietRaw is quiet on a connection's raw descriptor.
func quietRaw(rc syscall.RawConn) bool {
	ok := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		_, errno := rawio.Recv(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = errno == unix.EAGAIN
	})
	return ok
}
