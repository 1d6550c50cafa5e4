package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/sockrelay/sockrelay/internal/state"
)

// A volume whose record is lost: its record could not be read (moved
// aside by the store), or is missing while the volume's directory is
// there. The volume stays listed, and its Get answers, so that the daemon
// keeps it (dockerd drops, at its start, a volume whose driver's Get
// fails) and the admin sees in its Status what happened. Recover asks the
// daemon for the options the volume was created with and rebuilds the
// record; failing that, the Status says what the admin must do.
type lostVolume struct {
	why     string   // what happened to the record
	aside   []string // where its unreadable records were moved
	pending bool     // Recover has yet to ask the daemon
	outcome string   // what Recover found, when it could not rebuild
}

// lostStatusKey marks a lost volume's Status. Recover finds it in the
// daemon's answer: the daemon asked this plugin's Get, so the volume the
// daemon holds under the name is this plugin's, not another driver's.
const lostStatusKey = "record"

// lostStatusValue is lostStatusKey's value.
const lostStatusValue = "lost"

// rebuiltID starts the mount IDs a rebuilt record counts, one per
// container the daemon said was running with the volume.
const rebuiltID = "rebuilt-"

// Recovery bounds: the daemon may not answer until the plugin is enabled,
// which follows its first answers on the plugin socket. Variables for
// tests.
var (
	recoverFor   = 2 * time.Minute
	recoverFirst = 500 * time.Millisecond
	recoverMax   = 10 * time.Second
)

// DaemonVolume is what the daemon holds of a volume (GET /volumes/NAME),
// and the running containers that use it.
type DaemonVolume struct {
	// Found is false when the daemon has no volume of that name.
	Found   bool
	Driver  string
	Options map[string]string
	Status  map[string]any
	Running []string
}

// load reads the records, and keeps as lost the volumes whose record is
// unreadable or missing. It never fails: damage is logged and shown.
func (d *Driver) load() {
	l, err := d.cfg.Store.Load()
	if err != nil {
		d.log.Error("the plugin's state cannot be used; no volume can be created until it can: fix the state directory (see the error) and restart the plugin",
			"dir", d.cfg.Store.Dir(), "err", err)
	}
	if l.Migrated > 0 || l.MigratedFrom != "" {
		d.log.Info("state migrated to a record per volume", "volumes", l.Migrated, "kept", l.MigratedFrom)
	}
	for _, dm := range l.Damaged {
		if dm.Name == "" {
			d.log.Error("plugin state unreadable; moved aside: the volumes it held are rebuilt from the daemon where their directories remain",
				"path", dm.Path, "moved_to", dm.MovedTo, "err", dm.Err)
		}
	}
	for name, rec := range l.Volumes {
		if rec.Options == nil {
			rec.Options = d.legacyOptions(rec) // written so at the next change
		}
		d.vols[name] = rec
	}
	for _, dm := range l.Damaged {
		if dm.Name == "" || d.vols[dm.Name] != nil {
			continue
		}
		why := "its record could not be read (" + dm.Err.Error() + ")"
		d.lost[dm.Name] = &lostVolume{why: why, aside: l.Quarantined[dm.Name], pending: true}
	}
	// A volume directory without a record: the record was deleted, or the
	// whole records directory was lost (Create writes the record before
	// it makes the directory, and Remove removes the directory first, so
	// no crash leaves one). Recover asks the daemon, and forgets it when
	// the daemon has no such volume.
	ents, err := d.root.ReadDir(-1)
	if err != nil {
		d.log.Error("cannot list the volume directories; volumes whose records are lost cannot be found", "dir", d.cfg.VolumeRoot, "err", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") || ValidateName(name) != nil || d.vols[name] != nil || d.lost[name] != nil {
			continue
		}
		why := "its record is missing"
		if q := l.Quarantined[name]; len(q) > 0 {
			why += "; an unreadable record of it was moved aside earlier"
		}
		d.lost[name] = &lostVolume{why: why, aside: l.Quarantined[name], pending: true}
	}
	for name, lv := range d.lost {
		d.log.Error("volume record lost; the volume stays listed, and its record is rebuilt from the daemon's options",
			"volume", name, "why", lv.why, "moved_to", strings.Join(lv.aside, ", "))
	}
}

func (d *Driver) lostVolume(name string) *lostVolume {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.lost[name]; l != nil {
		c := *l
		return &c
	}
	return nil
}

// forgetLost drops a lost volume; it reports whether there was one.
func (d *Driver) forgetLost(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.lost[name]
	delete(d.lost, name)
	return ok
}

// whatToDo is the advice for a lost volume in its present state.
func (l *lostVolume) whatToDo(name string) string {
	recreate := fmt.Sprintf("remove it (docker volume rm %s) and create it again with its options", name)
	switch {
	case l.pending:
		return "the plugin is asking the daemon for the volume's options to rebuild its record; try again in a few seconds"
	case l.outcome != "":
		return l.outcome + "; " + recreate + ", or put a good record back (docs/troubleshooting.md, Recovering a volume) and restart the plugin"
	}
	return recreate
}

// summary is a lost volume's story in one line, for errors and logs.
func (l *lostVolume) summary(name string) string {
	s := l.why
	if len(l.aside) > 0 {
		s += "; moved aside to " + l.aside[len(l.aside)-1]
	}
	return s + "; " + l.whatToDo(name)
}

func (d *Driver) describeLost(name string, l *lostVolume) *volume.Volume {
	st := map[string]any{
		lostStatusKey: lostStatusValue,
		"error":       "the plugin's record of this volume is lost: " + l.why,
		"what_to_do":  l.whatToDo(name),
		"serving":     false,
	}
	if len(l.aside) > 0 {
		st["moved_aside"] = slices.Clone(l.aside)
	}
	return &volume.Volume{Name: name, Mountpoint: d.mountpoint(name), Status: st}
}

// rebuiltMount is one of the mount IDs a rebuilt record counts, or "".
func rebuiltMount(v *state.Volume) string {
	for id := range v.Mounts {
		if strings.HasPrefix(id, rebuiltID) {
			return id
		}
	}
	return ""
}

// Recover rebuilds the records of lost volumes from what the daemon holds
// of them: the options they were created with, and the running
// containers that use them. It asks the daemon from outside every
// VolumeDriver call (the daemon calls the plugin while it answers), and
// only once the plugin socket listens. It returns when every lost volume
// is rebuilt, forgotten or given up on, or when ctx ends.
func (d *Driver) Recover(ctx context.Context) {
	d.mu.Lock()
	names := slices.Sorted(maps.Keys(d.lost))
	d.mu.Unlock()
	if len(names) == 0 {
		return
	}
	if d.cfg.AskDaemon == nil {
		for _, n := range names {
			d.settle(n, "the plugin cannot ask the daemon")
		}
		return
	}
	deadline := time.Now().Add(recoverFor)
	wait := recoverFirst
	for len(names) > 0 {
		var again []string
		var lastErr error
		for _, name := range names {
			if ctx.Err() != nil {
				return
			}
			if err := d.recoverOne(ctx, name); err != nil {
				again, lastErr = append(again, name), err
			}
		}
		names = again
		if len(names) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, n := range names {
				d.settle(n, "the daemon did not answer ("+lastErr.Error()+")")
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, recoverMax)
	}
}

// settle ends the recovery of a lost volume that cannot be rebuilt, and
// says so where the admin looks.
func (d *Driver) settle(name, outcome string) {
	d.mu.Lock()
	l := d.lost[name]
	if l != nil {
		l.pending, l.outcome = false, "its record could not be rebuilt: "+outcome
	}
	d.mu.Unlock()
	if l != nil {
		d.log.Error("volume record lost and not rebuilt", "volume", name, "why", l.why, "what_to_do", l.whatToDo(name))
	}
}

// errAskAgain marks an answer worth asking again for.
var errAskAgain = errors.New("ask again")

// recoverOne asks the daemon about one lost volume and acts on the
// answer. An error means: ask again later.
func (d *Driver) recoverOne(ctx context.Context, name string) error {
	if d.lostVolume(name) == nil {
		return nil // created or removed meanwhile
	}
	dv, err := d.cfg.AskDaemon(ctx, name)
	if err != nil {
		return err
	}
	if !dv.Found {
		// The daemon has no such volume (it was removed while the plugin
		// was away): nothing to rebuild.
		unlock := d.locks.lock(name)
		defer unlock()
		if d.forgetLost(name) {
			if err := d.removeDir(name); err != nil {
				d.log.Warn("remove the directory of a volume the daemon does not have", "volume", name, "err", err)
			}
			d.log.Info("volume without a record is unknown to the daemon too; its directory is removed", "volume", name)
		}
		return nil
	}
	if dv.Status[lostStatusKey] != lostStatusValue {
		// Another driver's volume of that name, or the daemon has not
		// asked this plugin yet (it is being enabled).
		if dv.Status == nil && dv.Driver == "local" {
			d.settle(name, "the daemon's volume of this name belongs to the local driver")
			return nil
		}
		return fmt.Errorf("%w: the daemon's answer is not from this plugin yet (driver %q)", errAskAgain, dv.Driver)
	}
	p, err := d.prepare(name, dv.Options)
	if err != nil {
		d.settle(name, "the daemon's options for it are refused now: "+err.Error())
		return nil
	}
	unlock := d.locks.lock(name)
	defer unlock()
	l := d.lostVolume(name)
	if l == nil {
		return nil
	}
	rec := p.rec
	if len(dv.Running) > 0 {
		rec.Mounts = map[string]int{}
		for _, c := range dv.Running {
			rec.Mounts[rebuiltID+shortID(c)]++
		}
	}
	rec.Rebuilt = fmt.Sprintf("%s; rebuilt at %s from the daemon's options, with a mount for each of its %d running container(s)",
		l.why, time.Now().UTC().Format(time.RFC3339), len(dv.Running))
	if err := d.makeDir(name); err != nil {
		d.settle(name, err.Error())
		return nil
	}
	if err := d.commit(name, rec); err != nil {
		d.settle(name, err.Error())
		return nil
	}
	d.log.Warn("volume record rebuilt from the daemon's options", "volume", name, "mode", p.v.Mode, "running", len(dv.Running), "why", l.why)
	if rec.MountCount() > 0 && !d.serving(name) {
		if err := d.start(rec); err != nil {
			d.log.Error("serve the socket of a rebuilt volume", "volume", name, "err", err)
		}
	}
	return nil
}
