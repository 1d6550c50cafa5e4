package apiproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/sockrelay/sockrelay/internal/rawio"
	"github.com/sockrelay/sockrelay/internal/splice"
)

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
			// A raw stream from here on, both ways, or BuildKit's
			// API, call by call.
			cc.write(b.Bytes())
			if cc.calls != nil {
				cc.grpcStream(x, up, ubr)
				return false
			}
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
	in, out := splice.Pipe(cc.c, up)
	x.in += in
	x.out += out
}
