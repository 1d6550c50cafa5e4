// Package peer finds out who is on the other end of a client connection:
// the process, by SO_PEERCRED, and the container it runs in, by that
// process's cgroup and then the daemon.
//
// The kernel gives the process's pid as seen from the reader's pid
// namespace: in the managed plugin that is the host's (config.json
// "pidhost"), in `sockrelay serve` it is the host's anyway. The pid is
// racy: the peer may exit and its pid be taken by another process. So
// the cgroup is read once, when the connection is accepted, and checked
// against a pidfd of the very process that connected (SO_PEERPIDFD,
// Linux 6.5+): a cgroup read while that process still lives is its own.
//
// A container ID is found in the cgroup path by its shape (64 hex
// digits, as a path component or inside docker-<id>.scope), which covers
// cgroup v1 and v2, the cgroupfs and systemd drivers and a
// --cgroup-parent. Only the daemon says whether it is one of its
// containers: an ID it does not know is logged as what it is, an ID.
package peer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Callers, as the audit log names them.
const (
	// CallerContainer: the process runs in a container (its ID is in
	// its cgroup).
	CallerContainer = "container"
	// CallerHost: the process runs in no container.
	CallerHost = "host"
	// CallerUnknown: the process could not be placed: no pid (the
	// plugin without pidhost), or it exited before it could be read.
	CallerUnknown = "unknown"
)

// Creds are a client process's ids as the kernel gives them at connect.
type Creds struct {
	PID, UID int32
	// pidfd refers to the process that connected, or is -1.
	pidfd int
}

// soPeerPidfd is SO_PEERPIDFD (asm-generic, x86 and arm64): a pidfd of
// the process that connected.
const soPeerPidfd = 77

// Of reads the peer's credentials of a connected Unix socket, and a
// pidfd of it when the kernel can give one. ok is false when
// SO_PEERCRED says nothing. Close releases the pidfd.
func Of(rc syscall.RawConn) (c Creds, ok bool) {
	c.pidfd = -1
	var cred unix.Ucred
	var errno syscall.Errno
	rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(cred))
		_, _, errno = syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERCRED,
			uintptr(unsafe.Pointer(&cred)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 || cred.Pid <= 0 {
			return
		}
		var pidfd int32
		size = uint32(unsafe.Sizeof(pidfd))
		if _, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, soPeerPidfd,
			uintptr(unsafe.Pointer(&pidfd)), uintptr(unsafe.Pointer(&size)), 0); e == 0 {
			c.pidfd = int(pidfd)
		}
	})
	if errno != 0 {
		return c, false
	}
	c.PID, c.UID = cred.Pid, int32(cred.Uid)
	return c, true
}

// Close releases what Of opened.
func (c *Creds) Close() {
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
}

// alive says whether the process that connected still runs. Without a
// pidfd (a kernel older than 6.5) nothing can be told, and it says yes.
func (c *Creds) alive() bool {
	if c.pidfd < 0 {
		return true
	}
	return !errors.Is(unix.PidfdSendSignal(c.pidfd, 0, nil, 0), unix.ESRCH)
}

// ContainerIDs lists the container IDs in a /proc/PID/cgroup file's
// paths, in the order they come, each once: the outermost container
// first (a cgroup nested below a container's, as in Docker in Docker,
// names the outer one first). Forms seen:
//
//	0::/system.slice/docker-<id>.scope          (v2, systemd driver)
//	0::/docker/<id>                             (v2, cgroupfs driver)
//	12:memory:/docker/<id>                      (v1)
//	0::/../../docker-<id>.scope                 (read from another cgroup namespace)
//	0::/my-parent/<id>, 0::/my.slice/docker-<id>.scope (--cgroup-parent)
func ContainerIDs(cgroup []byte) []string {
	var ids []string
	for len(cgroup) > 0 {
		line := cgroup
		if i := bytes.IndexByte(cgroup, '\n'); i >= 0 {
			line, cgroup = cgroup[:i], cgroup[i+1:]
		} else {
			cgroup = nil
		}
		// hierarchy-ID:controllers:path; the path may hold ':'.
		_, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		_, path, ok := bytes.Cut(rest, []byte{':'})
		if !ok {
			continue
		}
		for _, comp := range bytes.Split(path, []byte{'/'}) {
			if id, ok := idIn(comp); ok && !contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// idIn finds a container ID in one path component: the whole component,
// or between a prefix ending in '-' and a ".scope" suffix
// (docker-<id>.scope, as systemd names a container's scope).
func idIn(comp []byte) (string, bool) {
	if s, ok := bytes.CutSuffix(comp, []byte(".scope")); ok {
		comp = s
		if i := bytes.LastIndexByte(comp, '-'); i >= 0 {
			comp = comp[i+1:]
		}
	}
	if len(comp) != 64 {
		return "", false
	}
	for _, b := range comp {
		if !('0' <= b && b <= '9' || 'a' <= b && b <= 'f') {
			return "", false
		}
	}
	return string(comp), true
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Container is what the daemon says of a container.
type Container struct {
	ID      string
	Name    string // without the leading '/'
	Image   string // as it was asked for (Config.Image)
	ImageID string // the image it runs (sha256:…)
}

// ErrNotFound is what Inspect returns for an ID the daemon does not know.
var ErrNotFound = errors.New("no such container")

// Identity is what is known of a connection's caller.
type Identity struct {
	Caller    string // CallerContainer, CallerHost or CallerUnknown
	Container        // ID alone when the daemon could not say more
}

// Resolver places callers, asking the daemon about container IDs with a
// cache: an ID is never reused, so an answer stays true for as long as
// the container lives, except for its name (docker rename), which the
// cache's TTL bounds. A container that is destroyed has no more
// processes to connect, so its entry only waits to expire.
type Resolver struct {
	// Proc is where /proc is ("" for /proc).
	Proc string
	// Inspect asks the daemon on socket about a container by full ID; an
	// error wrapping ErrNotFound for one it does not know.
	Inspect func(ctx context.Context, socket, id string) (Container, error)
	// TTL is how long an answer is kept (0: DefaultTTL).
	TTL time.Duration

	mu      sync.Mutex
	cache   map[cacheKey]cached
	pending map[cacheKey]*lookup
}

// DefaultTTL is how long the daemon's answer about a container is kept.
const DefaultTTL = time.Minute

// maxCached bounds the cache; past it, expired entries go, then all.
const maxCached = 4096

// lookupTimeout bounds one caller's questions to the daemon.
const lookupTimeout = 5 * time.Second

type cacheKey struct{ socket, id string }

type cached struct {
	c       Container
	found   bool
	expires time.Time
}

type lookup struct {
	done chan struct{}
	c    Container
	err  error
}

// Pending is a caller being placed: the cgroup read is done, the
// daemon's answer may still be coming.
type Pending struct {
	id   Identity
	done chan struct{} // nil: id is final
	fin  *Identity     // set before done is closed
}

// Identify places the caller c on a connection to the daemon on socket.
// It reads the cgroup now; what the daemon says comes later (Pending.Get).
// It never fails: what cannot be known is left out.
func (r *Resolver) Identify(c *Creds, socket string) *Pending {
	if c == nil || c.PID <= 0 {
		return &Pending{id: Identity{Caller: CallerUnknown}}
	}
	proc := r.Proc
	if proc == "" {
		proc = "/proc"
	}
	b, err := os.ReadFile(proc + "/" + strconv.Itoa(int(c.PID)) + "/cgroup")
	if err != nil || !c.alive() {
		// Gone, or its pid may be another's by now.
		return &Pending{id: Identity{Caller: CallerUnknown}}
	}
	ids := ContainerIDs(b)
	if len(ids) == 0 {
		return &Pending{id: Identity{Caller: CallerHost}}
	}
	id := Identity{Caller: CallerContainer, Container: Container{ID: ids[0]}}
	if r.Inspect == nil {
		return &Pending{id: id}
	}
	if known, ok := r.fromCache(socket, ids); ok {
		id.Container = known
		return &Pending{id: id}
	}
	p := &Pending{id: id, done: make(chan struct{})}
	go func() {
		fin := id
		if known, ok := r.resolve(socket, ids); ok {
			fin.Container = known
		}
		p.fin = &fin
		close(p.done)
	}()
	return p
}

// Get is what is known of the caller, waiting up to wait for the
// daemon's answer if it has not come; final says nothing more will be.
func (p *Pending) Get(wait time.Duration) (id Identity, final bool) {
	if p.done == nil {
		return p.id, true
	}
	select {
	case <-p.done:
		return *p.fin, true
	default:
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-p.done:
			return *p.fin, true
		case <-t.C:
		}
	}
	return p.id, false
}

// fromCache is the first of ids the cache knows as a container, when
// every ID before it is known as none.
func (r *Resolver) fromCache(socket string, ids []string) (Container, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for _, id := range ids {
		e, ok := r.cache[cacheKey{socket, id}]
		if !ok || now.After(e.expires) {
			return Container{}, false
		}
		if e.found {
			return e.c, true
		}
	}
	return Container{}, false
}

// resolve asks the daemon about ids in turn, the first it knows wins;
// concurrent callers share a question. ok is false when none could be
// confirmed.
func (r *Resolver) resolve(socket string, ids []string) (Container, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	for _, id := range ids {
		c, err := r.ask(ctx, socket, id)
		if err == nil {
			return c, true
		}
		if !errors.Is(err, ErrNotFound) {
			return Container{}, false // the daemon cannot say; keep the ID alone
		}
	}
	return Container{}, false
}

// ask asks the daemon about one ID, through the cache.
func (r *Resolver) ask(ctx context.Context, socket, id string) (Container, error) {
	k := cacheKey{socket, id}
	r.mu.Lock()
	if e, ok := r.cache[k]; ok && time.Now().Before(e.expires) {
		r.mu.Unlock()
		if !e.found {
			return Container{}, ErrNotFound
		}
		return e.c, nil
	}
	if l, ok := r.pending[k]; ok {
		r.mu.Unlock()
		select {
		case <-l.done:
			return l.c, l.err
		case <-ctx.Done():
			return Container{}, ctx.Err()
		}
	}
	l := &lookup{done: make(chan struct{})}
	if r.pending == nil {
		r.pending = map[cacheKey]*lookup{}
	}
	r.pending[k] = l
	r.mu.Unlock()

	l.c, l.err = r.Inspect(ctx, socket, id)
	if l.err == nil && l.c.ID != id {
		// A container named like this ID, not the one whose ID it is.
		l.c, l.err = Container{}, ErrNotFound
	}
	r.mu.Lock()
	delete(r.pending, k)
	if l.err == nil || errors.Is(l.err, ErrNotFound) {
		r.store(k, cached{c: l.c, found: l.err == nil})
	}
	r.mu.Unlock()
	close(l.done)
	return l.c, l.err
}

// store caches an answer; callers hold mu.
func (r *Resolver) store(k cacheKey, e cached) {
	ttl := r.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	e.expires = now.Add(ttl)
	if r.cache == nil {
		r.cache = map[cacheKey]cached{}
	}
	if len(r.cache) >= maxCached {
		for k, old := range r.cache {
			if now.After(old.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= maxCached {
			clear(r.cache)
		}
	}
	r.cache[k] = e
}
