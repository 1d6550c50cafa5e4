// Package idmap makes idmapped bind mounts (Linux 5.12+): a bind mount
// through which files owned by host ids appear owned by the ids a user
// namespace maps them to. A socket bound this way is used by a remapped
// container as if it were its own, and no process sits in the data path.
package idmap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/mounts"
)

// ErrUnsupported means the kernel or the filesystem cannot idmap a mount.
var ErrUnsupported = errors.New("idmapped mounts are not supported here")

// Mapping maps ids 0..Size-1 of the mount onto host ids UID.. and GID..:
// the daemon's remap range, so an inode owned by host root:docker shows as
// UID+0:GID+<docker gid> and a remapped container sees root:docker.
type Mapping struct {
	UID, GID, Size uint32
}

// String is the uid_map line, "0 <uid> <size>" (gid_map likewise).
func (m Mapping) String() string {
	return fmt.Sprintf("uid 0 %d %d, gid 0 %d %d", m.UID, m.Size, m.GID, m.Size)
}

// Validate checks that the mapping is usable: a remapped range that does
// not wrap around.
func (m Mapping) Validate() error {
	if m.Size == 0 || m.UID == 0 || m.GID == 0 {
		return errors.New("idmap needs a userns-remapped daemon (a remap range that does not start at 0)")
	}
	if uint64(m.UID)+uint64(m.Size) > 1<<32-1 || uint64(m.GID)+uint64(m.Size) > 1<<32-1 {
		return errors.New("remap range runs past the last id")
	}
	return nil
}

// HelperArg is the argument that makes the sockrelay binary act as the
// user namespace holder (see RunHelper).
const HelperArg = "__userns-holder"

// RunHelper is the body of the holder process: it waits until its stdin
// closes, then exits. cmd/sockrelay calls it for HelperArg.
func RunHelper() {
	var b [1]byte
	os.Stdin.Read(b[:])
}

// Namespaces creates and caches one user namespace per mapping. A
// namespace is made by starting the binary itself (self) in a new user
// namespace with the mapping, opening /proc/<pid>/ns/user, and letting the
// process exit: the open descriptor keeps the namespace, and no process
// is left behind.
type Namespaces struct {
	Self string // path of this binary; /proc/self/exe when empty

	mu    sync.Mutex
	cache map[Mapping]*os.File
}

// Get returns a descriptor of a user namespace with mapping m.
func (n *Namespaces) Get(m Mapping) (*os.File, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if f := n.cache[m]; f != nil {
		return f, nil
	}
	f, err := n.create(m)
	if err != nil {
		return nil, err
	}
	if n.cache == nil {
		n.cache = map[Mapping]*os.File{}
	}
	n.cache[m] = f
	return f, nil
}

// Close releases the cached namespaces.
func (n *Namespaces) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for m, f := range n.cache {
		f.Close()
		delete(n.cache, m)
	}
}

func (n *Namespaces) create(m Mapping) (*os.File, error) {
	self := n.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	cmd := exec.Command(self, HelperArg)
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.UID), Size: int(m.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.GID), Size: int(m.Size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start user namespace holder: %w", err)
	}
	// The maps are written before Start returns; the namespace is ready.
	f, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	stdin.Close()
	werr := cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	if werr != nil {
		f.Close()
		return nil, fmt.Errorf("user namespace holder: %w", werr)
	}
	return f, nil
}

// Clone makes a detached, idmapped clone of the mount of the file at src
// (a path), mapped through the user namespace userns, and read-only,
// nosuid, nodev and noexec (mounts.Locked): through a writable idmapped
// mount, the container's root would own the host's inode, and could
// chmod or chown the daemon's own socket. The caller attaches it with
// mounts.Attach or closes it (which discards it).
func Clone(src string, userns *os.File) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", src, err)
	}
	tree := os.NewFile(uintptr(fd), src)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | mounts.Locked, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		tree.Close()
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("%w: mount_setattr: %v", ErrUnsupported, err)
		}
		return nil, fmt.Errorf("mount_setattr %s: %w", src, err)
	}
	return tree, nil
}

// Probe checks that the file at src can be idmapped with m, and says why
// not in terms a user can act on: the kernel release and the filesystem.
func (n *Namespaces) Probe(src string, m Mapping) error {
	ns, err := n.Get(m)
	if err != nil {
		return fmt.Errorf("%w: cannot create a user namespace: %v", ErrUnsupported, err)
	}
	tree, err := Clone(src, ns)
	if err != nil {
		return fmt.Errorf("%w (kernel %s, %s filesystem; needs Linux 5.12+, tmpfs needs 6.3+): %v",
			ErrUnsupported, kernelRelease(), FSName(src), err)
	}
	return tree.Close()
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// FSName names the filesystem holding path.
func FSName(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown"
	}
	names := map[int64]string{
		unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext2/3/4", unix.PROC_SUPER_MAGIC: "proc", unix.SYSFS_MAGIC: "sysfs", unix.XFS_SUPER_MAGIC: "xfs",
		unix.BTRFS_SUPER_MAGIC: "btrfs", unix.OVERLAYFS_SUPER_MAGIC: "overlay", unix.NFS_SUPER_MAGIC: "nfs",
		unix.F2FS_SUPER_MAGIC: "f2fs",
	}
	if s, ok := names[int64(st.Type)]; ok {
		return s
	}
	return "0x" + strings.ToLower(strconv.FormatInt(int64(st.Type), 16))
}
