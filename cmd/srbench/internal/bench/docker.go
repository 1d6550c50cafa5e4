package bench

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// dockerTimeout bounds each request to the real daemon.
const dockerTimeout = 5 * time.Second

// psPath is the request of docker ps -a.
const psPath = "/containers/json?all=1"

// dockerWait is how long the bench waits for the daemon to answer before
// a /_ping figure: someone may be restarting it. (A variable for tests.)
var dockerWait = 10 * time.Second

// sockID is the identity of a socket: a daemon that restarts makes a new
// one. The inode number alone is not enough: the filesystem may give the
// new socket the number of the old one, just freed; its change time
// differs.
type sockID struct {
	dev, ino uint64
	ctime    syscall.Timespec
}

func statID(path string) (sockID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return sockID{}, err
	}
	return sockID{uint64(st.Dev), st.Ino, st.Ctim}, nil
}

// dockerAnswers waits up to wait for a ping of the daemon on sock to be
// answered, and returns the identity of its socket.
func dockerAnswers(ctx context.Context, sock string, wait time.Duration) (sockID, error) {
	deadline := time.Now().Add(wait)
	for {
		id, err := statID(sock)
		if err == nil {
			err = pingWithin(ctx, sock, dockerTimeout)
		}
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return id, ctxErr(ctx, err)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return sockID{}, err
		}
	}
}

// dockerStep measures the new-connection /_ping of the real daemon with
// clients clients on every peer of h.docker, each right beside direct.
func (h *harness) dockerStep(ctx context.Context, r, clients int) error {
	what := fmt.Sprintf("dockerd /_ping, %d client%s", clients, plural(clients))
	key := report.KeyDockerPing(clients)
	return h.dockerPairs(ctx, r, key, what, h.pingStep(key, clients, dockerTimeout))
}

// dockerGetStep measures GET path of the real daemon, a request per new
// connection, with 1 client on every peer of h.docker, each right beside
// direct: what a docker ps or inspect costs through each.
func (h *harness) dockerGetStep(ctx context.Context, r int, key, path string) error {
	m := func(ctx context.Context, p *peer) ([]value, error) {
		res, err := getRateWithin(ctx, p.addr, path, 1, h.cfg.PingDuration, dockerTimeout)
		return []value{{key: key, v: res.rate, failed: res.failed, tried: res.ok + res.failed}}, err
	}
	return h.dockerPairs(ctx, r, key, "dockerd GET "+path, m)
}

// dockerPairs measures m on every peer of h.docker, each right beside
// direct, into the row key (what, in notes). When the daemon does not
// answer before, stops answering, or restarts during the step, the
// round's samples of the step are left out, with a note, and the run goes
// on.
func (h *harness) dockerPairs(ctx context.Context, r int, key, what string, m measure) error {
	sock := h.docker[0].addr
	skip := func(format string, args ...any) {
		h.leaveOut(r, key)
		why := fmt.Sprintf(format, args...)
		h.res.Note("%s: round %d left out: %s", what, r+1, why)
		h.logf("round %d/%d  %-22s  left out: %s", r+1, h.cfg.Rounds, key, why)
	}
	before, err := dockerAnswers(ctx, sock, dockerWait)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		skip("the daemon on %s does not answer (%v)", sock, err)
		return nil
	}
	keep := func() (bool, error) {
		after, err := dockerAnswers(ctx, sock, 0)
		switch {
		case ctx.Err() != nil:
			return false, ctx.Err()
		case err != nil:
			skip("the daemon on %s stopped answering during it (%v)", sock, err)
			return false, nil
		case after != before:
			skip("the daemon restarted during it (%s was made anew)", sock)
			return false, nil
		}
		return true, nil
	}
	return h.pairs(ctx, r, h.docker, m, keep)
}

// leaveOut marks round r of what (a row key, or a row key, a space and a
// peer) as left out, so that its progress line shows no earlier figures.
func (h *harness) leaveOut(r int, what string) {
	if h.leftOut == nil {
		h.leftOut = map[string]int{}
	}
	h.leftOut[what] = r + 1
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
