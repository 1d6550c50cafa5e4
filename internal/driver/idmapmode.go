package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/mounts"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// IdmapWatch is how often an idmap volume checks that its mount still
// shows the daemon's current socket: a daemon restart (with live-restore,
// the plugin keeps running) re-creates the socket as a new inode, and a
// bind of the old one is dead.
const IdmapWatch = time.Second

// errNotRemapped refuses idmap on a daemon that does not remap: the
// container's root is the host's, and the daemon's socket serves it as is.
var errNotRemapped = errors.New("the daemon does not run with userns-remap")

func mappingOf(v *Volume) (idmap.Mapping, error) {
	if v.Remap == nil || !v.Remap.Remapped {
		return idmap.Mapping{}, errNotRemapped
	}
	return idmap.Mapping{UID: v.Remap.UID, GID: v.Remap.GID, Size: v.Remap.Size}, nil
}

// IdmapMode serves a volume with an idmapped bind mount of the daemon's
// socket: the container connects straight to the daemon, and sees the
// daemon's socket with its owner and mode mapped through the remap.
type IdmapMode struct {
	Log    *slog.Logger
	Userns *idmap.Namespaces
}

func (*IdmapMode) Name() string      { return "idmap" }
func (*IdmapMode) Options() []Option { return nil }

// Hint says why the owner options are not idmap's.
func (*IdmapMode) Hint(key string) string {
	if slices.ContainsFunc(ownerOptions, func(o Option) bool { return o.Key == key }) {
		return "the socket is the daemon's own, with its owner and mode seen through the remap; use mode=relay to choose them"
	}
	return ""
}

// Check refuses, at Create, an idmap volume the kernel or the filesystem
// of the daemon's socket cannot serve.
func (m *IdmapMode) Check(v *Volume) error {
	if err := m.Supported(v); err != nil {
		return fmt.Errorf("%w: mode=idmap: %v; use mode=relay", ErrInvalid, err)
	}
	return nil
}

// Supported says why v's target cannot be served by an idmapped mount
// here, or nil when it can: it makes one (Probe) and throws it away.
func (m *IdmapMode) Supported(v *Volume) error {
	mp, err := mappingOf(v)
	if err != nil {
		return err
	}
	if m.Userns == nil {
		return errors.New("this process makes no user namespaces")
	}
	return m.Userns.Probe(v.Upstream, mp)
}

// Describe adds nothing: the socket's owner and mode are the daemon's.
func (*IdmapMode) Describe(*Volume, map[string]any) {}

func (m *IdmapMode) Start(ctx context.Context, dir Dir, v *Volume) (Server, error) {
	mp, err := mappingOf(v)
	if err != nil {
		return nil, err
	}
	rw, err := unixsock.DupDir(dir.RW)
	if err != nil {
		return nil, err
	}
	view, err := unixsock.DupDir(dir.View)
	if err != nil {
		rw.Close()
		return nil, err
	}
	s := &idmapServer{log: m.Log.With("volume", v.Name), ns: m.Userns, m: mp, dir: rw, view: view, name: v.Socket, upstream: v.Upstream, done: make(chan struct{})}
	if err := s.mount(); err != nil {
		s.unmount()
		rw.Close()
		view.Close()
		return nil, err
	}
	ctx, s.cancel = context.WithCancel(ctx)
	go s.watch(ctx)
	return s, nil
}

type idmapServer struct {
	log      *slog.Logger
	ns       *idmap.Namespaces
	m        idmap.Mapping
	dir      *os.File // the volume directory, held open: the mount point file is made here
	view     *os.File // the read-only view of it, held open: the mount goes here
	name     string
	upstream string

	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex // guards remounts and the fields below
	remounts int
	lastErr  string
}

// mount (re)places the idmapped bind of the upstream on the mount point:
// whatever is stacked there is detached, and the point is a root-owned
// empty file.
func (s *idmapServer) mount() error {
	if err := mounts.Detach(s.view, s.name); err != nil {
		return err
	}
	if err := ensureFile(s.dir, s.name); err != nil {
		return err
	}
	userns, err := s.ns.Get(s.m)
	if err != nil {
		return err
	}
	tree, err := idmap.Clone(s.upstream, userns)
	if err != nil {
		return err
	}
	defer tree.Close()
	return mounts.Attach(tree, s.view, s.name)
}

func (s *idmapServer) unmount() error {
	err := mounts.Detach(s.view, s.name)
	if uerr := unix.Unlinkat(int(s.dir.Fd()), s.name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) && err == nil {
		err = uerr
	}
	return err
}

// watch re-mounts when the mount no longer shows the upstream's inode.
func (s *idmapServer) watch(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(IdmapWatch)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var up, mnt unix.Stat_t
		if err := unix.Stat(s.upstream, &up); err != nil {
			continue // the daemon is restarting; its socket will be back
		}
		err := unix.Fstatat(int(s.view.Fd()), s.name, &mnt, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && mnt.Ino == up.Ino && mnt.Dev == up.Dev {
			continue
		}
		s.mu.Lock()
		if err := s.mount(); err != nil {
			if s.lastErr != err.Error() {
				s.log.Error("re-mount of the daemon socket failed", "err", err)
			}
			s.lastErr = err.Error()
		} else {
			s.remounts++
			s.lastErr = ""
			s.log.Info("daemon socket changed; idmapped mount renewed")
		}
		s.mu.Unlock()
	}
}

func (s *idmapServer) Stop() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.mu.Lock()
		err = s.unmount()
		s.mu.Unlock()
		s.dir.Close()
		s.view.Close()
	})
	return err
}

func (s *idmapServer) Status(st map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st["idmap"] = s.m.String()
	st["remounts"] = s.remounts
	if s.lastErr != "" {
		st["last_error"] = s.lastErr
	}
}

// ensureFile makes name in dir a regular, root-owned, empty file to mount
// on, without following a link; a leftover socket is replaced.
func ensureFile(dir *os.File, name string) error {
	var st unix.Stat_t
	err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return nil
	}
	if err == nil {
		if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil {
			return fmt.Errorf("replace %s: %w", name, err)
		}
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", name, err)
	}
	return unix.Close(fd)
}
