package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Peer names: the columns of the report.
const (
	Direct    = "direct"
	Sockrelay = "sockrelay"
	Socat     = "socat"
	// Policy is `sockrelay serve --policy full`: the HTTP-aware policy
	// proxy of issue 5, set to allow everything, audit log included.
	Policy = "policy"
	// Idmap is an idmapped bind mount of the upstream socket (issue 4):
	// no process in the data path.
	Idmap = "idmap"
)

// peerOrder is the order of the columns (Report.Peers).
var peerOrder = []string{Direct, Sockrelay, Socat, Policy, Idmap}

// peer is one way of reaching an upstream socket: the socket itself, or a
// relay process listening on addr.
type peer struct {
	name string
	addr string
	proc *process // nil for direct
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
	return relayKind{name: Sockrelay, argv: func(listen, target string) []string {
		return []string{bin, "serve", "--listen", listen, "--target", target, "--uid", uid, "--gid", gid, "--perm", "0600"}
	}}
}

// policyKind runs `sockrelay serve --policy full`: every request parsed,
// decided and written to the audit log (its stdout, kept in its log file
// like every process's output, because writing it is part of its cost).
func policyKind(bin string) relayKind {
	k := sockrelayKind(bin)
	return relayKind{name: Policy, argv: func(listen, target string) []string {
		return append(k.argv(listen, target), "--policy", "full")
	}}
}

// socatKind runs the socat recipe the README compares against: a process
// forked per connection.
func socatKind(bin string) relayKind {
	return relayKind{name: Socat, argv: func(listen, target string) []string {
		return []string{bin, "UNIX-LISTEN:" + listen + ",fork,mode=0666", "UNIX-CLIENT:" + target}
	}}
}

// process is a child in its own process group, so that it and whatever it
// forks (socat's per-connection children) stop together.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error // the result of Wait, once done is closed
	once sync.Once
}

// procSet starts processes and stops every one of them at the end.
type procSet struct {
	dir string // where logs and sockets go

	mu    sync.Mutex
	n     int
	procs []*process
}

func (s *procSet) start(name string, argv, env []string) (*process, error) {
	s.mu.Lock()
	s.n++
	logPath := filepath.Join(s.dir, fmt.Sprintf("%s-%d.log", name, s.n))
	s.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child holds its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// Setpgid: Ctrl-C at the terminal reaches the bench only, and stop
	// signals the whole group. Pdeathsig: a bench killed outright does
	// not leave its relays behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// stopAll stops every process still running.
func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// relay starts a relay of kind k on listen, relaying to target, and waits
// until it accepts connections.
func (s *procSet) relay(ctx context.Context, k relayKind, listen, target string) (*peer, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=warn"}
	p, err := s.start(k.name, k.argv(listen, target), env)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, listen, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return &peer{name: k.name, addr: listen, proc: p}, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited says why the process is gone, or nil while it runs.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.tail())
	default:
		return nil
	}
}

// tail is the end of the process's output, for error messages.
func (p *process) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return "(no output)"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}

// stop ends the process and what it forked: its children first, so that
// it reaps them itself (orphans would wait for init), then the process
// with SIGTERM, and after a grace period its whole group with SIGKILL.
// It does nothing to a process that has already exited: once reaped, its
// pid may belong to someone else. Safe to call more than once.
func (p *process) stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		pid := p.pid()
		if kids, err := childPIDs(pid); err == nil && len(kids) > 0 {
			for _, k := range kids {
				syscall.Kill(k, syscall.SIGTERM)
			}
			waitNoChildren(context.Background(), pid, 2*time.Second)
		}
		p.cmd.Process.Signal(syscall.SIGTERM) // by pidfd: never a stranger
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-pid, syscall.SIGKILL) // still running, so the group is ours
			<-p.done
		}
	})
}

// waitReady waits until addr accepts a connection, the process exits, or
// the timeout passes.
func (p *process) waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		if err := p.exited(); err != nil {
			return err
		}
		c, err := d.DialContext(ctx, "unix", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("%s does not answer on %s: %w", p.name, addr, err)
		}
	}
}
