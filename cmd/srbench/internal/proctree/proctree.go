// Package proctree runs child processes, each in a process group of its
// own, so that one stops together with whatever it forked (socat forks a
// process per connection), and reads the CPU time and memory of such a
// tree from /proc.
package proctree

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// pollInterval is how often a wait looks at what it waits for.
const pollInterval = 20 * time.Millisecond

// Process is a child in its own process group.
type Process struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error // the result of Wait, once done is closed
	once sync.Once
}

// Set starts processes and stops every one of them at the end.
type Set struct {
	dir string // where the logs go

	mu    sync.Mutex
	n     int
	procs []*Process
}

// NewSet makes a set that keeps each process's output in a file in dir.
func NewSet(dir string) *Set {
	return &Set{dir: dir}
}

// Start starts argv with the environment env (only env) and its output in
// a log file; name names it in errors.
func (s *Set) Start(name string, argv, env []string) (*Process, error) {
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
	// Setpgid: Ctrl-C at the terminal reaches the parent only, and Stop
	// signals the whole group. Pdeathsig: a parent killed outright does
	// not leave its children behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// StopAll stops every process still running.
func (s *Set) StopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

func (p *Process) pid() int { return p.cmd.Process.Pid }

// Exited says why the process is gone, with the end of its output, or
// nil while it runs.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.tail())
	default:
		return nil
	}
}

// tail is the end of the process's output, for error messages.
func (p *Process) tail() string {
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

// Stop ends the process and what it forked: its children first, so that
// it reaps them itself (orphans would wait for init), then the process
// with SIGTERM, and after a grace period its whole group with SIGKILL.
// It does nothing to a process that has already exited: once reaped, its
// pid may belong to someone else. Safe to call more than once.
func (p *Process) Stop() {
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

// WaitReady waits until the Unix socket addr accepts a connection, the
// process exits, or the timeout passes.
func (p *Process) WaitReady(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		if err := p.Exited(); err != nil {
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

// CPU is the CPU seconds (user and system) of the process, of the
// children it has reaped, and of its children still running.
func (p *Process) CPU() (float64, error) { return treeCPU(p.pid()) }

// CPU is the same of any process pid, one the bench did not start (the
// installed plugin's).
func CPU(pid int) (float64, error) { return treeCPU(pid) }

// MemKiB is the memory of the process and its children, and how many
// children there are; see memKiB for what is counted.
func (p *Process) MemKiB() (kib int64, children int, err error) { return treeMemKiB(p.pid()) }

// WaitNoChildren waits until the process has no children left, so that
// their CPU time has been reaped into its own.
func (p *Process) WaitNoChildren(ctx context.Context, timeout time.Duration) error {
	return waitNoChildren(ctx, p.pid(), timeout)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
