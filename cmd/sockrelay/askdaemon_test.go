package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sockrelay/sockrelay/internal/daemon"
)

// askDaemon tells a volume the daemon does not have (404, "no such
// volume": the plugin then removes its directory) from every other
// answer, which is asked again.
func TestAskDaemon(t *testing.T) {
	dir, err := os.MkdirTemp("", "sra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/volumes/known":
			io.WriteString(w, `{"Name":"known","Driver":"sockrelay:latest","Options":{"perm":"0600"},"Status":{"record":"lost"}}`)
		case "/containers/json":
			io.WriteString(w, `[{"Id":"c1"}]`)
		case "/volumes/gone":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"get gone: no such volume"}`)
		case "/volumes/disabled":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"plugin \"sockrelay:latest\" not found"}`)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ask := askDaemon(daemon.Client{Socket: sock})

	dv, err := ask(t.Context(), "known")
	if err != nil || !dv.Found || dv.Options["perm"] != "0600" || dv.Status["record"] != "lost" || !slices.Equal(dv.Running, []string{"c1"}) {
		t.Errorf("known: got %+v, %v; want found, its options, status and running container", dv, err)
	}
	if dv, err := ask(t.Context(), "gone"); err != nil || dv.Found {
		t.Errorf("gone: got %+v, %v; want not found, nil", dv, err)
	}
	for _, name := range []string{"disabled", "broken"} {
		if dv, err := ask(t.Context(), name); err == nil {
			t.Errorf("%s: got %+v, nil; want an error (ask again)", name, dv)
		}
	}
}
