package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sockrelay/sockrelay/internal/state"
)

// state export writes the records as the single file an older build
// reads, and that file migrates back to the same records.
func TestStateExport(t *testing.T) {
	dir := t.TempDir()
	store, err := state.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	vols := map[string]*state.Volume{
		"a": {Name: "a", Mode: "relay", Socket: "docker.sock", Target: "/var/run/docker.sock", UID: 100000, GID: 100000, Perm: 0o660,
			Options: map[string]string{"uid": "0", "gid": "0", "perm": "0660", "mode_chosen": "auto: why"}, Mounts: map[string]int{"id": 1}},
		"b": {Name: "b", Mode: "idmap", Socket: "docker.sock", Target: "/var/run/docker.sock", Rebuilt: "rebuilt"},
	}
	if err := store.PutAll(vols); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		setup   func(t *testing.T)
		wantErr string
		wantOut string
	}{
		{"no subcommand", []string{"state"}, nil, "no subcommand", ""},
		{"unknown subcommand", []string{"state", "import"}, nil, `unknown subcommand "import"`, ""},
		{"no records", []string{"state", "export", "-state-dir", t.TempDir()}, nil, "holds no records directory", ""},
		{"extra argument", []string{"state", "export", "-state-dir", dir, "x"}, nil, `unexpected argument "x"`, ""},
		{"to a file", []string{"state", "export", "-state-dir", dir, "-o", filepath.Join(dir, "out.json")}, nil, "", "wrote 2 volume(s) to " + filepath.Join(dir, "out.json")},
		{"in place", []string{"state", "export", "-state-dir", dir}, nil, "", "wrote 2 volume(s) to " + store.LegacyPath()},
		{"damaged refused", []string{"state", "export", "-state-dir", dir, "-o", filepath.Join(dir, "no.json")}, func(t *testing.T) {
			os.WriteFile(store.RecordPath("c"), []byte("junk"), 0o600)
		}, "1 record(s) cannot be read, nothing written", ""},
		{"damaged partial", []string{"state", "export", "-state-dir", dir, "-partial", "-o", filepath.Join(dir, "part.json")}, nil, "", "wrote 2 volume(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, envOf(nil), &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(stdout.String(), tt.wantOut) {
				t.Fatalf("got %v, stdout %q; want nil, %q", err, stdout.String(), tt.wantOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "no.json")); !os.IsNotExist(err) {
		t.Errorf("refused export: got a file (%v), want none", err)
	}
	// The exported file is what an older build reads, with no field it
	// does not know; a newer build migrates it back to the same volumes.
	b, err := os.ReadFile(filepath.Join(dir, "out.json"))
	if err != nil || strings.Contains(string(b), "rebuilt") || !strings.Contains(string(b), `"version":1`) {
		t.Fatalf("exported: got %s, %v; want version 1, no rebuilt field", b, err)
	}
	os.Remove(store.RecordPath("c"))
	l, err := store.Load() // migrates state.json, written "in place"
	if err != nil || l.Migrated != 2 {
		t.Fatalf("Load of the export: got %v, migrated %d, want 2", err, l.Migrated)
	}
	want := vols["b"].Clone()
	want.Rebuilt = ""
	if !reflect.DeepEqual(l.Volumes["a"], vols["a"]) || !reflect.DeepEqual(l.Volumes["b"], want) {
		t.Errorf("migrated back: got %+v, %+v; want %+v, %+v", l.Volumes["a"], l.Volumes["b"], vols["a"], want)
	}
}
