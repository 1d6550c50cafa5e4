package apiproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/rawio"
)

// clientConn is one client connection and the upstream connection that
// mirrors it (taken from the pool or dialled at its first allowed
// request).
type clientConn struct {
	p   *Proxy
	c   *net.UnixConn
	crc syscall.RawConn // c's, for raw reads and writes (rawio.go)
	cr  rawio.Reader
	br  *bufio.Reader
	// creds are the client's, from SO_PEERCRED (credsOK: it said
	// something); who places it in a container, when the proxy does
	// (Proxy.Identify). auditPeer tells them in the audit lines.
	creds   peer.Creds
	credsOK bool
	who     *peer.Pending
	placed  atomic.Pointer[audit.Peer] // once who is final
	waited  atomic.Bool                // a line waited for who already
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
	// calls is the policy that decides the gRPC calls of the stream
	// that follows the switch of protocols, when the policy follows
	// them (policy.Decision.Calls); nil: a raw stream.
	calls *policy.Policy

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
	uses               []string // policy.Decision.Uses
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
	if p.Audit.Refusing() {
		cc.refuse(x, http.StatusServiceUnavailable, ruleAuditFull, auditFull)
		cc.linger(req)
		return false
	}
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
		Daemon: p.daemonFor()})
	x.path, x.rule, x.uses = dec.Path, dec.Rule, dec.Uses
	if !dec.Allow && dec.Message != "" {
		return cc.refuseAsDaemon(x, req, body != nil, dec.Status, dec.Rule, dec.Message)
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
	cc.calls = nil
	if dec.Calls {
		cc.calls = pol
	}
	cc.watch()
	defer cc.unwatch()
	return cc.forwardResponse(x, req)
}

// Rules of the refusals that are the transport's, not the policy's.
const (
	ruleBadRequest = "bad-request" // a request the proxy cannot frame exactly as the daemon would
	ruleUpstream   = "upstream"    // the daemon cannot be reached
	ruleAuditFull  = "audit-unavailable"
)

// auditFull is the reason of a request refused because the audit file
// cannot take its line (audit.FileConfig.Refuse).
const auditFull = "the audit log file cannot be written (disk full, failing or too slow); requests are refused until it can (AUDIT_ON_FULL=refuse)"

const noDaemon = "the Docker daemon did not answer; try again"

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
	p.Stats.In.Add(uint64(x.in))
	p.Stats.Out.Add(uint64(x.out))
	now := time.Now()
	if p.Observer != nil {
		p.Observer.Request(x.allow, x.rule, x.in, x.out, now.Sub(x.start))
	}
	p.Audit.Request(audit.Entry{
		Time: now, Volume: p.Volume, Policy: x.policy, Method: x.method, Path: x.path,
		Allow: x.allow, Rule: x.rule, Status: x.status, In: x.in, Out: x.out,
		Duration: now.Sub(x.start), Uses: x.uses, Peer: cc.auditPeer(identWait),
	})
	if p.Learned != nil && x.allow {
		p.Learned.Add(x.method, x.path, x.uses)
	}
}

// identify reads the client's credentials and, when the proxy places
// callers, starts placing it: its cgroup is read now, once for the
// connection, while the process that connected is surely there.
func (cc *clientConn) identify() {
	cc.creds, cc.credsOK = peer.Of(cc.crc)
	if cc.credsOK && cc.p.Identify != nil {
		cc.who = cc.p.Identify.Identify(&cc.creds, cc.p.Upstream)
	}
	cc.creds.Close()
}

// identWait is how long the first audit line of a connection waits for
// the daemon to say which container the client runs in; the line is
// written after the answer went out, so only the connection's next
// request may wait. After that, lines tell what is known.
const identWait = 250 * time.Millisecond

// auditPeer is the client as its audit lines tell it: nil when
// SO_PEERCRED said nothing.
func (cc *clientConn) auditPeer(wait time.Duration) *audit.Peer {
	if ap := cc.placed.Load(); ap != nil {
		return ap
	}
	if !cc.credsOK {
		return nil
	}
	ap := &audit.Peer{PID: cc.creds.PID, UID: cc.creds.UID}
	if cc.who == nil {
		return ap
	}
	if cc.waited.Swap(true) {
		wait = 0
	}
	id, final := cc.who.Get(wait)
	ap.Caller, ap.ContainerID, ap.ContainerName, ap.Image, ap.ImageID = id.Caller, id.ID, id.Name, id.Image, id.ImageID
	if final {
		cc.placed.Store(ap)
	}
	return ap
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
