package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sockrelay/sockrelay/internal/state"
)

const stateUsage = `usage: sockrelay state export [-state-dir DIR] [-o FILE] [-partial]

Writes the plugin's volumes, kept as a record per volume, as the single
state file (state.json) that builds from before records read: the way back
to such a build. Run it with the plugin disabled, on the host, with
-state-dir the plugin's state directory there
(<DockerRootDir>/plugins/<id>/propagated-mount/.sockrelay). A build with
records migrates a state.json it finds again, so the file may stay.
`

// runState runs `sockrelay state SUBCOMMAND`.
func runState(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprint(stderr, stateUsage)
		if len(args) == 0 {
			return errors.New("state: no subcommand given")
		}
		return fmt.Errorf("state: unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("state export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, stateUsage) }
	dir := fs.String("state-dir", "/mnt/volumes/.sockrelay", "the plugin's state directory")
	out := fs.String("o", "", "the file to write (default: state.json in the state directory)")
	partial := fs.Bool("partial", false, "write the volumes whose records read even when some do not")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("state export: unexpected argument %q", fs.Arg(0))
	}
	if fi, err := os.Stat(filepath.Join(*dir, state.RecordsDir)); err != nil || !fi.IsDir() {
		return fmt.Errorf("state export: %s holds no records directory (%s): give the plugin's state directory with -state-dir", *dir, state.RecordsDir)
	}
	store, err := state.New(*dir)
	if err != nil {
		return fmt.Errorf("state export: %w", err)
	}
	l, err := store.Read()
	if err != nil {
		return fmt.Errorf("state export: %w", err)
	}
	if len(l.Damaged) > 0 {
		var bad []string
		for _, dm := range l.Damaged {
			bad = append(bad, fmt.Sprintf("%s (%v)", dm.Path, dm.Err))
		}
		if !*partial {
			return fmt.Errorf("state export: %d record(s) cannot be read, nothing written: %s; start the plugin once (it moves them aside and rebuilds what it can), or pass -partial to leave their volumes out",
				len(l.Damaged), strings.Join(bad, "; "))
		}
		fmt.Fprintf(stderr, "left out, unreadable: %s\n", strings.Join(bad, "; "))
	}
	path := *out
	if path == "" {
		path = store.LegacyPath()
	}
	if err := state.WriteLegacy(path, l.Volumes); err != nil {
		return fmt.Errorf("state export: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %d volume(s) to %s\n", len(l.Volumes), path)
	return nil
}
