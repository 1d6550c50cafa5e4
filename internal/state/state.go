// Package state persists sockrelay's volumes: each volume is a small
// record file of its own, written atomically (temporary file, fsync,
// rename, fsync of the directory), so that a change touches one record and
// a crash at any point leaves either the old record or the new one, whole.
// A record that cannot be read costs its own volume only: Load moves it
// aside and reports it, and reads every other record.
//
// The first layout kept every volume in one file, state.json. Load
// migrates it, and WriteLegacy writes it again for a downgrade.
package state

import (
	"maps"
	"time"
)

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
	// Rebuilt says how the record was rebuilt after the one before it was
	// lost; empty for a record written by Create. Only records keep it:
	// the single-file layout has no field for it.
	Rebuilt string `json:"rebuilt,omitempty"`
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
