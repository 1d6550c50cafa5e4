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
var peerOrder = []string{report.Direct, report.PluginRelay, report.PluginPolicy, report.PluginPolicyScope, report.PluginIdmap,
	report.Serve, report.ServePolicy, report.Socat, report.SocketProxy}

// peer is one way of reaching an upstream socket: the socket itself, a
// relay process the bench started listening on addr, or a volume of the
// installed plugin.
type peer struct {
	name string
	addr string
	proc *proctree.Process // a relay the bench started; nil otherwise
	pid  int               // the installed plugin's process, for its CPU time; 0 otherwise
}

// cpu is the CPU seconds of the process in the data path, and whether
// there is one.
func (p *peer) cpu() (float64, bool, error) {
	switch {
	case p.proc != nil:
		v, err := p.proc.CPU()
		return v, true, err
	case p.pid != 0:
		v, err := proctree.CPU(p.pid)
		return v, true, err
	}
	return 0, false, nil
}

// relayKind is a relay program the bench can start, any number of times.
type relayKind struct {
	name string
	argv func(listen, target string) []string
}

// serveKind runs `sockrelay serve`. The socket belongs to the bench's
// own user, so the bench needs no root for it.
func serveKind(bin string) relayKind {
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	return relayKind{name: report.Serve, argv: func(listen, target string) []string {
		return []string{bin, "serve", "--listen", listen, "--target", target, "--uid", uid, "--gid", gid, "--perm", "0600"}
	}}
}

// servePolicyKind runs `sockrelay serve --policy full`: every request
// parsed, decided and written to the audit log (its stdout, kept in its
// log file like every process's output, because writing it is part of
// its cost).
func servePolicyKind(bin string) relayKind {
	k := serveKind(bin)
	return relayKind{name: report.ServePolicy, argv: func(listen, target string) []string {
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

// socketProxyKind runs wollomatic/socket-proxy on a Unix socket, every
// method allowed on every path, logging errors only: the filtering proxy
// of another project, as close to policy=full as it goes.
func socketProxyKind(bin string) relayKind {
	return relayKind{name: report.SocketProxy, argv: func(listen, target string) []string {
		argv := []string{bin, "-proxysocketendpoint", listen, "-socketpath", target, "-loglevel", "ERROR"}
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			argv = append(argv, "-allow"+m, ".*")
		}
		return argv
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
