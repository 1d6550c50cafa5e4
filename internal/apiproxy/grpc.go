package apiproxy

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/grpcstream"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// grpcStream follows BuildKit's API after POST /grpc switched to HTTP/2:
// each gRPC call is decided by the policy (cc.calls) and written to the
// audit log. BuildKit's session (POST /session) is not followed: on it
// the daemon calls the client, and the client only answers.
func (cc *clientConn) grpcStream(x *exchange, up *net.UnixConn, ubr *bufio.Reader) {
	cc.unwatch()
	p, pol := cc.p, cc.calls
	cbuf := takeBuffered(cc.br)
	ubuf := takeBuffered(ubr)
	res := grpcstream.Serve(grpcstream.Config{
		NeedMessage: pol.CallNeedsMessage,
		Decide: func(method string, msg []byte) grpcstream.Verdict {
			d := pol.DecideCall(policy.Call{Method: method, Message: msg})
			if d.Allow {
				return grpcstream.Verdict{Allow: true}
			}
			return grpcstream.Verdict{Code: grpcCode(d.Status), Rule: d.Rule,
				Message: "sockrelay: " + d.Rule + ": " + d.Reason}
		},
		Record: func(method string, v grpcstream.Verdict) {
			if !v.Allow {
				p.Stats.Denied.Add(1)
			}
			if p.Observer != nil {
				p.Observer.Call(v.Allow, v.Rule)
			}
			p.Audit.Call(audit.CallEntry{Time: time.Now(), Volume: p.Volume, Policy: pol.Name(),
				Method: method, Allow: v.Allow, Rule: v.Rule, Peer: cc.auditPeer(0)})
		},
		MaxMessage: policy.MaxMessage,
		// What waits for its decision shares the budgets of the
		// bodies the policy reads.
		Take: func(n int64) bool { return takeAll(n, budgetWait, &p.bodies, &p.shared.bodies) },
		Give: func(n int64) { giveAll(n, &p.bodies, &p.shared.bodies) },
	}, cc.c, up, cbuf, ubuf)
	x.in += res.In
	x.out += res.Out
	if res.Err != nil {
		p.Log.Debug("BuildKit API stream ended", "volume", p.Volume, "err", res.Err)
	}
}

// takeBuffered takes what br holds, as a copy.
func takeBuffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	b = bytes.Clone(b)
	br.Discard(n)
	return b
}

// grpcCode is the gRPC status code of a refusal's HTTP status.
func grpcCode(status int) uint32 {
	switch status {
	case http.StatusBadRequest:
		return grpcstream.CodeInvalidArgument
	case http.StatusRequestEntityTooLarge:
		return grpcstream.CodeResourceExhausted
	}
	return grpcstream.CodePermissionDenied
}
