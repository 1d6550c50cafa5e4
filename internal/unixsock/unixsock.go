// Package unixsock listens on Unix sockets whose owner and mode are set
// before listen(2), so no client can ever connect to a socket with the
// wrong owner, and without touching the process umask.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DialTimeout bounds how long a connection to the daemon's socket may
// take to be answered.
const DialTimeout = 5 * time.Second

// ErrInUse means a live server already answers on the socket path.
var ErrInUse = errors.New("socket is in use by another server")

// Owner is the owner and permission bits a socket gets.
type Owner struct {
	UID, GID int
	Perm     os.FileMode
}

// Listener is a Unix listener on a socket file in a directory held open by
// fd. Close stops listening and removes the socket file, by the directory
// fd, never by a path a container could change.
type Listener struct {
	net.Listener
	dir  *os.File
	name string
	once sync.Once
	err  error
}

// Listen creates the socket name inside dir (an open directory) and
// listens on it. The socket is bound through /proc/self/fd, so the path is
// always short whatever the directory's length (sun_path is 108 bytes). A
// stale socket file with no server behind it is replaced; a live one is
// ErrInUse. The listen backlog is the kernel's somaxconn.
func Listen(dir *os.File, name string, o Owner) (*Listener, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("bad socket name %q", name)
	}
	d, err := DupDir(dir)
	if err != nil {
		return nil, err
	}
	dirfd := int(d.Fd())
	addr := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
	if err := removeStale(dirfd, addr, name); err != nil {
		d.Close()
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	ok, bound := false, false
	defer func() {
		if !ok {
			unix.Close(fd)
			if bound { // never remove a name this call did not create
				unix.Unlinkat(dirfd, name, 0)
			}
			d.Close()
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		return nil, fmt.Errorf("bind %s: %w", name, err)
	}
	bound = true
	// Between bind and listen the file exists but connect(2) is refused:
	// set owner and mode now. AT_SYMLINK_NOFOLLOW: never follow a link.
	if err := unix.Fchownat(dirfd, name, o.UID, o.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("chown %s: %w", name, err)
	}
	if err := fchmodSocket(dirfd, name, uint32(o.Perm.Perm())); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := unix.Listen(fd, Backlog()); err != nil {
		return nil, fmt.Errorf("listen %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	ln, err := net.FileListener(f)
	f.Close() // FileListener holds its own dup
	fd = -1
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", name, err)
	}
	ok = true
	return &Listener{Listener: ln, dir: d, name: name}, nil
}

// Close stops listening and removes the socket file.
// It is safe to call more than once.
func (l *Listener) Close() error {
	l.once.Do(func() {
		err := l.Listener.Close()
		if uerr := unix.Unlinkat(int(l.dir.Fd()), l.name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) && err == nil {
			err = fmt.Errorf("remove %s: %w", l.name, uerr)
		}
		l.dir.Close()
		l.err = err
	})
	return l.err
}

// fchmodSocket changes the mode of the entry without following a link:
// the entry is checked to be a socket through an O_PATH descriptor opened
// with O_NOFOLLOW, and that descriptor is what gets the mode.
func fchmodSocket(dirfd int, name string, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.New("not a socket")
	}
	// fchmod(2) refuses O_PATH descriptors; the magic link names this
	// very inode, not a path anyone can swap.
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
}

// DupDir duplicates an open directory (close-on-exec), for a server that
// keeps it beyond its caller's use of dir.
func DupDir(dir *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(dir.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup directory: %w", err)
	}
	return os.NewFile(uintptr(fd), dir.Name()), nil
}

// removeStale removes a socket file left by a server that is gone. A
// socket that still answers is left alone (ErrInUse); a non-socket entry is
// an error, never removed.
func removeStale(dirfd int, addr, name string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket", name)
	}
	c, err := net.DialTimeout("unix", addr, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", name, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("probe %s: %w", name, err)
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove stale %s: %w", name, err)
	}
	return nil
}

// Backlog is the listen backlog: the kernel's somaxconn, at least 4096.
func Backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 4096 {
			return n
		}
	}
	return 4096
}

// SyscallConn gives the listening socket, for a look at whether
// connections wait; it reads nothing.
func (l *Listener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, errors.New("unixsock: the listener has no socket of its own")
	}
	return sc.SyscallConn()
}
