package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RecordsDir is the directory of the records inside the state directory.
const RecordsDir = "volumes"

const (
	recordExt     = ".json"
	recordVersion = 1
	// maxRecord bounds what is read of a record; one is a few hundred
	// bytes.
	maxRecord = 64 << 10
	// maxName keeps a record's name, and the name it is moved aside to,
	// within a file name's 255 bytes.
	maxName = 200
	// quarantineMark and the time follow the file name of a record moved
	// aside: <name>.json.corrupt-20060102T150405Z.
	quarantineMark = ".corrupt-"
	// migratedSuffix follows state.json once it is migrated; it is kept,
	// never read again.
	migratedSuffix = ".migrated"
)

// ErrName is returned for a volume name that cannot be a record's file
// name.
var ErrName = errors.New("volume name cannot name a record")

// Store reads and writes the records of one state directory.
type Store struct {
	dir string
	now func() time.Time
}

// New returns a Store for dir, creating dir (0700) when missing. A file
// where dir should be is moved aside, so that the plugin starts.
func New(dir string) (*Store, error) {
	s := &Store{dir: dir, now: time.Now}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fi, lerr := os.Lstat(dir)
		if lerr != nil || fi.IsDir() {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		if _, merr := s.moveAside(dir); merr != nil {
			return nil, fmt.Errorf("state directory: %w; moving it aside: %v", err, merr)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	return s, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// RecordPath is the path of name's record.
func (s *Store) RecordPath(name string) string {
	return filepath.Join(s.dir, RecordsDir, name+recordExt)
}

func (s *Store) recordsDir() string { return filepath.Join(s.dir, RecordsDir) }

// CheckName says whether name can name a record: letters, digits, '_',
// '.' and '-', starting with a letter or digit, at most 200 bytes. Such
// a name is one path element, never "." or "..", and never the name of a
// temporary file (those start with '.').
func CheckName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("%w: %d bytes, want 1 to %d", ErrName, len(name), maxName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return fmt.Errorf("%w: %q", ErrName, name)
		}
	}
	return nil
}

type record struct {
	Version int     `json:"version"`
	Volume  *Volume `json:"volume"`
}

// ParseRecord reads the bytes of name's record. Anything but one whole
// record of this version, for this name, with positive mount counts, is
// ErrCorrupt.
func ParseRecord(name string, b []byte) (*Volume, error) {
	var r record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the record", ErrCorrupt)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrCorrupt, r.Version, recordVersion)
	}
	if r.Volume == nil {
		return nil, fmt.Errorf("%w: no volume in the record", ErrCorrupt)
	}
	if r.Volume.Name != name {
		return nil, fmt.Errorf("%w: the record names volume %q", ErrCorrupt, r.Volume.Name)
	}
	for _, n := range r.Volume.Mounts {
		if n <= 0 {
			return nil, fmt.Errorf("%w: a mount count of %d", ErrCorrupt, n)
		}
	}
	return r.Volume, nil
}

func encodeRecord(v *Volume) ([]byte, error) {
	b, err := json.Marshal(record{Version: recordVersion, Volume: v})
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return append(b, '\n'), nil
}

// Put writes v's record, atomically and durably. On error the previous
// record is left as it was. Callers serialise Puts and Deletes of one
// name.
func (s *Store) Put(v *Volume) error {
	if err := CheckName(v.Name); err != nil {
		return err
	}
	b, err := encodeRecord(v)
	if err != nil {
		return err
	}
	if err := os.Mkdir(s.recordsDir(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("records directory: %w", err)
	}
	return writeAtomic(s.recordsDir(), v.Name+recordExt, b, true)
}

// Delete removes name's record, durably. A missing record is no error.
func (s *Store) Delete(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if err := os.Remove(s.RecordPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove record: %w", err)
	}
	return syncDir(s.recordsDir())
}

// PutAll writes many records at once, as Put would one by one, with one
// sync of the filesystem for all of them: for seeding and migration.
func (s *Store) PutAll(vols map[string]*Volume) error {
	if err := os.Mkdir(s.recordsDir(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("records directory: %w", err)
	}
	return s.writeRecords(s.recordsDir(), vols, false)
}

// writeRecords writes vols into dir and syncs the filesystem once. With
// fresh, dir is a new directory no one reads before it is renamed into
// place, so each record is written straight to its name.
func (s *Store) writeRecords(dir string, vols map[string]*Volume, fresh bool) error {
	for name, v := range vols {
		if v.Name != name {
			return fmt.Errorf("record %q names volume %q", name, v.Name)
		}
		if err := CheckName(name); err != nil {
			return err
		}
		b, err := encodeRecord(v)
		if err != nil {
			return err
		}
		if fresh {
			err = os.WriteFile(filepath.Join(dir, name+recordExt), b, 0o600)
		} else {
			err = writeAtomic(dir, name+recordExt, b, false)
		}
		if err != nil {
			return fmt.Errorf("write state: %w", err)
		}
	}
	return syncFS(dir)
}

// Damage is a record, or a whole layout, that could not be read.
type Damage struct {
	// Name is the volume whose record it was; empty when the damage names
	// no one volume (the records directory, state.json, a stray file).
	Name string
	// Path is where it was, and MovedTo where it is now: empty when it
	// could not be moved aside (Err says why).
	Path, MovedTo string
	Err           error
}

// Loaded is what Load found.
type Loaded struct {
	Volumes map[string]*Volume
	Damaged []Damage
	// Migrated counts the volumes migrated from state.json, kept as
	// MigratedFrom.
	Migrated     int
	MigratedFrom string
	// Quarantined lists, per volume name, the records of it moved aside
	// at this or an earlier start, oldest first.
	Quarantined map[string][]string
}

// Load reads every record. Before that it migrates a single-file state
// (a newer build renames state.json once migrated, so one that exists
// was written since, by an older build, and is the newest state). A
// record that cannot be read is moved aside as <name>.json.corrupt-<time>
// and reported; so is a records directory that cannot be read, and a
// state.json that cannot. Load fails only when not even an empty records
// directory can be had.
func (s *Store) Load() (*Loaded, error) {
	l := &Loaded{Volumes: map[string]*Volume{}, Quarantined: map[string][]string{}}
	// A migration a crash interrupted: state.json is still there.
	if left, _ := filepath.Glob(filepath.Join(s.dir, "."+RecordsDir+".migrating-*")); len(left) > 0 {
		for _, p := range left {
			os.RemoveAll(p)
		}
	}
	if _, err := os.Lstat(s.LegacyPath()); err == nil {
		s.migrate(l)
	}
	if err := s.ensureRecordsDir(l); err != nil {
		return l, err
	}
	return l, s.scan(l, true)
}

// Read reads every record and changes nothing: unreadable records are
// reported, not moved.
func (s *Store) Read() (*Loaded, error) {
	l := &Loaded{Volumes: map[string]*Volume{}, Quarantined: map[string][]string{}}
	return l, s.scan(l, false)
}

// ensureRecordsDir makes the records directory, moving aside whatever
// stands in its place and cannot be read as one.
func (s *Store) ensureRecordsDir(l *Loaded) error {
	dir := s.recordsDir()
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("records directory: %w", err)
		}
		return syncDir(s.dir)
	}
	bad := err
	if err == nil && !fi.IsDir() {
		bad = fmt.Errorf("%w: not a directory but %s", ErrCorrupt, typeName(fi.Mode()))
	}
	if bad == nil {
		f, err := os.Open(dir)
		if err == nil {
			_, err = f.Readdirnames(1)
			f.Close()
			if err == io.EOF {
				err = nil
			}
		}
		bad = err
	}
	if bad == nil {
		return nil
	}
	moved, merr := s.moveAside(dir)
	l.Damaged = append(l.Damaged, Damage{Path: dir, MovedTo: moved, Err: bad})
	if merr != nil {
		return fmt.Errorf("records directory %s cannot be read (%v) nor moved aside: %w", dir, bad, merr)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("records directory: %w", err)
	}
	return syncDir(s.dir)
}

// scan reads the records directory into l.
func (s *Store) scan(l *Loaded, repair bool) error {
	dir := s.recordsDir()
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) && !repair {
		return nil
	}
	if err != nil {
		return fmt.Errorf("records directory: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("records directory: %w", err)
	}
	sort.Strings(names)
	for _, fn := range names {
		switch {
		case strings.HasPrefix(fn, "."):
			// A temporary file a crash left behind: its rename never
			// happened, so the record it would have replaced is whole.
			if repair {
				os.Remove(filepath.Join(dir, fn))
			}
		case strings.HasSuffix(fn, recordExt):
			name := strings.TrimSuffix(fn, recordExt)
			v, err := readRecord(d, fn, name)
			if err == nil {
				l.Volumes[name] = v
				continue
			}
			dm := Damage{Path: filepath.Join(dir, fn), Err: err}
			if CheckName(name) == nil {
				dm.Name = name
			}
			if repair {
				if dm.MovedTo, err = s.moveAside(dm.Path); err != nil {
					dm.Err = fmt.Errorf("%w; moving it aside failed: %v", dm.Err, err)
				} else if dm.Name != "" {
					l.Quarantined[name] = append(l.Quarantined[name], dm.MovedTo)
				}
			}
			l.Damaged = append(l.Damaged, dm)
		default:
			if i := strings.LastIndex(fn, recordExt+quarantineMark); i > 0 {
				name := fn[:i]
				l.Quarantined[name] = append(l.Quarantined[name], filepath.Join(dir, fn))
			}
		}
	}
	return nil
}

// readRecord reads one record through the directory's descriptor: no
// symlink is followed, and anything but a small regular file is damage.
func readRecord(dir *os.File, fn, name string) (*Volume, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	fd, err := unix.Openat(int(dir.Fd()), fn, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open: %v", ErrCorrupt, err)
	}
	f := os.NewFile(uintptr(fd), fn)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a file but %s", ErrCorrupt, typeName(fi.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %v", ErrCorrupt, err)
	}
	if len(b) > maxRecord {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, maxRecord)
	}
	return ParseRecord(name, b)
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a file"
}

// moveAside renames path to path.corrupt-<time>, durably, and returns
// the new path.
func (s *Store) moveAside(path string) (string, error) {
	to := path + quarantineMark + s.now().UTC().Format("20060102T150405Z")
	for i := 2; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			break
		}
		to = fmt.Sprintf("%s%s%s-%d", path, quarantineMark, s.now().UTC().Format("20060102T150405Z"), i)
	}
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, syncDir(filepath.Dir(path))
}

// migrate turns state.json into records: all of them are written to a
// new directory and synced, the directory takes the records directory's
// place, and only then is state.json renamed state.json.migrated. A
// crash before that leaves state.json, and the next start migrates it
// again. A state.json that cannot be read is moved aside.
func (s *Store) migrate(l *Loaded) {
	vols, err := s.ReadLegacy()
	if err != nil {
		dm := Damage{Path: s.LegacyPath(), Err: err}
		if dm.MovedTo, err = s.moveAside(dm.Path); err != nil {
			dm.Err = fmt.Errorf("%w; moving it aside failed: %v", dm.Err, err)
		}
		l.Damaged = append(l.Damaged, dm)
		return
	}
	good := make(map[string]*Volume, len(vols))
	for name, v := range vols {
		if err := CheckName(name); err != nil {
			// Kept in state.json.migrated; no record can hold it.
			l.Damaged = append(l.Damaged, Damage{Path: s.LegacyPath(), Err: fmt.Errorf("volume %q is not migrated: %w", name, err)})
			continue
		}
		good[name] = v
	}
	tmp, err := os.MkdirTemp(s.dir, "."+RecordsDir+".migrating-")
	if err == nil {
		err = s.writeRecords(tmp, good, true)
	}
	if err == nil {
		err = os.Chmod(tmp, 0o700)
	}
	if err == nil {
		if _, lerr := os.Lstat(s.recordsDir()); lerr == nil {
			// Records of a newer build, older than state.json: kept.
			_, err = s.moveAside(s.recordsDir())
		}
	}
	if err == nil {
		err = os.Rename(tmp, s.recordsDir())
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err == nil {
		err = os.Rename(s.LegacyPath(), s.LegacyPath()+migratedSuffix)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		// The volumes are served from state.json all the same; the next
		// start migrates it again.
		maps.Copy(l.Volumes, good)
		l.Damaged = append(l.Damaged, Damage{Path: s.LegacyPath(), MovedTo: s.LegacyPath(),
			Err: fmt.Errorf("migration to records failed, state.json is kept and migrated again at the next start (changes made until then are lost then): %w", err)})
		return
	}
	l.Migrated, l.MigratedFrom = len(good), s.LegacyPath()+migratedSuffix
}

// writeAtomic writes data to dir/name through a temporary file that is
// synced and renamed; with durable, the directory is synced too.
func writeAtomic(dir, name string, data []byte, durable bool) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if durable {
		if err = tmp.Sync(); err != nil {
			return fmt.Errorf("sync state: %w", err)
		}
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	if err = os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	if durable {
		return syncDir(dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}

// syncFS flushes the filesystem dir is on: every file written to it
// without a sync of its own, then dir itself.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}
