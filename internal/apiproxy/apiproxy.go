// Package apiproxy serves the Docker API through a policy. Each request on
// a client connection, kept-alive and pipelined ones included, is read and
// decided before a byte of it reaches the daemon. Bodies the policy
// inspects are read whole (bounded) and forwarded as read; other bodies
// are passed through as they come, by splice(2), never buffered. After a
// protocol switch (101) the connection is a raw stream with half-close
// passed on both ways. Every request is written to an audit log.
package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/accept"
	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/rawio"
	"github.com/sockrelay/sockrelay/internal/splice"
)

// MaxHeader bounds a request's or response's head (its first line and
// header block): it must fit in a connection's read buffer.
const MaxHeader = 16 << 10

// Stats are a proxy's live counters.
type Stats struct {
	Active   atomic.Int64  // client connections open now
	Requests atomic.Uint64 // requests decided
	Denied   atomic.Uint64 // requests refused
	Bytes    atomic.Uint64 // body bytes both ways
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
	// Limits bound what this proxy's clients can hold; Shared bounds
	// what the clients of every proxy holding it can hold together
	// (nil: DefaultShared). See limits.go.
	Limits Limits
	Shared *Shared

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
		cc := &clientConn{p: p, c: uc, crc: rc, cr: rawio.Reader{RC: rc}, peer: peerOf(rc), start: time.Now()}
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

// clientConn is one client connection and the upstream connection that
// mirrors it (taken from the pool or dialled at its first allowed
// request).
type clientConn struct {
	p    *Proxy
	c    *net.UnixConn
	crc  syscall.RawConn // c's, for raw reads and writes (rawio.go)
	cr   rawio.Reader
	br   *bufio.Reader
	peer *audit.Peer // nil when SO_PEERCRED says nothing
	// start is when the connection was accepted.
	start time.Time
	// watched is set while a request is with the daemon and the client
	// is watched for leaving (watch); watchDone is sent to each time
	// watchClient ends.
	watched   bool
	watchT    *time.Timer
	watchDone chan struct{}
	// sized is the upstream connection whose buffers, and the client's,
	// were sized for bulk transfers.
	sized *net.UnixConn
	// sent says the last request went to the daemon whole, in the
	// proxy's own framing, and none of the answer had come before its
	// body was all sent. A daemon that answers before it has the whole
	// body may not read the rest, and may close the connection later,
	// under the next client's request.
	sent bool
	// clean says the upstream connection is between exchanges: the last
	// request was sent, its response was read whole, the daemon did not
	// ask to close, and nothing is left over. Only a clean connection
	// goes back to the pool.
	clean bool

	mu     sync.Mutex
	closed bool
	up     *net.UnixConn
	urc    syscall.RawConn // up's
	ur     rawio.Reader
	ubr    *bufio.Reader
}

// finish ends a connection whose serve returned: the upstream connection
// goes back to the pool when it is clean, and everything else is closed.
func (cc *clientConn) finish() {
	cc.mu.Lock()
	up := cc.up
	keep := up != nil && cc.clean && !cc.closed
	if keep {
		cc.up = nil
	}
	cc.mu.Unlock()
	if keep {
		cc.p.pool.put(up)
	}
	cc.close()
}

func (cc *clientConn) close() {
	cc.mu.Lock()
	cc.closed = true
	up := cc.up
	cc.mu.Unlock()
	cc.c.Close()
	if up != nil {
		up.Close()
	}
}

// exchange is what the audit line says of one request.
type exchange struct {
	policy             string
	method, path, rule string
	allow              bool
	status             int
	in, out            int64
	start              time.Time
}

// readers holds the buffered readers of both sides. A connection holds
// them only while a request is in flight: an idle kept-alive connection
// costs no buffer.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, MaxHeader) }}

func (cc *clientConn) serve() {
	defer cc.release(true)
	for first := true; ; first = false {
		// Wait for the next request holding no buffer, unless the last
		// read took in more (a pipelined request). The first request is
		// read at once: a connection is opened to send one, and it is
		// most often there already.
		if cc.br == nil || cc.br.Buffered() == 0 {
			cc.release(false)
			if !first {
				if err := waitReadable(cc.crc); err != nil {
					return
				}
			}
			cc.br = readers.Get().(*bufio.Reader)
			cc.br.Reset(&cc.cr)
		}
		// The head must come within HeadTimeout: from the connection's
		// start for the first request (a client connects to send one),
		// from its first byte, here now, for the next ones.
		from := time.Now()
		if first {
			from = cc.start
		}
		cc.c.SetReadDeadline(from.Add(cc.p.limits.HeadTimeout))
		if _, err := cc.br.Peek(1); err != nil {
			return
		}
		x := &exchange{start: time.Now()}
		keep := cc.one(x)
		cc.audit(x)
		if !keep {
			return
		}
	}
}

// release gives the readers back: the client's when it holds nothing
// (or at the end), the upstream's when it holds nothing.
func (cc *clientConn) release(all bool) {
	if cc.br != nil && (all || cc.br.Buffered() == 0) {
		cc.br.Reset(nil)
		readers.Put(cc.br)
		cc.br = nil
	}
	if cc.ubr != nil && (all || cc.ubr.Buffered() == 0) {
		cc.ubr.Reset(nil)
		readers.Put(cc.ubr)
		cc.ubr = nil
	}
}

// waitReadable waits until rc's socket has data or its peer is gone,
// reading nothing: MSG_PEEK of one byte.
func waitReadable(rc syscall.RawConn) error {
	var errno syscall.Errno
	if err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, errno = rawio.Recv(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return errno != unix.EAGAIN
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// one serves one request; it reports whether the connection goes on.
func (cc *clientConn) one(x *exchange) bool {
	p := cc.p
	pol := p.Policy()
	x.policy = pol.Name()
	head, err := peekHead(cc.br)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cc.refuse(x, http.StatusRequestTimeout, ruleTimeout,
			fmt.Sprintf("the request head did not arrive within %v", p.limits.HeadTimeout))
		return false
	}
	if err != nil {
		cc.refuse(x, http.StatusBadRequest, ruleBadRequest, err.Error())
		return false
	}
	if bad := framingConflict(head); bad != "" {
		cc.refuse(x, http.StatusBadRequest, ruleBadRequest, bad)
		return false
	}
	req, err := http.ReadRequest(cc.br)
	if err != nil {
		cc.refuse(x, http.StatusBadRequest, ruleBadRequest, "the request could not be parsed")
		return false
	}
	if len(req.TransferEncoding) > 0 {
		// Read by the proxy's rules (chunked.go) whether inspected or
		// lingered on: Go's reader, over this larger buffer, would take
		// longer lines than dockerd's, and trailers.
		req.Body = io.NopCloser(newChunkedBody(cc.br))
	}
	x.method = req.Method
	p.Stats.Requests.Add(1)
	if hasBody(req) && strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// The body is read here, so the go-ahead is ours to give; the
		// daemon gets the request without the Expect.
		req.Header.Del("Expect")
		if _, err := cc.write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
			return false
		}
	}

	var body []byte
	var held int64 // of the body budgets, given back once body is sent
	defer func() { giveAll(held, &p.bodies, &p.shared.bodies) }()
	if pol.BodyNeeded(req.Method, req.RequestURI) && hasBody(req) {
		if req.ContentLength > policy.MaxBody {
			cc.refuse(x, policy.StatusTooLarge, policy.RuleBodyTooLarge, tooLarge)
			cc.linger(req)
			return false
		}
		cc.c.SetReadDeadline(time.Now().Add(p.limits.BodyTimeout))
		body, held, err = cc.inspect(req)
		switch {
		case errors.Is(err, errTooLarge):
			cc.refuse(x, policy.StatusTooLarge, policy.RuleBodyTooLarge, tooLarge)
			cc.linger(req)
			return false
		case errors.Is(err, errBusy):
			cc.refuse(x, http.StatusServiceUnavailable, ruleBusy, p.busy())
			cc.linger(req)
			return false
		case errors.Is(err, errBadChunked):
			cc.refuse(x, http.StatusBadRequest, ruleBadRequest, err.Error())
			return false
		case errors.Is(err, os.ErrDeadlineExceeded):
			cc.refuse(x, http.StatusRequestTimeout, ruleTimeout,
				fmt.Sprintf("the request body did not arrive within %v", p.limits.BodyTimeout))
			return false
		case err != nil:
			cc.refuse(x, http.StatusBadRequest, policy.RuleBadBody, "the request body could not be read")
			return false
		}
	}
	// Bodies passed through, and the answer, take as long as they take.
	cc.c.SetReadDeadline(time.Time{})
	dec := pol.Decide(policy.Request{Method: req.Method, Target: req.RequestURI, Header: req.Header, Body: body,
		Daemon: daemon.Lookup{Client: daemon.Client{Socket: p.Upstream}, Ctx: context.Background()}})
	x.path, x.rule = dec.Path, dec.Rule
	if dec.Allow && isUpgrade(req.Header) && !dec.Upgrade {
		dec = policy.Decision{Status: http.StatusForbidden, Rule: policy.RuleUpgrade, Path: dec.Path,
			Reason: fmt.Sprintf("switching protocols on %s is not allowed by policy %s", dec.Path, pol.Name())}
		x.rule = dec.Rule
	}
	if !dec.Allow {
		cc.refuse(x, dec.Status, dec.Rule, dec.Reason)
		if body == nil {
			cc.linger(req)
		}
		return false
	}
	x.allow = true
	// The references the policy resolved go to the daemon as the full
	// IDs it checked.
	if dec.Target != "" {
		req.RequestURI = dec.Target
	}
	if dec.Body != nil {
		body = dec.Body
	}

	if _, _, err := cc.upstream(); err != nil {
		p.Log.Warn("upstream unreachable", "volume", p.Volume, "err", err)
		cc.refuse(x, http.StatusBadGateway, ruleUpstream, noDaemon)
		return false
	}
	err = cc.forwardRequest(x, req, body)
	body = nil
	giveAll(held, &p.bodies, &p.shared.bodies)
	held = 0
	if err != nil {
		// The daemon's connection is left inside a request: it is
		// closed, never pooled, and the daemon drops the request.
		cc.dropUpstream()
		p.Log.Debug("forward request", "volume", p.Volume, "err", err)
		switch {
		case errors.Is(err, errHeadNotSent):
			cc.refuse(x, http.StatusBadGateway, ruleUpstream, noDaemon)
		case errors.Is(err, errBadChunked):
			cc.refuse(x, http.StatusBadRequest, ruleBadRequest, err.Error())
		}
		return false
	}
	cc.watch()
	defer cc.unwatch()
	return cc.forwardResponse(x, req)
}

var (
	errTooLarge = errors.New("request body too large")
	errBusy     = errors.New("no memory for the request body")
)

// firstInspectBuf is the first buffer for an inspected body of unknown
// or larger size; it doubles as the body arrives.
const firstInspectBuf = 16 << 10

// inspect reads the body the policy inspects, whole. Its memory is taken
// from the proxy's body budget and the shared one as the body arrives,
// doubling, so that a client holds no more than twice what it sent, and
// all clients together no more than the budgets; a request that finds
// no room within budgetWait fails with errBusy. held is what the caller
// gives back once the body is sent. The buffer is the request's own and
// goes with it: a pool of them would keep the largest alive after a
// flood.
func (cc *clientConn) inspect(req *http.Request) (body []byte, held int64, err error) {
	p := cc.p
	r := req.Body
	chunked := len(req.TransferEncoding) > 0
	most := int64(policy.MaxBody) + 1 // one byte more shows a chunked body too large
	if !chunked {
		most = req.ContentLength
	}
	for {
		if int64(len(body)) == most {
			if chunked {
				return nil, held, errTooLarge
			}
			return body, held, nil
		}
		if len(body) == cap(body) {
			n := min(max(2*int64(cap(body)), firstInspectBuf), most)
			more := n - int64(cap(body))
			if !takeAll(more, budgetWait, &p.bodies, &p.shared.bodies) {
				return nil, held, errBusy
			}
			held += more
			body = append(make([]byte, 0, n), body...)
		}
		k, err := r.Read(body[len(body):cap(body)])
		body = body[:len(body)+k]
		if err == io.EOF {
			return body, held, nil
		}
		if err != nil {
			return nil, held, err
		}
	}
}

// Rules of the refusals that are the transport's, not the policy's.
const (
	ruleBadRequest = "bad-request" // a request the proxy cannot frame exactly as the daemon would
	ruleUpstream   = "upstream"    // the daemon cannot be reached
)

const noDaemon = "the Docker daemon did not answer; try again"

// errHeadNotSent marks a request of which nothing reached the daemon.
var errHeadNotSent = errors.New("the request could not be written to the daemon")

var tooLarge = fmt.Sprintf("request bodies the policy inspects are limited to %s", sizeText(policy.MaxBody))

// sizeText writes a byte count for people: in MiB or KiB when it is a
// whole number of them.
func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func hasBody(req *http.Request) bool {
	return req.ContentLength > 0 || len(req.TransferEncoding) > 0
}

// upstream returns the connection's upstream, taking one from the pool or
// dialling one if it has none yet.
func (cc *clientConn) upstream() (*net.UnixConn, *bufio.Reader, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.up == nil {
		if cc.closed {
			return nil, nil, net.ErrClosed
		}
		c, _, err := cc.p.pool.get(cc.p.Upstream)
		if err != nil {
			return nil, nil, err
		}
		rc, err := c.SyscallConn()
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		cc.up, cc.urc, cc.ur = c, rc, rawio.Reader{RC: rc}
	}
	if cc.ubr == nil {
		cc.ubr = readers.Get().(*bufio.Reader)
		cc.ubr.Reset(&cc.ur)
	}
	return cc.up, cc.ubr, nil
}

// dropUpstream closes the upstream connection; the next call to upstream
// makes another.
func (cc *clientConn) dropUpstream() {
	cc.mu.Lock()
	up := cc.up
	cc.up, cc.urc, cc.ur = nil, nil, rawio.Reader{}
	if cc.ubr != nil {
		cc.ubr.Reset(nil)
		readers.Put(cc.ubr)
		cc.ubr = nil
	}
	cc.mu.Unlock()
	if up != nil {
		up.Close()
	}
}

// writeHead writes what goes first of a request: its head, and a body
// already in memory with it. A pooled connection the daemon closed a moment ago
// refuses the write whole; nothing reached the daemon, so the write is
// tried once more on a new connection.
func (cc *clientConn) writeHead(head, body []byte) error {
	for try := 0; ; try++ {
		var err error
		if len(body) == 0 {
			_, err = rawio.Write(cc.urc, head)
		} else {
			err = rawio.Writev(cc.urc, head, body) // the body is not copied
		}
		if err == nil {
			return nil
		}
		if try > 0 || !(errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)) {
			return fmt.Errorf("%w: %w", errHeadNotSent, err)
		}
		cc.dropUpstream()
		if _, _, err := cc.upstream(); err != nil {
			return fmt.Errorf("%w: %w", errHeadNotSent, err)
		}
	}
}

// forwardRequest writes the request head, re-encoded from what was
// parsed, and its body: the inspected bytes, or the client's bytes as
// they come.
func (cc *clientConn) forwardRequest(x *exchange, req *http.Request, body []byte) error {
	cc.clean, cc.sent = false, false
	h := req.Header
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	if req.Close && req.ProtoAtLeast(1, 1) {
		// The client's close is the client's: the daemon's connection
		// stays open for the pool, and the answer tells the client.
		dropToken(h, "Connection", "close")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\nHost: %s\r\n", req.Method, req.RequestURI, req.Proto, hostOr(req.Host))
	chunked := false
	switch {
	case body != nil:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	case len(req.TransferEncoding) > 0:
		b.WriteString("Transfer-Encoding: chunked\r\n")
		chunked = true
	case req.ContentLength > 0:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", req.ContentLength)
	}
	h.Write(&b)
	b.WriteString("\r\n")
	switch {
	case body != nil:
		x.in = int64(len(body))
		if err := cc.writeHead(b.Bytes(), body); err != nil {
			return err
		}
	case chunked:
		if err := cc.writeHead(b.Bytes(), nil); err != nil {
			return err
		}
		n, err := copyChunked(cc.up, cc.br, cc.c, cc.bulk)
		x.in = n
		if err != nil {
			return err
		}
	default:
		n := max(req.ContentLength, 0)
		var small []byte
		if n > 0 && int64(cc.br.Buffered()) >= n {
			// Small body already here: one write.
			small, _ = cc.br.Peek(int(n))
			n = 0
			x.in = int64(len(small))
		}
		err := cc.writeHead(b.Bytes(), small)
		cc.br.Discard(len(small))
		if err != nil {
			return err
		}
		if n > bulkBody {
			cc.bulk()
		}
		k, err := copyN(cc.up, cc.br, cc.c, n)
		x.in += k
		if err != nil {
			return err
		}
	}
	// With a body, the answer must not have begun before the body was
	// all sent (see sent).
	cc.sent = !hasBody(req) || quietRaw(cc.urc)
	return nil
}

// reusable says whether the daemon's connection may carry another
// request once resp is read whole: HTTP/1.1 both ways (an HTTP/1.0
// exchange closes unless both ends say otherwise, and that is not worth
// trusting), no close asked for, and nothing sent beyond the response.
func reusable(req *http.Request, resp *http.Response, ubr *bufio.Reader) bool {
	return req.ProtoAtLeast(1, 1) && resp.ProtoAtLeast(1, 1) && !resp.Close && ubr.Buffered() == 0
}

// dropToken removes token from the comma-separated values of header key.
func dropToken(h http.Header, key, token string) {
	var keep []string
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, token) {
				keep = append(keep, t)
			}
		}
	}
	h.Del(key)
	if len(keep) > 0 {
		h.Set(key, strings.Join(keep, ", "))
	}
}

// forwardResponse passes the daemon's response on. It reports whether
// the connection may serve another request.
func (cc *clientConn) forwardResponse(x *exchange, req *http.Request) bool {
	up, ubr := cc.up, cc.ubr
	// done says whether the daemon's connection is clean once the response
	// is read whole (err == nil), and whether the client's goes on.
	done := func(resp *http.Response, err error) bool {
		cc.clean = err == nil && cc.sent && reusable(req, resp, ubr)
		return err == nil && !req.Close && !resp.Close
	}
	for {
		if _, err := peekHead(ubr); err != nil {
			cc.p.Log.Debug("read response", "volume", cc.p.Volume, "err", err)
			return false
		}
		resp, err := http.ReadResponse(ubr, req)
		if err != nil {
			cc.p.Log.Debug("read response", "volume", cc.p.Volume, "err", err)
			return false
		}
		x.status = resp.StatusCode
		noBody := req.Method == http.MethodHead || resp.StatusCode/100 == 1 || resp.StatusCode == 204 || resp.StatusCode == 304
		chunked := !noBody && len(resp.TransferEncoding) > 0
		untilClose := !noBody && !chunked && resp.ContentLength < 0
		resp.Header.Del("Transfer-Encoding")
		if !noBody {
			resp.Header.Del("Content-Length") // written below from what was parsed
		}
		if req.Close && resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Header.Set("Connection", "close") // its close was not passed on
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s\r\n", resp.Proto, resp.Status)
		if chunked {
			b.WriteString("Transfer-Encoding: chunked\r\n")
		} else if !noBody && resp.ContentLength >= 0 {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", resp.ContentLength)
		}
		resp.Header.Write(&b)
		b.WriteString("\r\n")

		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			// A raw stream from here on, both ways.
			cc.write(b.Bytes())
			cc.rawStream(x, up, ubr)
			return false
		case resp.StatusCode/100 == 1:
			if _, err := cc.write(b.Bytes()); err != nil {
				return false
			}
			continue // 100 Continue and friends: the final response follows
		case noBody:
			_, err := cc.write(b.Bytes())
			cc.clean = cc.sent && reusable(req, resp, ubr) // nothing more to read
			return err == nil && !req.Close && !resp.Close
		case chunked:
			if _, err := cc.write(b.Bytes()); err != nil {
				return false
			}
			n, err := copyChunked(cc.c, ubr, up, cc.bulk)
			x.out = n
			return done(resp, err)
		case untilClose:
			// The daemon's old-style hijack (attach without Upgrade): a
			// raw stream, delimited by close.
			cc.write(b.Bytes())
			cc.rawStream(x, up, ubr)
			return false
		default:
			n := resp.ContentLength
			if n > 0 && int64(ubr.Buffered()) >= n {
				p, _ := ubr.Peek(int(n))
				b.Write(p)
				ubr.Discard(int(n))
				x.out = n
				n = 0
			}
			if _, err := cc.write(b.Bytes()); err != nil {
				return false
			}
			if n > bulkBody {
				cc.bulk()
			}
			k, err := copyN(cc.c, ubr, up, n)
			x.out += k
			return done(resp, err)
		}
	}
}

// write writes p whole to the client.
func (cc *clientConn) write(p []byte) (int, error) { return rawio.Write(cc.crc, p) }

// rawStream relays both ways until both sides are done, passing
// half-closes on; what the readers already buffered goes first.
func (cc *clientConn) rawStream(x *exchange, up *net.UnixConn, ubr *bufio.Reader) {
	cc.unwatch() // the stream reads the client from here on
	if n := cc.br.Buffered(); n > 0 {
		p, _ := cc.br.Peek(n)
		up.Write(p)
		cc.br.Discard(n)
	}
	if n := ubr.Buffered(); n > 0 {
		p, _ := ubr.Peek(n)
		cc.c.Write(p)
		ubr.Discard(n)
	}
	n := splice.Pipe(cc.c, up)
	x.out += n
}

// refuse answers in Docker's error shape, so the docker CLI prints
// "Error response from daemon: sockrelay: <rule>: <reason>", and closes
// the connection: an unread body must never be taken for a request.
func (cc *clientConn) refuse(x *exchange, status int, rule, reason string) {
	if status == 0 {
		status = http.StatusForbidden
	}
	x.status, x.rule = status, rule
	cc.p.Stats.Denied.Add(1)
	msg, _ := json.Marshal(map[string]string{"message": "sockrelay: " + rule + ": " + reason})
	msg = append(msg, '\n')
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), len(msg))
	b.Write(msg)
	cc.write(b.Bytes())
	x.out = int64(len(msg))
}

// linger reads and drops what is left of a refused request's body, for a
// bounded time and size, so that a client still writing it reads the
// refusal rather than a broken pipe.
func (cc *clientConn) linger(req *http.Request) {
	if !hasBody(req) {
		return
	}
	cc.c.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, io.LimitReader(req.Body, lingerBytes))
}

const (
	lingerTime  = 5 * time.Second
	lingerBytes = 64 << 20
)

func (cc *clientConn) audit(x *exchange) {
	p := cc.p
	p.Stats.Bytes.Add(uint64(x.in + x.out))
	now := time.Now()
	p.Audit.Request(audit.Entry{
		Time: now, Volume: p.Volume, Policy: x.policy, Method: x.method, Path: x.path,
		Allow: x.allow, Rule: x.rule, Status: x.status, In: x.in, Out: x.out,
		Duration: now.Sub(x.start), Peer: cc.peer,
	})
}

func hostOr(h string) string {
	if h == "" {
		return "docker"
	}
	return h
}

func isUpgrade(h http.Header) bool {
	if h.Get("Upgrade") != "" {
		return true
	}
	for _, v := range h.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

var errHeadTooLarge = fmt.Errorf("the head is larger than %s", sizeText(MaxHeader))

// peekHead returns the raw header block at the head of br (through the
// blank line) without consuming it.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		n := br.Buffered()
		if n > 0 {
			b, _ := br.Peek(n)
			if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
				return b[:i+4], nil
			}
			if n >= br.Size() {
				return nil, errHeadTooLarge
			}
		}
		// Wait for at least one more byte.
		if _, err := br.Peek(n + 1); err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return nil, errors.New("the connection closed inside a header")
			}
			return nil, err
		}
	}
}

// framingConflict refuses the ambiguous framings that smuggling relies
// on; Go's parser would quietly pick one, so they are caught raw.
func framingConflict(head []byte) string {
	var te, cl int
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch strings.ToLower(string(bytes.TrimSpace(k))) {
		case "transfer-encoding":
			te++
		case "content-length":
			cl++
		}
		if bytes.ContainsAny(k, " \t") {
			return "a header name with white space"
		}
	}
	switch {
	case te > 0 && cl > 0:
		return "both Transfer-Encoding and Content-Length"
	case te > 1:
		return "more than one Transfer-Encoding"
	}
	return ""
}

// copyN copies n bytes: those br already holds, then the rest from src
// directly (by splice between Unix sockets).
func copyN(dst net.Conn, br *bufio.Reader, src net.Conn, n int64) (int64, error) {
	var done int64
	if k := min(int64(br.Buffered()), n); k > 0 {
		p, _ := br.Peek(int(k))
		if _, err := dst.Write(p); err != nil {
			return 0, err
		}
		br.Discard(int(k))
		done = k
	}
	if done == n {
		return done, nil
	}
	k, err := splice.CopyN(dst, src, n-done)
	return done + k, err
}

// bulkBody is the body size, or chunk size, from which a connection's
// sockets get the relay's large buffers: fewer and larger wakeups for
// images, archives and build contexts, and no setsockopt for the rest.
const bulkBody = 256 << 10

// bulk sizes both sockets of the connection for bulk transfers, once.
func (cc *clientConn) bulk() {
	if cc.sized == cc.up {
		return
	}
	cc.sized = cc.up
	splice.SizeForBulk(cc.c)
	splice.SizeForBulk(cc.up)
}

// peerOf is the client process, from SO_PEERCRED.
func peerOf(rc syscall.RawConn) *audit.Peer {
	var cred unix.Ucred
	var errno syscall.Errno
	rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(cred))
		_, _, errno = syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERCRED,
			uintptr(unsafe.Pointer(&cred)), uintptr(unsafe.Pointer(&size)), 0)
	})
	if errno != 0 {
		return nil
	}
	return &audit.Peer{PID: cred.Pid, UID: int32(cred.Uid)}
}

// A client that leaves while the daemon works on its request must not
// leave the daemon working: dockerd cancels a request when its
// connection closes, and until then a request such as POST
// /containers/{id}/wait holds a connection, a descriptor of the proxy's
// and goroutines of the daemon's, for as long as the container runs. So
// while a request is with the daemon, the client's socket is watched,
// and when the client is gone both connections are closed.
//
// Gone means both directions: a client that only shut its write side (a
// half-close; the docker CLI does so after a request without stdin, as
// in docker wait) still reads its answer. On a Unix socket the peer's
// close shows as POLLHUP, a half-close as POLLRDHUP alone.
//
// The watch starts only once a request has been with the daemon for
// watchAfter: most answers come sooner, and cost no goroutine.
const watchAfter = 50 * time.Millisecond

// watch starts watching the client for the request now with the daemon.
func (cc *clientConn) watch() {
	cc.watched = true
	if cc.watchT == nil {
		cc.watchDone = make(chan struct{}, 1)
		cc.watchT = time.AfterFunc(watchAfter, cc.watchClient)
		return
	}
	cc.watchT.Reset(watchAfter)
}

// unwatch stops the watch, if any; it returns once watchClient is done,
// and leaves the client's socket without a read deadline.
func (cc *clientConn) unwatch() {
	if !cc.watched {
		return
	}
	cc.watched = false
	if cc.watchT.Stop() {
		return // it never started
	}
	cc.c.SetReadDeadline(aLongTimeAgo) // ends watchClient's wait
	<-cc.watchDone
	cc.c.SetReadDeadline(time.Time{})
}

var aLongTimeAgo = time.Unix(1, 0)

// watchClient waits until the client is gone, and then closes both
// connections; unwatch ends it early.
func (cc *clientConn) watchClient() {
	defer func() { cc.watchDone <- struct{}{} }()
	if err := cc.crc.Read(func(fd uintptr) bool { return hungUp(fd) }); err != nil {
		return
	}
	cc.p.Log.Debug("client gone before the answer; daemon connection closed", "volume", cc.p.Volume)
	cc.close()
}

// hungUp reports whether the peer of a socket is gone: closed, not just
// shut for writing. The poll never blocks, so it is a raw system call.
func hungUp(fd uintptr) bool {
	pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}
	var zero unix.Timespec
	n, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	return errno == 0 && n > 0 && pfd.Revents&(unix.POLLHUP|unix.POLLERR) != 0
}
