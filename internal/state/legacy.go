package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FileName is the single-file layout's state file inside the state
// directory: read once to migrate it, and written by WriteLegacy.
const FileName = "state.json"

// legacyVersion is the single file's format.
const legacyVersion = 1

// ErrCorrupt is returned when a state file or a record cannot be read as
// one.
var ErrCorrupt = errors.New("state is corrupt")

type legacyFile struct {
	Version int                `json:"version"`
	Volumes map[string]*Volume `json:"volumes"`
}

// LegacyPath is the single-file layout's path.
func (s *Store) LegacyPath() string { return filepath.Join(s.dir, FileName) }

// ReadLegacy reads the single-file layout. A missing file is an empty
// state.
func (s *Store) ReadLegacy() (map[string]*Volume, error) {
	b, err := os.ReadFile(s.LegacyPath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Volume{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return parseLegacy(s.LegacyPath(), b)
}

func parseLegacy(path string, b []byte) (map[string]*Volume, error) {
	var f legacyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: %w: data after the state", path, ErrCorrupt)
	}
	if f.Version != legacyVersion {
		return nil, fmt.Errorf("%s: %w: version %d, this build reads %d", path, ErrCorrupt, f.Version, legacyVersion)
	}
	if f.Volumes == nil {
		f.Volumes = map[string]*Volume{}
	}
	for name, v := range f.Volumes {
		if v == nil || v.Name != name {
			return nil, fmt.Errorf("%s: %w: record %q does not match its key", path, ErrCorrupt, name)
		}
	}
	return f.Volumes, nil
}

// WriteLegacy writes vols in the single-file layout, atomically and
// durably, to path (LegacyPath for a downgrade in place). A build from
// before per-volume records reads it, and refuses fields it does not
// know, so what only records keep is left out.
func WriteLegacy(path string, vols map[string]*Volume) error {
	out := make(map[string]*Volume, len(vols))
	for name, v := range vols {
		c := v.Clone()
		c.Rebuilt = ""
		out[name] = c
	}
	b, err := json.Marshal(legacyFile{Version: legacyVersion, Volumes: out})
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeAtomic(filepath.Dir(path), filepath.Base(path), append(b, '\n'), true)
}
