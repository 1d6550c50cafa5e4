// Package owner finds the host ids of a remapped container's root, the way
// dockerd does, so that a volume's socket can be owned by it.
package owner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/moby/api/types/system"

	"github.com/sockrelay/sockrelay/internal/daemon"
)

// ErrUnknown means the remapped root could not be determined.
var ErrUnknown = errors.New("cannot determine the remapped root")

// Range is the daemon's remap range: host ids UID and GID are root inside a
// remapped container, and Size ids follow each. A daemon without
// userns-remap has the identity range: Remapped is false, root is 0:0.
type Range struct {
	Remapped bool
	UID, GID uint32
	Size     uint32
	// Source says where the range came from, for logs and Status.
	Source string
}

// Map turns container ids (as seen inside the container) into host ids.
func (r Range) Map(uid, gid uint32) (hostUID, hostGID uint32, err error) {
	if !r.Remapped {
		return uid, gid, nil
	}
	if uid >= r.Size || gid >= r.Size {
		return 0, 0, fmt.Errorf("ids must be below %d, the size of the daemon's remap range", r.Size)
	}
	return r.UID + uid, r.GID + gid, nil
}

// Resolver resolves the Range once and remembers it: the remap range of a
// daemon cannot change without restarting the daemon and its plugins.
type Resolver struct {
	// Override, when set, is used as is (the REMAP_UID/REMAP_GID settings).
	Override *Range
	// RemapUser is the daemon's --userns-remap value; "default" means
	// dockremap. SubUID and SubGID are the files to read.
	RemapUser      string
	SubUID, SubGID string
	// DaemonSocket is the daemon's API socket for GET /info; empty skips it.
	DaemonSocket string

	mu     sync.Mutex
	cached *Range
}

// Resolve returns the daemon's remap range. The settings win. Otherwise
// GET /info says whether the daemon remaps at all; when it does, the
// daemon's own rule on /etc/subuid and /etc/subgid gives the range, and
// DockerRootDir (".../<uid>.<gid>") is used when those files say nothing.
// The two must agree when both answer.
func (r *Resolver) Resolve(ctx context.Context) (Range, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cached != nil {
		return *r.cached, nil
	}
	rg, err := r.resolve(ctx)
	if err != nil {
		return Range{}, err
	}
	r.cached = &rg
	return rg, nil
}

func (r *Resolver) resolve(ctx context.Context) (Range, error) {
	if r.Override != nil {
		return *r.Override, nil
	}
	var info *system.Info
	var infoErr error = errors.New("no daemon socket configured")
	if r.DaemonSocket != "" {
		info, infoErr = daemon.Client{Socket: r.DaemonSocket}.Info(ctx)
	}
	if infoErr == nil && !hasUserns(info.SecurityOptions) {
		return Range{Remapped: false, Size: 1<<32 - 1, Source: "daemon without userns-remap (GET /info)"}, nil
	}
	user := RemapUserName(r.RemapUser)
	sub, subErr := FromSubIDFiles(user, r.SubUID, r.SubGID)
	if infoErr != nil {
		if subErr != nil {
			return Range{}, fmt.Errorf("%w: %v; %v; set REMAP_UID and REMAP_GID", ErrUnknown, subErr, infoErr)
		}
		return sub, nil
	}
	root, rootErr := FromRootDir(info.DockerRootDir)
	switch {
	case subErr == nil && rootErr == nil && (root.UID != sub.UID || root.GID != sub.GID):
		return Range{}, fmt.Errorf("%w: /etc/subuid and /etc/subgid give %d:%d for %q but the daemon uses %d:%d; set USERNS_REMAP to the daemon's remap user, or REMAP_UID and REMAP_GID",
			ErrUnknown, sub.UID, sub.GID, user, root.UID, root.GID)
	case subErr == nil:
		return sub, nil
	case rootErr == nil:
		return root, nil
	}
	return Range{}, fmt.Errorf("%w: %v; %v; set REMAP_UID and REMAP_GID", ErrUnknown, subErr, rootErr)
}

// RemapUserName turns a --userns-remap value into the user name whose
// subordinate ids the daemon uses.
func RemapUserName(v string) string {
	user, _, _ := strings.Cut(v, ":")
	if user == "default" || user == "" {
		return "dockremap"
	}
	return user
}

// FromSubIDFiles applies the daemon's rule: in each file, the first line
// of user, named by its name or by its numeric uid (the passwd file next
// to subuid says which uid that is), gives the start and the size of the
// range.
func FromSubIDFiles(user, subuid, subgid string) (Range, error) {
	names := []string{user}
	if uid, ok := lookupUID(filepath.Join(filepath.Dir(subuid), "passwd"), user); ok {
		names = append(names, uid)
	}
	uid, usize, err := firstSubID(subuid, names)
	if err != nil {
		return Range{}, err
	}
	gid, gsize, err := firstSubID(subgid, names)
	if err != nil {
		return Range{}, err
	}
	return Range{Remapped: true, UID: uid, GID: gid, Size: min(usize, gsize), Source: "subordinate ids of " + user}, nil
}

func firstSubID(file string, names []string) (start, size uint32, err error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	start, size, err = ParseSubID(f, names...)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", file, err)
	}
	return start, size, nil
}

// lookupUID returns user's numeric uid from a passwd file.
func lookupUID(passwd, user string) (string, bool) {
	f, err := os.Open(passwd)
	if err != nil {
		return "", false
	}
	defer f.Close()
	return LookupUID(f, user)
}

// LookupUID returns user's numeric uid from a passwd file: the third
// field of the first line whose first field is user.
func LookupUID(r io.Reader, user string) (string, bool) {
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || f[0] != user {
			continue
		}
		if _, err := strconv.ParseUint(f[2], 10, 32); err != nil {
			return "", false
		}
		return f[2], true
	}
	return "", false
}

// ParseSubID returns the first range in a subuid/subgid file whose line
// names the user by any of names (dockerd accepts the user's name and its
// numeric uid).
func ParseSubID(r io.Reader, names ...string) (start, size uint32, err error) {
	if len(names) == 0 {
		return 0, 0, errors.New("no user to look for")
	}
	user := names[0]
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 || !slices.Contains(names, parts[0]) {
			continue
		}
		s, err1 := strconv.ParseUint(parts[1], 10, 32)
		n, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil || n == 0 || s == 0 || s+n > 1<<32-1 {
			return 0, 0, fmt.Errorf("bad line for %q", user)
		}
		return uint32(s), uint32(n), nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if len(names) > 1 {
		return 0, 0, fmt.Errorf("no line for %q (uid %s)", user, strings.Join(names[1:], ", "))
	}
	return 0, 0, fmt.Errorf("no line for %q", user)
}

// FromRootDir reads the remapped root from the daemon's DockerRootDir,
// which ends in "/<uid>.<gid>" under userns-remap.
func FromRootDir(dir string) (Range, error) {
	u, g, ok := strings.Cut(path.Base(dir), ".")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil || uid == 0 || gid == 0 {
		return Range{}, fmt.Errorf("DockerRootDir %q does not end in /<uid>.<gid>", dir)
	}
	return Range{Remapped: true, UID: uint32(uid), GID: uint32(gid), Size: 65536, Source: "DockerRootDir (GET /info)"}, nil
}

func hasUserns(opts []string) bool {
	for _, o := range opts {
		for _, kv := range strings.Split(o, ",") {
			if kv == "name=userns" {
				return true
			}
		}
	}
	return false
}
