package splice

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The zero-copy path: splice(2) moves page references from the source
// socket into a pipe and from the pipe into the destination socket, with
// the Go netpoller doing the waiting (RawConn.Read/Write and
// SPLICE_F_NONBLOCK). AF_UNIX supports splice both ways on current kernels.
//
// The splices are raw system calls: with SPLICE_F_NONBLOCK and a
// non-blocking pipe they never block, and a raw call does not enter the
// scheduler's system-call state, whose entry wakes the runtime's monitor
// thread whenever it sleeps, as it does whenever a relay waits a moment
// between a request and its answer (package rawio says more).

const (
	// pipeSize is the pipe's capacity (F_SETPIPE_SZ); the kernel caps it
	// at /proc/sys/fs/pipe-max-size. A large pipe means fewer wakeups.
	pipeSize = 1 << 20
	// maxPooledPipes bounds the idle pipes kept for reuse; more are closed.
	maxPooledPipes = 64
	spliceFlags    = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
)

type pipe struct {
	r, w int
	size int
}

// pipePool keeps idle, empty pipes. A connection holds a pipe only while
// data flows; an idle connection holds none.
var pipePool struct {
	sync.Mutex
	free []*pipe
}

func getPipe() (*pipe, error) {
	pipePool.Lock()
	if n := len(pipePool.free); n > 0 {
		p := pipePool.free[n-1]
		pipePool.free = pipePool.free[:n-1]
		pipePool.Unlock()
		return p, nil
	}
	pipePool.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	p := &pipe{r: fds[0], w: fds[1], size: 64 << 10}
	if n, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, pipeSize); err == nil {
		p.size = n
	}
	return p, nil
}

// putPipe returns an empty pipe to the pool.
func putPipe(p *pipe) {
	pipePool.Lock()
	if len(pipePool.free) < maxPooledPipes {
		pipePool.free = append(pipePool.free, p)
		pipePool.Unlock()
		return
	}
	pipePool.Unlock()
	p.close()
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// rawSplice moves up to n bytes from in to out, never blocking: a raw
// splice(2) with SPLICE_F_NONBLOCK, retried on EINTR. Its error is nil
// or an Errno (EAGAIN when nothing could move).
func rawSplice(in, out, n int) (int64, error) {
	for {
		k, _, errno := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceFlags)
		switch errno {
		case 0:
			return int64(k), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// errNoSplice means the connections cannot splice; copy with a buffer.
var errNoSplice = errors.New("splice not supported")

// spliceCopy copies src to dst through a pipe until src reaches EOF
// (returning nil) or an error; with limit >= 0 it copies exactly limit
// bytes, and an earlier EOF is io.ErrUnexpectedEOF. A pipe that still
// holds data after an error is closed, never pooled.
//
// bulk, when set, is called once when the copy has moved bulkAfter bytes.
func spliceCopy(dst, src *net.UnixConn, limit int64, bulk func()) (written int64, err error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, errNoSplice
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, errNoSplice
	}
	var p *pipe
	defer func() {
		if p != nil {
			p.close() // it may hold bytes that were not delivered
		}
	}()
	for limit < 0 || written < limit {
		// Fill the pipe from src. The pipe is taken when the callback runs
		// and given back when src has nothing to read, before waiting.
		var n int64
		var serr error
		rerr := srcRC.Read(func(fd uintptr) bool {
			if p == nil {
				if p, serr = getPipe(); serr != nil {
					return true
				}
			}
			max := p.size
			if limit >= 0 {
				max = int(min(int64(max), limit-written))
			}
			n, serr = rawSplice(int(fd), p.w, max)
			if serr == unix.EAGAIN {
				putPipe(p) // empty: everything read so far was drained
				p = nil
				return false
			}
			return true
		})
		if rerr != nil {
			return written, rerr
		}
		if serr != nil {
			if errors.Is(serr, unix.EINVAL) && written == 0 {
				return 0, errNoSplice
			}
			return written, &net.OpError{Op: "splice", Net: "unix", Err: serr}
		}
		if n == 0 {
			if p != nil {
				putPipe(p)
				p = nil
			}
			if limit >= 0 {
				return written, io.ErrUnexpectedEOF
			}
			return written, nil // EOF
		}
		// Drain the pipe into dst.
		for n > 0 {
			var m int64
			var werr error
			err := dstRC.Write(func(fd uintptr) bool {
				m, werr = rawSplice(p.r, int(fd), int(n))
				return werr != unix.EAGAIN
			})
			if err != nil {
				return written, err
			}
			if werr != nil {
				return written, &net.OpError{Op: "splice", Net: "unix", Err: werr}
			}
			if m == 0 {
				return written, io.ErrShortWrite
			}
			n -= m
			if written < bulkAfter && written+m >= bulkAfter && bulk != nil {
				bulk()
			}
			written += m
		}
	}
	if p != nil {
		putPipe(p) // drained
		p = nil
	}
	return written, nil
}

// hungUp reports whether c's peer has closed the connection entirely, not
// just shut its write side: AF_UNIX then reports POLLHUP.
func hungUp(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	hup := false
	rc.Control(func(fd uintptr) {
		// It never blocks: a raw system call, as the splices.
		pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
		var zero unix.Timespec
		n, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		hup = errno == 0 && n > 0 && pfd.Revents&(unix.POLLHUP|unix.POLLERR) != 0
	})
	return hup
}

// SizeForBulk sizes c's buffers as the relay sizes its sockets', for a
// transfer of many megabytes.
func SizeForBulk(c *net.UnixConn) { setBuffers(c, sockBuf) }

// setBuffers sizes a socket's buffers for bulk transfers: fewer, larger
// wakeups. The kernel caps the size at net.core.wmem_max/rmem_max.
func setBuffers(c *net.UnixConn, size int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	})
}
