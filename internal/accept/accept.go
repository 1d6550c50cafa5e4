// Package accept serves the connections of a listener, each on its own
// goroutine, with as few thread wakeups as it can: a connection that comes
// in alone is served by the goroutine that accepted it (see Accept). The
// relay and the policy proxy both accept through it.
package accept

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Serve runs handle for the connections accepted on ln, concurrently,
// until ctx ends or ln is closed; it returns when every handle has
// returned. Accept errors (EMFILE and the like) back off rather than spin.
//
// One goroutine at a time accepts: the leader. When connections come in
// one at a time (none being served and none waiting behind, for
// aloneStreak connections in a row), the leader serves them itself.
// Handing a connection to another goroutine wakes a second thread for
// it, and for a lone client that opens a connection per request, as the
// docker CLI does, that thread's wakeup and sleep are a large share of
// the proxy's CPU per request (docs/performance.md has the figures).
// If a connection keeps the leader for more than takeover, another
// goroutine becomes the leader; connections that come in while others are
// served or waiting go to workers at once. So no connection waits behind
// another's for more than takeover.
//
// A goroutine whose connection is done waits up to workerIdle for the
// next one: on a busy socket, connections land on goroutines whose stacks
// have already grown to what a connection needs, rather than each
// starting small and growing (copying its stack) on the way.
func Serve(ctx context.Context, ln net.Listener, log *slog.Logger, handle func(net.Conn)) error {
	a := &acceptor{
		ctx: ctx, ln: ln, log: log, handle: handle,
		idle:     make(chan net.Conn),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	if sc, ok := ln.(syscall.Conn); ok {
		a.rc, _ = sc.SyscallConn()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	a.wg.Go(a.lead)
	<-a.finished
	close(a.done) // idle workers leave at once
	a.wg.Wait()
	return nil
}

const (
	// workerIdle is how long a connection's goroutine waits for another.
	workerIdle = time.Second
	// takeover is how long the leader serves a connection before another
	// goroutine accepts in its place: the longest a connection that comes
	// in meanwhile waits. A timer armed for less wakes the runtime's
	// monitor thread more often than a lone client's connections come.
	takeover = 5 * time.Millisecond
	// aloneStreak is how many connections in a row must come in alone
	// before the leader serves them itself: clients that come together
	// now and then are served side by side rather than in turn.
	aloneStreak = 3
)

type acceptor struct {
	ctx    context.Context
	ln     net.Listener
	rc     syscall.RawConn // ln's socket, to see whether connections wait; nil: every connection goes to a worker
	log    *slog.Logger
	handle func(net.Conn)

	busy     atomic.Int64 // connections served by workers now
	wg       sync.WaitGroup
	idle     chan net.Conn // unbuffered: a send lands only in a waiting worker
	done     chan struct{} // closed once nothing accepts any more
	finished chan struct{} // closed by the leader that saw the listener end
}

// lead accepts until the listener ends, or until a connection it serves
// itself outlasts takeover and another goroutine leads.
func (a *acceptor) lead() {
	handedOver := make(chan struct{}, 1)
	t := time.AfterFunc(time.Hour, func() {
		a.wg.Go(a.lead) // while this leader is still counted: see below
		handedOver <- struct{}{}
	})
	t.Stop()
	var backoff time.Duration
	alone := 0 // connections in a row that came in alone
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if a.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				close(a.finished)
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-a.ctx.Done():
				close(a.finished)
				return
			}
		}
		backoff = 0
		if a.rc == nil || a.busy.Load() > 0 || pending(a.rc) {
			alone = 0
			a.dispatch(c)
			continue
		}
		if alone++; alone < aloneStreak {
			a.dispatch(c)
			continue
		}
		t.Reset(takeover)
		a.handle(c)
		if !t.Stop() {
			// Another goroutine leads now. Wait until it is counted in
			// wg, so that Accept cannot see the count reach zero between
			// the two; then serve as a worker.
			<-handedOver
			a.work(nil)
			return
		}
	}
}

// dispatch gives c to a waiting worker, or to a new one.
func (a *acceptor) dispatch(c net.Conn) {
	select {
	case a.idle <- c:
	default:
		a.wg.Go(func() { a.work(c) })
	}
}

// work serves c (if any), then the connections dispatched to it, until it
// has waited workerIdle for one.
func (a *acceptor) work(c net.Conn) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		if c != nil {
			a.busy.Add(1)
			a.handle(c)
			a.busy.Add(-1)
		}
		t.Reset(workerIdle)
		select {
		case c = <-a.idle:
		case <-t.C:
			return
		case <-a.done:
			return
		}
	}
}

// pending reports whether connections wait to be accepted on rc's socket
// (or whether that cannot be told). The poll never blocks, so it is made
// as a raw system call, without a round trip through the scheduler.
func pending(rc syscall.RawConn) bool {
	ready := true
	rc.Control(func(fd uintptr) {
		pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		var zero unix.Timespec
		n, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		ready = errno != 0 || n != 0
	})
	return ready
}
