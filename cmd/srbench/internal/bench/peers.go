package bench

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/proctree"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// peerOrder is the order of the columns (report.Report.Peers).
var peerOrder = []string{report.Direct, report.Sockrelay, report.Socat, report.Policy, report.Idmap}

// peer is one way of reaching an upstream socket: the socket itself, or a
// relay process listening on addr.
type peer struct {
	name string
	addr string
	proc *proctree.Process // nil for direct
}

// relayKind is a relay program the bench can start, any number of times.
type relayKind struct {
	name string
	argv func(listen, target string) []string
}

// sockrelayKind runs `sockrelay serve`. The socket belongs to the bench's
// own user, so the bench needs no root for it.
func sockrelayKind(bin string) relayKind {
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	return relayKind{name: report.Sockrelay, argv: func(listen, target string) []string {
		return []string{bin, "serve", "--listen", listen, "--target", target, "--uid", uid, "--gid", gid, "--perm", "0600"}
	}}
}

// policyKind runs `sockrelay serve --policy full`: every request parsed,
// decided and written to the audit log (its stdout, kept in its log file
// like every process's output, because writing it is part of its cost).
func policyKind(bin string) relayKind {
	k := sockrelayKind(bin)
	return relayKind{name: report.Policy, argv: func(listen, target string) []string {
		return append(k.argv(listen, target), "--policy", "full")
	}}
}

// socatKind runs the socat recipe that docs/performance.md compares
// against: a process forked per connection.
func socatKind(bin string) relayKind {
	return relayKind{name: report.Socat, argv: func(listen, target string) []string {
		return []string{bin, "UNIX-LISTEN:" + listen + ",fork,mode=0666", "UNIX-CLIENT:" + target}
	}}
}

// startRelay starts a relay of kind k on listen, relaying to target, and
// waits until it accepts connections.
func startRelay(ctx context.Context, procs *proctree.Set, k relayKind, listen, target string) (*peer, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=warn"}
	p, err := procs.Start(k.name, k.argv(listen, target), env)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, listen, 10*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return &peer{name: k.name, addr: listen, proc: p}, nil
}
