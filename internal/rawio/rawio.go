// Package rawio reads and writes non-blocking sockets and pipes by raw
// system calls, waiting in Go's netpoller when a call would block
// (RawConn.Read and Write). Such a call never blocks, and unlike
// syscall.Read it does not enter the scheduler's system-call state, whose
// entry wakes the runtime's monitor thread (sysmon) whenever it has gone to
// sleep; and it sleeps whenever the process is idle for a moment, as a
// proxy is between a request and its answer. So the policy proxy reads
// and writes the heads of requests and answers (with the small bodies
// that come with them), and the audit log writes a pipe, through this
// package; docs/performance.md has the figures. Bodies that are not
// inspected go by splice(2) (package splice) instead.
package rawio

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader reads from a non-blocking socket or pipe.
type Reader struct{ RC syscall.RawConn }

func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := r.RC.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// Write writes all of p to a non-blocking socket or pipe.
func Write(rc syscall.RawConn, p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
			switch e {
			case 0:
				done += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return done, err
	}
	if errno != 0 {
		return done, os.NewSyscallError("write", errno)
	}
	return done, nil
}

// Recv is recvfrom(2) with flags, as a raw system call: for
// MSG_PEEK|MSG_DONTWAIT looks, which never block.
func Recv(fd uintptr, b []byte, flags int) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags), 0, 0)
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}

// Writev writes all of bufs to a non-blocking socket, in one
// writev(2) when the socket takes it whole: a chunk's framing and its
// data go in one call.
func Writev(rc syscall.RawConn, bufs ...[]byte) error {
	var (
		left [4][]byte // what is still to write, empty buffers left out
		iov  [4]unix.Iovec
	)
	n := 0
	for _, b := range bufs {
		if len(b) > 0 {
			left[n] = b
			n++
		}
	}
	todo := left[:n]
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for len(todo) > 0 {
			for i, b := range todo {
				iov[i].Base = &b[0]
				iov[i].SetLen(len(b))
			}
			k, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(todo)))
			switch e {
			case 0:
				for k > 0 {
					m := min(int(k), len(todo[0]))
					todo[0] = todo[0][m:]
					k -= uintptr(m)
					if len(todo[0]) == 0 {
						todo = todo[1:]
					}
				}
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return os.NewSyscallError("writev", errno)
	}
	return nil
}
