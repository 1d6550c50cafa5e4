package apiproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/rawio"
)

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
