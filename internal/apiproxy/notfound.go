package apiproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// daemonFor is what the policy asks about the objects of one request:
// the shared Resolver of a scoped volume, else a Lookup of its own.
func (p *Proxy) daemonFor() policy.Daemon {
	if p.Resolver != nil {
		return p.Resolver.Daemon(context.Background())
	}
	return daemon.Lookup{Client: daemon.Client{Socket: p.Upstream}, Ctx: context.Background()}
}

// daemonHeaders are the headers dockerd puts on every answer, besides
// Content-Type, Date and Content-Length (daemon/server: the version
// middleware, and the Server header).
var daemonHeaders = []string{"Api-Version", "Docker-Experimental", "Ostype", "Server"}

// refuseAsDaemon answers a refusal the way dockerd answers an error of
// its own (httputils.WriteJSON: the message encoded without HTML
// escaping, then a newline; net/http's header order): a scoped volume's
// 404 for an object outside its scope is dockerd's own for a missing
// object, so that the client cannot tell the two apart. The connection
// goes on as it would with dockerd, once what is left of the request's
// body is read; it reports whether the connection goes on.
func (cc *clientConn) refuseAsDaemon(x *exchange, req *http.Request, bodyRead bool, status int, rule, message string) bool {
	x.status, x.rule = status, rule
	cc.p.Stats.Denied.Add(1)
	var msg bytes.Buffer
	enc := json.NewEncoder(&msg)
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		Message string `json:"message"`
	}{message})
	h := http.Header{"Content-Type": {"application/json"}}
	if cc.p.Resolver != nil {
		if dh := cc.p.Resolver.Header(); dh != nil {
			for _, k := range daemonHeaders {
				if v := dh.Values(k); len(v) > 0 {
					h[k] = slices.Clone(v)
				}
			}
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	h.Write(&b)
	fmt.Fprintf(&b, "Date: %s\r\nContent-Length: %d\r\n\r\n", time.Now().UTC().Format(http.TimeFormat), msg.Len())
	keep := bodyRead || !hasBody(req) || cc.drain(req)
	if req.Method != http.MethodHead {
		b.Write(msg.Bytes())
		x.out = int64(msg.Len())
	}
	if !keep || req.Close {
		keep = false
	}
	if _, err := cc.write(b.Bytes()); err != nil {
		return false
	}
	return keep
}

// drain reads what is left of a request's body, within the linger
// bounds; it reports whether the body was read whole.
func (cc *clientConn) drain(req *http.Request) bool {
	cc.c.SetReadDeadline(time.Now().Add(lingerTime))
	defer cc.c.SetReadDeadline(time.Time{})
	n, err := io.Copy(io.Discard, io.LimitReader(req.Body, lingerBytes+1))
	return err == nil && n <= lingerBytes && !errors.Is(err, io.ErrUnexpectedEOF)
}
