// Package state persists sockrelay's volumes atomically: a new state is
// written to a temporary file, synced, and renamed over the old one, so a
// crash at any point leaves either the old state or the new one, whole.
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
	"sync"
	"time"
)

// FileName is the state file inside the state directory.
const FileName = "state.json"

// version is the on-disk format; Load refuses any other.
const version = 1

// ErrCorrupt is returned by Load when the state file cannot be read as
// state. The plugin refuses to start rather than forget volumes: the daemon
// deletes its record of any volume the plugin says it does not know.
var ErrCorrupt = errors.New("state file is corrupt")

// Volume is the persisted record of one volume.
type Volume struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Mode      string    `json:"mode"`
	// Socket is the socket's file name in the volume directory.
	Socket string `json:"socket"`
	// Target is the upstream socket as a host path.
	Target string `json:"target"`
	// Options are the mode's options, checked and in canonical form.
	// Records written before they were kept have none: their options are
	// the fields below.
	Options map[string]string `json:"options,omitempty"`
	// UID and GID (host ids that own the socket), Perm and Policy are the
	// options as the first layout kept them. They are still written, so
	// that an older build reads the record as before (a downgrade).
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Perm   uint32 `json:"perm"`
	Policy string `json:"policy,omitempty"`
	// Remap is the daemon's remap range when the volume was created; nil
	// for a daemon without userns-remap.
	Remap *Remap `json:"remap,omitempty"`
	// Mounts counts Mount calls per mount ID. dockerd reuses an ID (docker
	// cp on a running container), so it is a count, not a set.
	Mounts map[string]int `json:"mounts,omitempty"`
}

// Remap is a daemon's remap range: host ids UID and GID are a remapped
// container's root, and Size ids follow each.
type Remap struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Size uint32 `json:"size"`
}

// Clone returns a deep copy.
func (v *Volume) Clone() *Volume {
	c := *v
	c.Mounts = maps.Clone(v.Mounts)
	c.Options = maps.Clone(v.Options)
	if v.Remap != nil {
		r := *v.Remap
		c.Remap = &r
	}
	return &c
}

// MountCount is the sum of the per-ID counts.
func (v *Volume) MountCount() int {
	n := 0
	for _, c := range v.Mounts {
		n += c
	}
	return n
}

type file struct {
	Version int                `json:"version"`
	Volumes map[string]*Volume `json:"volumes"`
}

// Store reads and writes the state file of one directory.
type Store struct {
	dir string
	mu  sync.Mutex // serialises writers
}

// New returns a Store for dir, creating dir (0700) when missing.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Load reads the volumes. A missing file is an empty state.
func (s *Store) Load() (map[string]*Volume, error) {
	b, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Volume{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", s.Path(), ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: %w: data after the state", s.Path(), ErrCorrupt)
	}
	if f.Version != version {
		return nil, fmt.Errorf("%s: %w: version %d, this build reads %d", s.Path(), ErrCorrupt, f.Version, version)
	}
	if f.Volumes == nil {
		f.Volumes = map[string]*Volume{}
	}
	for name, v := range f.Volumes {
		if v == nil || v.Name != name {
			return nil, fmt.Errorf("%s: %w: record %q does not match its key", s.Path(), ErrCorrupt, name)
		}
	}
	return f.Volumes, nil
}

// Save replaces the state with vols, atomically and durably. On error the
// previous state is left as it was.
func (s *Store) Save(vols map[string]*Volume) error {
	b, err := json.Marshal(file{Version: version, Volumes: vols})
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeAtomic(s.dir, FileName, append(b, '\n'))
}

func writeAtomic(dir, name string, data []byte) (err error) {
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
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	if err = os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}
