package driver

import (
	"fmt"
	"strings"
	"time"

	"github.com/sockrelay/sockrelay/internal/state"
)

// Why mode=auto chose a volume's mode (Status "mode_chosen").
const (
	chosenIdmap = "auto: idmapped mounts work here and no uid, gid or perm was asked for"
	chosenOwner = "auto: uid, gid or perm was asked for, and only relay makes a socket of its own to give them to"
	// chosenNoIdmap is followed by the reason idmap cannot serve the volume.
	chosenNoIdmap = "auto: idmapped mounts do not work here: "
)

// chooseMode resolves mode=auto for v, whose remap range and upstream are
// known: idmap where an idmapped mount of the target can be made here,
// since it puts no process between the container and the daemon; relay
// otherwise, since it works on every kernel. The choice is made once, at
// Create, and kept in the volume's record: a volume keeps its mode when
// the kernel or the daemon changes.
func chooseMode(v *Volume, modes []Mode) error {
	relay := findMode(modes, relayName)
	if relay == nil {
		return fmt.Errorf("%w: this build has no mode %s; pick one of %s", ErrInvalid, relayName, strings.Join(modeNames(modes), ", "))
	}
	v.Mode, v.Chosen = relayName, chosenNoIdmap+"this build has no mode idmap"
	if m, ok := findMode(modes, idmapName).(*IdmapMode); ok {
		if err := m.Supported(v); err != nil {
			v.Chosen = chosenNoIdmap + err.Error()
		} else {
			v.Mode, v.Chosen = idmapName, chosenIdmap
		}
	}
	return fillDefaults(v, findMode(modes, v.Mode))
}

// sameAsAuto reports whether old is a volume that a Create of v, left to
// auto with no mode option, may have made: one of the modes auto chooses
// between, with that mode's defaults. Auto may choose otherwise today than
// when old was made, and a volume made before auto was the default is a
// relay volume.
func (d *Driver) sameAsAuto(old *state.Volume, v *Volume) bool {
	m := findMode(d.cfg.Modes, old.Mode)
	if m == nil || old.Mode != relayName && old.Mode != idmapName {
		return false
	}
	w := *v
	w.Mode, w.Options, w.Chosen = old.Mode, map[string]string{}, ""
	if fillDefaults(&w, m) != nil {
		return false
	}
	return d.sameVolume(old, recordOf(&w, time.Time{}, nil))
}
