// Package driver implements the VolumeDriver protocol: it keeps sockrelay's
// volumes, counts their mounts, and serves a socket in each mounted
// volume's directory.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/mounts"
	"github.com/sockrelay/sockrelay/internal/owner"
	"github.com/sockrelay/sockrelay/internal/state"
)

// Errors callers can test for. Their text reaches the user as
// "VolumeDriver.<Call>: <text>", so each wrap says what to do.
var (
	ErrInvalid  = errors.New("invalid volume")
	ErrNotFound = errors.New("no such sockrelay volume")
	ErrInUse    = errors.New("volume is in use")
	ErrExists   = errors.New("volume exists with other options")
	ErrLost     = errors.New("the plugin's record of this volume is lost")
)

// createTimeout bounds the owner lookup of a Create; dockerd gives 2 min.
const createTimeout = 30 * time.Second

// Resolver finds the daemon's remap range.
type Resolver interface {
	Resolve(ctx context.Context) (owner.Range, error)
}

// Config wires a Driver.
type Config struct {
	Log   *slog.Logger
	Store *state.Store
	Owner Resolver
	// VolumeRoot holds the volume directories (the plugin's propagatedMount).
	VolumeRoot string
	// HostSocketDir is the host's socket directory; SocketDirMount is where
	// it is mounted here. Targets are host paths below HostSocketDir.
	HostSocketDir, SocketDirMount string
	// Modes are the modes volumes may name (Modes gives this build's).
	Modes []Mode
	// InUse asks the daemon whether a container, running or not, still
	// uses a volume. Remove asks it about a volume this plugin still counts
	// mounts of (an Unmount that never reached the plugin); nil refuses
	// such a Remove.
	InUse func(ctx context.Context, name string) (bool, error)
	// AskDaemon asks the daemon what it holds of a volume whose record is
	// lost, so that Recover can rebuild the record; nil leaves such
	// volumes to the admin.
	AskDaemon func(ctx context.Context, name string) (DaemonVolume, error)
	// Metrics get every volume served, and forget a volume removed; nil:
	// none.
	Metrics *metrics.Metrics
}

// Driver is the VolumeDriver. Create it with New, then Reconcile once the
// plugin socket listens, and Close at shutdown.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	ctx  context.Context
	root *os.File // VolumeRoot, held open

	locks keyLock    // one per volume name; held across I/O
	mu    sync.Mutex // guards vols, lost and live; never held across I/O
	vols  map[string]*state.Volume
	lost  map[string]*lostVolume
	live  map[string]*served
}

type served struct {
	srv     Server
	lastErr string
	errAt   time.Time
}

var _ volume.Driver = (*Driver)(nil)

// New loads the state. It does not start any relay: call Reconcile, then
// Recover. Damaged state never stops it: a record that cannot be read
// costs its own volume, which is kept as lost (listed, its Status saying
// why and what to do) until Recover rebuilds it or the admin removes it.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	seen := map[string]bool{}
	for _, m := range cfg.Modes {
		if seen[m.Name()] {
			return nil, fmt.Errorf("mode %s is listed twice", m.Name())
		}
		seen[m.Name()] = true
	}
	if err := os.MkdirAll(cfg.VolumeRoot, 0o755); err != nil {
		return nil, fmt.Errorf("volume root: %w", err)
	}
	root, err := os.OpenFile(cfg.VolumeRoot, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("volume root: %w", err)
	}
	d := &Driver{cfg: cfg, log: cfg.Log, ctx: ctx, root: root, vols: map[string]*state.Volume{},
		lost: map[string]*lostVolume{}, live: map[string]*served{}}
	d.load()
	return d, nil
}

// Reconcile re-creates the directory of every volume and the socket of
// every mounted one. dockerd never replays Mount after a plugin restart.
func (d *Driver) Reconcile() {
	d.mu.Lock()
	names := make([]string, 0, len(d.vols))
	for n := range d.vols {
		names = append(names, n)
	}
	d.mu.Unlock()
	for _, name := range names {
		unlock := d.locks.lock(name)
		v := d.volume(name)
		// A Mount that came in first may already serve it.
		if v != nil && !d.serving(name) {
			if v.MountCount() == 0 {
				if err := d.makeDir(name); err != nil {
					d.log.Error("restore volume directory", "volume", name, "err", err)
				}
			} else if err := d.start(v); err != nil {
				d.log.Error("restore socket of mounted volume", "volume", name, "err", err)
			} else {
				d.log.Info("socket restored", "volume", name, "mounts", v.MountCount())
			}
		}
		unlock()
	}
}

// Close stops every socket. Mount counts stay in the state, so the next
// start serves them again.
func (d *Driver) Close() {
	d.mu.Lock()
	live := d.live
	d.live = map[string]*served{}
	d.mu.Unlock()
	for name, s := range live {
		d.stopServer(name, s)
	}
	d.root.Close()
}

func (d *Driver) volume(name string) *state.Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vols[name]
}

// commit replaces (or with nil, deletes) a volume's record, in memory
// once it is on disk; on failure nothing changes. Callers hold the key
// lock. A volume whose record was lost is no longer lost once it has one.
func (d *Driver) commit(name string, v *state.Volume) error {
	var err error
	if v == nil {
		err = d.cfg.Store.Delete(name)
	} else {
		err = d.cfg.Store.Put(v)
	}
	if err != nil {
		return fmt.Errorf("cannot save plugin state, nothing changed: %w; check the plugin's log and the state directory (%s)", err, d.cfg.Store.Dir())
	}
	d.mu.Lock()
	if v == nil {
		delete(d.vols, name)
	} else {
		d.vols[name] = v // records are never changed in place, only replaced
	}
	delete(d.lost, name)
	d.mu.Unlock()
	return nil
}

// Create validates the name and options, resolves the daemon's remap
// range and records the volume. Bad input changes nothing.
func (d *Driver) Create(r *volume.CreateRequest) error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	p, err := d.prepare(r.Name, r.Options)
	if err != nil {
		return err
	}
	v, rec := p.v, p.rec
	unlock := d.locks.lock(r.Name)
	defer unlock()
	if old := d.volume(r.Name); old != nil {
		if d.sameVolume(old, rec) || p.auto && d.sameAsAuto(old, v) {
			return nil
		}
		return fmt.Errorf("volume %q: %w; remove it first or pick another name", r.Name, ErrExists)
	}
	if d.lostVolume(r.Name) != nil {
		d.log.Warn("volume created anew over its lost record", "volume", r.Name)
	}
	// The record first, the directory after: a crash between leaves a
	// record, whose directory the next start makes. A directory without a
	// record stands for a lost record, which the next start rebuilds from
	// the daemon, and the daemon has no options of a Create it never saw
	// succeed.
	if err := d.commit(r.Name, rec); err != nil {
		return err
	}
	if err := d.makeDir(r.Name); err != nil {
		if cerr := d.commit(r.Name, nil); cerr != nil {
			d.log.Error("undo the record of a volume whose directory failed", "volume", r.Name, "err", cerr)
		}
		return err
	}
	d.log.Info("volume created", "volume", r.Name, "mode", v.Mode, "mode_chosen", v.Chosen, "remap_source", p.remapSource)
	return nil
}

// prepared is a volume a Create's options ask for, and its record.
type prepared struct {
	v           *Volume
	rec         *state.Volume
	auto        bool // mode=auto chose v's mode
	remapSource string
}

// prepare checks a Create's options and makes the volume they ask for,
// and its record: the remap range resolved, mode=auto chosen, the mode's
// checks passed.
func (d *Driver) prepare(name string, opts map[string]string) (*prepared, error) {
	v, err := ParseOptions(opts, d.cfg.HostSocketDir, d.cfg.Modes)
	if err != nil {
		return nil, err
	}
	v.Name, v.Upstream = name, d.upstream(v.Target)
	if err := d.checkTarget(v.Target); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, createTimeout)
	defer cancel()
	rg, err := d.cfg.Owner.Resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot choose the socket's owner: %w", err)
	}
	if rg.Remapped {
		v.Remap = &rg
	}
	auto := v.Mode == Auto
	if auto {
		if err := chooseMode(v, d.cfg.Modes); err != nil {
			return nil, err
		}
	}
	mode := findMode(d.cfg.Modes, v.Mode)
	if err := mode.Check(v); err != nil {
		return nil, err
	}
	rec := recordOf(v, time.Now().UTC().Truncate(time.Second), nil)
	return &prepared{v: v, rec: rec, auto: auto, remapSource: rg.Source}, nil
}

// checkTarget makes sure the upstream exists and is a socket, without
// following a symlink out of the socket directory.
func (d *Driver) checkTarget(target string) error {
	rel := strings.TrimPrefix(target, d.cfg.HostSocketDir+"/")
	root, err := os.OpenRoot(d.cfg.SocketDirMount)
	if err != nil {
		return fmt.Errorf("the host socket directory is not mounted in the plugin (%v); check the plugin's sockdir mount", err)
	}
	defer root.Close()
	fi, err := root.Stat(rel)
	if err != nil {
		return fmt.Errorf("%w: option target: no socket at %s on the host; start what serves it first, or fix the path", ErrInvalid, target)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w: option target: %s is not a socket", ErrInvalid, target)
	}
	return nil
}

// upstream is where the plugin dials a target host path.
func (d *Driver) upstream(target string) string {
	return path.Join(d.cfg.SocketDirMount, strings.TrimPrefix(target, d.cfg.HostSocketDir+"/"))
}

// Remove deletes an unmounted volume.
func (d *Driver) Remove(r *volume.RemoveRequest) error {
	unlock := d.locks.lock(r.Name)
	defer unlock()
	v := d.volume(r.Name)
	if v == nil {
		if d.forgetLost(r.Name) {
			d.removeDir(r.Name)
			d.log.Info("volume removed; its record was lost", "volume", r.Name)
			return nil
		}
		// The daemon may still list a volume this plugin no longer has
		// (after a reinstall); removing it must not be impossible.
		d.log.Info("remove of an unknown volume; nothing to do", "volume", r.Name)
		return nil
	}
	if n := v.MountCount(); n > 0 {
		if err := d.staleMounts(r.Name, n); err != nil {
			return err
		}
	}
	// The directory first, the record after, for the reason Create gives.
	d.stop(r.Name)
	if err := d.removeDir(r.Name); err != nil {
		d.log.Warn("remove volume directory", "volume", r.Name, "err", err)
	}
	if err := d.commit(r.Name, nil); err != nil {
		// The volume stays: its directory is made again.
		if derr := d.makeDir(r.Name); derr != nil {
			d.log.Error("make the directory of a volume whose Remove failed", "volume", r.Name, "err", derr)
		}
		return err
	}
	d.cfg.Metrics.Forget(r.Name)
	d.log.Info("volume removed", "volume", r.Name)
	return nil
}

// staleMounts decides on a Remove of a volume this plugin counts n mounts
// of. The daemon asks to remove only volumes no container uses, so such
// counts are left from Unmounts that never reached the plugin (it was
// down or disabled when the containers stopped); the daemon is asked to
// be sure, and the Remove is refused when it says the volume is in use or
// cannot answer.
func (d *Driver) staleMounts(name string, n int) error {
	if d.cfg.InUse == nil {
		return fmt.Errorf("volume %q: %w by %d mount(s); stop the containers that use it first", name, ErrInUse, n)
	}
	used, err := d.cfg.InUse(d.ctx, name)
	switch {
	case err != nil:
		return fmt.Errorf("volume %q: %w: the plugin counts %d mount(s) and could not ask the daemon whether a container still uses it (%v); stop the containers that use it, or try again", name, ErrInUse, n, err)
	case used:
		return fmt.Errorf("volume %q: %w by %d mount(s); stop the containers that use it first", name, ErrInUse, n)
	}
	d.log.Warn("removing a volume whose mounts no container holds: unmounts were missed while the plugin was down", "volume", name, "mounts", n)
	return nil
}

// Mount counts one more mount of ID; the first mount starts the socket.
func (d *Driver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	if r.ID == "" {
		return nil, fmt.Errorf("%w: mount request without an ID", ErrInvalid)
	}
	unlock := d.locks.lock(r.Name)
	defer unlock()
	v := d.volume(r.Name)
	if v == nil {
		if l := d.lostVolume(r.Name); l != nil {
			return nil, fmt.Errorf("volume %q: %w: %s", r.Name, ErrLost, l.summary(r.Name))
		}
		return nil, fmt.Errorf("volume %q: %w", r.Name, ErrNotFound)
	}
	nv := v.Clone()
	if nv.Mounts == nil {
		nv.Mounts = map[string]int{}
	}
	nv.Mounts[r.ID]++
	started := false
	if !d.serving(r.Name) {
		if err := d.start(nv); err != nil {
			return nil, fmt.Errorf("volume %q: cannot serve its socket: %w", r.Name, err)
		}
		started = true
	}
	if err := d.commit(r.Name, nv); err != nil {
		if started {
			d.stop(r.Name)
		}
		return nil, err
	}
	d.log.Info("volume mounted", "volume", r.Name, "id", shortID(r.ID), "mounts", nv.MountCount())
	return &volume.MountResponse{Mountpoint: d.mountpoint(r.Name)}, nil
}

// Unmount counts one mount of ID less; the last unmount stops the socket.
func (d *Driver) Unmount(r *volume.UnmountRequest) error {
	unlock := d.locks.lock(r.Name)
	defer unlock()
	v := d.volume(r.Name)
	if v == nil {
		if d.lostVolume(r.Name) != nil {
			d.log.Warn("unmount of a volume whose record is lost; nothing to undo", "volume", r.Name, "id", shortID(r.ID))
			return nil
		}
		return fmt.Errorf("volume %q: %w", r.Name, ErrNotFound)
	}
	id := r.ID
	if v.Mounts[id] == 0 {
		// A record rebuilt from the daemon counts a mount per running
		// container under an ID of its own: the real ID was lost with the
		// record. Such an Unmount ends one of them.
		if id = rebuiltMount(v); id == "" {
			// Nothing to undo: say so in the log, and let the daemon go on.
			d.log.Warn("unmount of an ID that is not mounted", "volume", r.Name, "id", shortID(r.ID))
			return nil
		}
	}
	nv := v.Clone()
	if nv.Mounts[id]--; nv.Mounts[id] == 0 {
		delete(nv.Mounts, id)
	}
	if err := d.commit(r.Name, nv); err != nil {
		return err
	}
	if nv.MountCount() == 0 {
		d.stop(r.Name)
	}
	d.log.Info("volume unmounted", "volume", r.Name, "id", shortID(r.ID), "mounts", nv.MountCount())
	return nil
}

// Path returns a volume's mountpoint.
func (d *Driver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	if d.volume(r.Name) == nil && d.lostVolume(r.Name) == nil {
		return nil, fmt.Errorf("volume %q: %w", r.Name, ErrNotFound)
	}
	return &volume.PathResponse{Mountpoint: d.mountpoint(r.Name)}, nil
}

// Get describes one volume.
func (d *Driver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	v := d.volume(r.Name)
	if v == nil {
		// A volume whose record is lost is still a volume to the daemon:
		// answering Get keeps it from being dropped at a daemon start, and
		// shows the admin what happened.
		if l := d.lostVolume(r.Name); l != nil {
			return &volume.GetResponse{Volume: d.describeLost(r.Name, l)}, nil
		}
		return nil, fmt.Errorf("volume %q: %w", r.Name, ErrNotFound)
	}
	return &volume.GetResponse{Volume: d.describe(v, true)}, nil
}

// List describes every volume.
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	vols := make([]*state.Volume, 0, len(d.vols))
	for _, v := range d.vols {
		vols = append(vols, v)
	}
	lost := make([]string, 0, len(d.lost))
	for n := range d.lost {
		lost = append(lost, n)
	}
	d.mu.Unlock()
	res := &volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(vols)+len(lost))}
	for _, v := range vols {
		res.Volumes = append(res.Volumes, d.describe(v, false))
	}
	for _, n := range lost {
		res.Volumes = append(res.Volumes, &volume.Volume{Name: n, Mountpoint: d.mountpoint(n)})
	}
	return res, nil
}

// Capabilities: volumes are local to this host.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

func (d *Driver) describe(rec *state.Volume, status bool) *volume.Volume {
	out := &volume.Volume{Name: rec.Name, Mountpoint: d.mountpoint(rec.Name), CreatedAt: rec.CreatedAt.Format(time.RFC3339)}
	if !status {
		return out
	}
	v := d.view(rec)
	st := map[string]any{
		"mode":   v.Mode,
		"socket": v.Socket,
		"target": v.Target,
		"mounts": rec.MountCount(),
	}
	if v.Chosen != "" {
		st["mode_chosen"] = v.Chosen
	}
	if rec.Rebuilt != "" {
		st["rebuilt"] = rec.Rebuilt
	}
	if m := findMode(d.cfg.Modes, v.Mode); m != nil {
		m.Describe(v, st)
	}
	if v.Remap != nil {
		st["remap"] = fmt.Sprintf("%d:%d/%d", v.Remap.UID, v.Remap.GID, v.Remap.Size)
	}
	d.mu.Lock()
	s := d.live[rec.Name]
	d.mu.Unlock()
	st["serving"] = s != nil && s.srv != nil
	if s != nil {
		if s.srv != nil {
			s.srv.Status(st)
		}
		if s.lastErr != "" {
			st["last_error"] = s.lastErr
			st["last_error_at"] = s.errAt.Format(time.RFC3339)
		}
	}
	out.Status = st
	return out
}

func (d *Driver) mountpoint(name string) string { return filepath.Join(d.cfg.VolumeRoot, name) }

func (d *Driver) serving(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.live[name]
	return s != nil && s.srv != nil
}

// start serves rec's socket. Callers hold its key lock.
func (d *Driver) start(rec *state.Volume) error {
	v := d.view(rec)
	mode := findMode(d.cfg.Modes, v.Mode)
	if mode == nil {
		return d.recordErr(v.Name, fmt.Errorf("mode %q is not available in this build", v.Mode))
	}
	dir, err := d.openServed(v.Name)
	if err != nil {
		return d.recordErr(v.Name, err)
	}
	srv, err := mode.Start(d.ctx, dir, v)
	dir.RW.Close()
	dir.View.Close()
	if err != nil {
		d.detachView(v.Name)
		return d.recordErr(v.Name, err)
	}
	d.mu.Lock()
	d.live[v.Name] = &served{srv: srv}
	d.mu.Unlock()
	d.cfg.Metrics.Volume(v.Name, v.Mode)
	return nil
}

func (d *Driver) recordErr(name string, err error) error {
	d.mu.Lock()
	d.live[name] = &served{lastErr: err.Error(), errAt: time.Now().UTC()}
	d.mu.Unlock()
	return err
}

// stop stops serving name's socket. Callers hold the key lock.
func (d *Driver) stop(name string) {
	d.mu.Lock()
	s := d.live[name]
	delete(d.live, name)
	d.mu.Unlock()
	d.stopServer(name, s)
}

// stopServer stops s, if it serves, and takes the read-only view away.
func (d *Driver) stopServer(name string, s *served) {
	if s == nil || s.srv == nil {
		return
	}
	if err := s.srv.Stop(); err != nil {
		d.log.Warn("stop socket", "volume", name, "err", err)
	}
	d.detachView(name)
}

// openServed makes the volume directory ready to serve: the directory
// (made or taken over), and the read-only bind of it that containers
// get, made anew. Callers hold the key lock and close both files.
func (d *Driver) openServed(name string) (Dir, error) {
	if err := d.makeDir(name); err != nil {
		return Dir{}, err
	}
	// Nothing is mounted on the directory now: this opens the directory
	// itself, writable, and it stays so when the view covers it.
	rw, err := d.openDir(name)
	if err != nil {
		return Dir{}, err
	}
	if err := mounts.ReadOnlyBind(rw, d.root, name); err != nil {
		rw.Close()
		return Dir{}, fmt.Errorf("read-only bind of the volume directory: %w", err)
	}
	view, err := d.openDir(name)
	if err == nil {
		if ro, serr := mounts.ReadOnly(view); serr != nil || !ro {
			view.Close()
			err = fmt.Errorf("the volume directory is not read-only after its bind (%v)", serr)
		}
	}
	if err != nil {
		rw.Close()
		d.detachView(name)
		return Dir{}, err
	}
	return Dir{RW: rw, View: view}, nil
}

// detachView unmounts the read-only bind of a volume directory, and
// whatever was mounted in it.
func (d *Driver) detachView(name string) {
	if err := mounts.Detach(d.root, name); err != nil {
		d.log.Warn("unmount the volume's read-only view", "volume", name, "err", err)
	}
}

// makeDir creates the volume directory, or takes over an existing one,
// owned by root and not writable by anyone else: a container must not be
// able to add, remove or replace anything in it. A read-only view left
// on it by an earlier run is taken away first. Callers hold the key lock
// and do not serve the volume.
func (d *Driver) makeDir(name string) error {
	if err := mounts.Detach(d.root, name); err != nil {
		return fmt.Errorf("volume directory: %w", err)
	}
	err := unix.Mkdirat(int(d.root.Fd()), name, 0o755)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create volume directory: %w", err)
	}
	dir, err := d.openDir(name)
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Chown(0, 0); err != nil {
		return fmt.Errorf("volume directory: %w", err)
	}
	if err := dir.Chmod(0o755); err != nil {
		return fmt.Errorf("volume directory: %w", err)
	}
	return nil
}

// openDir opens a volume directory without following a symlink.
func (d *Driver) openDir(name string) (*os.File, error) {
	fd, err := unix.Openat(int(d.root.Fd()), name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume directory: %w", err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(d.cfg.VolumeRoot, name)), nil
}

// removeDir removes a volume directory and what it holds (at most a stale
// socket), through directory descriptors only.
func (d *Driver) removeDir(name string) error {
	if err := mounts.Detach(d.root, name); err != nil {
		return err
	}
	dir, err := d.openDir(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := dir.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if uerr := unix.Unlinkat(int(dir.Fd()), n, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
				err = uerr
			}
		}
	}
	dir.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(int(d.root.Fd()), name, unix.AT_REMOVEDIR)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
