// Package mounts makes the mounts a volume is served through, with the
// new mount API (open_tree, mount_setattr, move_mount): a mount is built
// detached, given its attributes while no one can see it, and only then
// attached. Nothing is ever mounted by a path a container can change:
// every call names its place by an open directory and a plain name.
//
// Everything a container gets from a volume is read-only, nosuid, nodev
// and noexec. A remapped container's root owns the sockets it is given
// (a relay's socket is chowned to it; through an idmapped mount, the
// daemon's own socket shows as its own), so on a writable mount it could
// chmod, chown or unlink them: widen a shared volume's socket, or change
// the host's docker.sock itself. On a read-only mount those calls fail
// with EROFS, while connect(2) still works.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Locked are the attributes every mount this package makes carries.
const Locked = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC

// ReadOnlyBind mounts a read-only (and nosuid, nodev, noexec) bind of
// the directory dir onto name inside parent, over whatever is there.
//
// The bind is a clone of dir's own mount, not of the mounts below it,
// and it stays a peer of that mount: mounts made inside the bind later
// (an idmapped socket) reach the containers that mount it, as they would
// reach the directory itself, and that propagation survives the bind
// being unmounted and made again (a plugin restart).
func ReadOnlyBind(dir, parent *os.File, name string) error {
	fd, err := unix.OpenTree(int(dir.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", name, err)
	}
	tree := os.NewFile(uintptr(fd), name)
	defer tree.Close()
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: Locked}); err != nil {
		return fmt.Errorf("mount_setattr %s: %w", name, err)
	}
	return Attach(tree, parent, name)
}

// Attach moves a detached tree (from open_tree) onto name inside dir; a
// bind of a file needs a file there, a bind of a directory a directory.
func Attach(tree, dir *os.File, name string) error {
	if err := unix.MoveMount(int(tree.Fd()), "", int(dir.Fd()), name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount onto %s: %w", name, err)
	}
	return nil
}

// maxStack bounds Detach: more mounts stacked on one name than this is
// not something sockrelay made.
const maxStack = 16

// Detach lazily unmounts everything stacked on name inside dir. It is
// not an error when nothing is mounted there.
func Detach(dir *os.File, name string) error {
	p := "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + name
	for range maxStack {
		err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", name, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts", name, maxStack)
}

// ReadOnly reports whether the mount holding f is read-only.
func ReadOnly(f *os.File) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false, err
	}
	return st.Flags&unix.ST_RDONLY != 0, nil
}
