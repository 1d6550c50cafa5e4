package driver

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/sockrelay/sockrelay/internal/owner"
	"github.com/sockrelay/sockrelay/internal/state"
)

// chosenKey keeps Volume.Chosen among a record's options, so that the
// state file's format needs no field for it; it is no volume option (a
// Create that gives it is refused as unknown), and view takes it out
// again before a mode sees the options.
const chosenKey = "mode_chosen"

// recordOf is the persisted record of a new volume.
func recordOf(v *Volume, createdAt time.Time, mounts map[string]int) *state.Volume {
	rec := &state.Volume{
		Name: v.Name, CreatedAt: createdAt, Mode: v.Mode, Socket: v.Socket, Target: v.Target,
		Options: maps.Clone(v.Options), Mounts: mounts,
	}
	if v.Chosen != "" {
		if rec.Options == nil {
			rec.Options = map[string]string{}
		}
		rec.Options[chosenKey] = v.Chosen
	}
	if v.Remap != nil {
		rec.Remap = &state.Remap{UID: v.Remap.UID, GID: v.Remap.GID, Size: v.Remap.Size}
	}
	// The fields an older build reads.
	if o, err := v.SocketOwner(); err == nil {
		rec.UID, rec.GID, rec.Perm = uint32(o.UID), uint32(o.GID), uint32(o.Perm)
	}
	rec.Policy = v.Options[optPolicy]
	return rec
}

// view is the Volume a record describes.
func (d *Driver) view(rec *state.Volume) *Volume {
	v := &Volume{
		Name: rec.Name, Mode: rec.Mode, Socket: rec.Socket, Target: rec.Target,
		Upstream: d.upstream(rec.Target), Options: maps.Clone(rec.Options),
	}
	if rec.Remap != nil {
		v.Remap = &owner.Range{Remapped: true, UID: rec.Remap.UID, GID: rec.Remap.GID, Size: rec.Remap.Size}
	}
	if v.Options == nil {
		v.Options = d.legacyOptions(rec)
	}
	v.Chosen = v.Options[chosenKey]
	delete(v.Options, chosenKey)
	return v
}

// legacyOptions are the options of a record from before records kept
// them: its owner fields, for a mode that takes owner options, and its
// policy.
func (d *Driver) legacyOptions(rec *state.Volume) map[string]string {
	opts := map[string]string{}
	m := findMode(d.cfg.Modes, rec.Mode)
	if m == nil {
		return opts
	}
	takes := func(key string) bool {
		return slices.ContainsFunc(m.Options(), func(o Option) bool { return o.Key == key })
	}
	if takes("uid") {
		uid, gid := rec.UID, rec.GID
		if r := rec.Remap; r != nil && uid >= r.UID && gid >= r.GID {
			uid, gid = uid-r.UID, gid-r.GID
		}
		opts["uid"] = strconv.FormatUint(uint64(uid), 10)
		opts["gid"] = strconv.FormatUint(uint64(gid), 10)
		opts["perm"], _ = parsePerm(strconv.FormatUint(uint64(rec.Perm), 8))
	}
	if takes(optPolicy) && rec.Policy != "" {
		opts[optPolicy] = rec.Policy
	}
	return opts
}

// sameVolume reports whether a Create of rec asks for the volume old is.
func (d *Driver) sameVolume(old, rec *state.Volume) bool {
	a, b := d.view(old), d.view(rec)
	// Why auto chose is not part of what was asked: a probe that answers
	// otherwise now leaves the same mode for another reason.
	return a.Mode == b.Mode && a.Socket == b.Socket && a.Target == b.Target && maps.Equal(a.Options, b.Options) &&
		(a.Remap == nil) == (b.Remap == nil) && (a.Remap == nil || *a.Remap == *b.Remap)
}
