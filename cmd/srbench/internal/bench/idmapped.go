package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/mounts"
)

// idmapMapping is the mapping of the idmap column: the remap range of a
// userns-remapped daemon with Debian's default subuid. The socket, owned
// by the bench's root, appears through the mount as 100000:100000 (and
// docker.sock as 100000:100000+<docker gid>); the bench, root, still
// connects.
var idmapMapping = idmap.Mapping{UID: remapID, GID: remapID, Size: 65536}

// idmapMount is an idmapped bind mount of a socket, attached onto an
// empty regular file in the bench's temp dir.
type idmapMount struct {
	src  string   // the socket it shows
	dir  *os.File // the bench's temp dir
	name string   // the file it covers, in dir
	path string   // dir/name: where to connect
}

// self is the program the bench starts as its upstream and as the user
// namespace holder: cfg.Self, or this very program.
func (h *harness) self() (string, error) {
	if h.cfg.Self != "" {
		return h.cfg.Self, nil
	}
	return os.Executable()
}

// skipIdmap leaves idmap out of what label names, with a printed line
// and a note saying why.
func (h *harness) skipIdmap(label, format string, args ...any) {
	why := fmt.Sprintf(format, args...)
	h.res.Note("idmap: left out of %s: %s", label, why)
	h.logf("idmap: left out of %s: %s", label, why)
}

// setupIdmap adds the idmap peer: an idmapped bind mount of the upstream
// socket, made in this process. Without root, or where the kernel cannot
// idmap the temp dir's filesystem, the column is left out with a note.
func (h *harness) setupIdmap(ctx context.Context) error {
	if os.Geteuid() != 0 {
		h.skipIdmap("the bench", "needs root (a user namespace with maps and mount_setattr need CAP_SYS_ADMIN)")
		return nil
	}
	self, err := h.self()
	if err != nil {
		h.skipIdmap("the bench", "no path to this program for the user namespace holder: %v", err)
		return nil
	}
	h.userns = &idmap.Namespaces{Self: self}
	if err := h.userns.Probe(h.up.addr, idmapMapping); err != nil {
		h.skipIdmap("the bench", "%v", err)
		return nil
	}
	m, err := h.mountIdmap(h.up.addr, "idmap.sock")
	if err != nil {
		return fmt.Errorf("idmap: %w", err)
	}
	if err := m.check(ctx); err != nil {
		return fmt.Errorf("idmap: %w", err)
	}
	h.logf("idmap: %s is an idmapped mount of %s (%s)", m.path, m.src, idmapMapping)
	h.peers = append(h.peers, &peer{name: report.Idmap, addr: m.path})
	h.res.Note("idmap: an idmapped bind mount of the upstream socket (%s), made by the bench; no process in the data path, so no relay memory or CPU to measure (—)", idmapMapping)
	return nil
}

// mountIdmap attaches an idmapped bind mount of the socket src onto a new
// empty file name in the bench's temp dir. close detaches it.
func (h *harness) mountIdmap(src, name string) (*idmapMount, error) {
	path := filepath.Join(h.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	dir, err := os.Open(h.dir)
	if err != nil {
		return nil, err
	}
	m := &idmapMount{src: src, dir: dir, name: name, path: path}
	if err := m.attach(h.userns); err != nil {
		dir.Close()
		return nil, err
	}
	h.mounts = append(h.mounts, m)
	return m, nil
}

// attach clones the mount of m.src, idmapped, and attaches it onto m.path.
func (m *idmapMount) attach(userns *idmap.Namespaces) error {
	ns, err := userns.Get(idmapMapping)
	if err != nil {
		return err
	}
	tree, err := idmap.Clone(m.src, ns)
	if err != nil {
		return err
	}
	defer tree.Close()
	return mounts.Attach(tree, m.dir, m.name)
}

// remount replaces the mount with a fresh one of m.src: a daemon that
// restarts makes a new socket, and a mount of the old one is dead.
func (m *idmapMount) remount(userns *idmap.Namespaces) error {
	if err := mounts.Detach(m.dir, m.name); err != nil {
		return err
	}
	return m.attach(userns)
}

// detach unmounts it; the file it covered goes with the temp dir.
func (m *idmapMount) detach() error {
	err := mounts.Detach(m.dir, m.name)
	m.dir.Close()
	return err
}

// check verifies that the mount shows m.src idmapped (the same inode,
// owned by ids shifted by the mapping) and that a ping goes through it.
func (m *idmapMount) check(ctx context.Context) error {
	var src, got syscall.Stat_t
	if err := syscall.Stat(m.src, &src); err != nil {
		return err
	}
	if err := syscall.Stat(m.path, &got); err != nil {
		return err
	}
	if got.Ino != src.Ino || got.Dev != src.Dev {
		return fmt.Errorf("%s is not a mount of %s", m.path, m.src)
	}
	if want := src.Uid + idmapMapping.UID; got.Uid != want || got.Gid != src.Gid+idmapMapping.GID {
		return fmt.Errorf("%s shows %d:%d through the mount, want %d:%d (%s)", m.src, got.Uid, got.Gid, want, src.Gid+idmapMapping.GID, idmapMapping)
	}
	if err := pingWithin(ctx, m.path, dockerTimeout); err != nil {
		return fmt.Errorf("ping through the idmapped mount of %s: %w", m.src, err)
	}
	return nil
}

// stale says whether m no longer shows the socket now at m.src.
func (m *idmapMount) stale() (bool, error) {
	src, err := statID(m.src)
	if err != nil {
		return false, err
	}
	got, err := statID(m.path)
	if err != nil {
		return false, err
	}
	return got != src, nil
}

// closeIdmap detaches every mount and releases the user namespace.
func (h *harness) closeIdmap() {
	var errs []error
	for _, m := range h.mounts {
		if err := m.detach(); err != nil {
			errs = append(errs, err)
		}
	}
	h.mounts = nil
	if h.userns != nil {
		h.userns.Close()
	}
	if err := errors.Join(errs...); err != nil {
		h.res.Note("idmap: %v; unmount it by hand (umount -l)", err)
		h.logf("idmap: %v", err)
	}
}
