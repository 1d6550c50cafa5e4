package bench

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// dockerTimeout bounds each request to the real daemon.
const dockerTimeout = 5 * time.Second

// dockerWait is how long the bench waits for the daemon to answer before
// a /_ping figure: someone else may be restarting it. (A variable for
// tests.)
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
// clients clients on every peer of h.docker. The daemon is shared: when
// it does not answer before, stops answering, or restarts during the
// step, the round's samples of the step are left out, with a note, and
// the run goes on.
func (h *harness) dockerStep(ctx context.Context, r, clients int) error {
	key := report.KeyDockerPing(clients)
	sock := h.cfg.DockerSocket
	skip := func(format string, args ...any) {
		h.leaveOut(r, key)
		why := fmt.Sprintf(format, args...)
		h.res.Note("dockerd /_ping, %d client%s: round %d left out: %s", clients, plural(clients), r+1, why)
		h.logf("round %d/%d  %-28s  left out: %s", r+1, h.cfg.Rounds, key, why)
	}
	before, err := dockerAnswers(ctx, sock, dockerWait)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		skip("the daemon on %s does not answer (%v)", sock, err)
		return nil
	}
	peers := h.docker
	if err := h.freshDockerIdmap(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		peers = slices.DeleteFunc(slices.Clone(peers), func(p *peer) bool { return p.name == report.Idmap })
		h.leaveOut(r, key+" "+report.Idmap)
		h.skipIdmap(fmt.Sprintf("round %d of %s", r+1, key), "%v", err)
	}
	type sample struct {
		peer string
		res  pingResult
	}
	var got []sample
	for _, p := range rotate(peers, r) {
		res, err := pingRateWithin(ctx, p.addr, clients, h.cfg.PingDuration, dockerTimeout)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		got = append(got, sample{p.name, res})
		if err := h.settle(ctx, p); err != nil {
			return err
		}
	}
	after, err := dockerAnswers(ctx, sock, 0)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		skip("the daemon on %s stopped answering during it (%v)", sock, err)
		return nil
	case after != before:
		skip("the daemon restarted during it (%s was made anew)", sock)
		return nil
	}
	for _, s := range got {
		h.res.Add(key, s.peer, s.res.rate)
		h.res.AddFailed(key, s.peer, s.res.failed, s.res.ok+s.res.failed)
	}
	return nil
}

// leaveOut marks round r of what (a row key, or a row key, a space and a
// peer) as left out, so that its progress line shows no earlier figures.
func (h *harness) leaveOut(r int, what string) {
	if h.leftOut == nil {
		h.leftOut = map[string]int{}
	}
	h.leftOut[what] = r + 1
}

// freshDockerIdmap re-makes the idmap mount of the daemon's socket when
// the daemon has made a new socket since (it restarted): a mount of the
// old one is dead.
func (h *harness) freshDockerIdmap(ctx context.Context) error {
	m := h.dkIdmap
	if m == nil {
		return nil
	}
	stale, err := m.stale()
	if err != nil || !stale {
		return err
	}
	h.logf("idmap: %s was made anew (the daemon restarted): mounting it again", m.src)
	if err := m.remount(h.userns); err != nil {
		return err
	}
	if err := m.check(ctx); err != nil {
		return err
	}
	h.res.Note("idmap: %s was made anew during the run (the daemon restarted); the bench mounted the new one", m.src)
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
