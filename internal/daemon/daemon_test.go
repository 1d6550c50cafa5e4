package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeDaemon serves handler on a Unix socket and returns its path.
func fakeDaemon(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "srd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestInfo(t *testing.T) {
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/info" {
			http.Error(w, "unexpected", http.StatusNotFound)
			return
		}
		io.WriteString(w, `{"DockerRootDir":"/var/lib/docker/100000.100000","SecurityOptions":["name=userns"]}`)
	})
	info, err := Client{Socket: sock}.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.DockerRootDir != "/var/lib/docker/100000.100000" || !slices.Equal(info.SecurityOptions, []string{"name=userns"}) {
		t.Fatalf("got %+v", info)
	}
}

// VolumeInUse asks for every container, stopped ones too, filtered by
// the volume's name, and says whether the daemon listed any.
func TestVolumeInUse(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   bool
	}{
		{`[]`, false},
		{`[{"Id":"abc","State":"exited"}]`, true},
	} {
		var query map[string][]string
		var all string
		sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/containers/json" {
				http.Error(w, "unexpected", http.StatusNotFound)
				return
			}
			all = r.URL.Query().Get("all")
			json.Unmarshal([]byte(r.URL.Query().Get("filters")), &query)
			io.WriteString(w, tc.answer)
		})
		got, err := Client{Socket: sock}.VolumeInUse(context.Background(), "dsock")
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("answer %s: got %v, want %v", tc.answer, got, tc.want)
		}
		if all != "1" || !slices.Equal(query["volume"], []string{"dsock"}) || len(query) != 1 {
			t.Errorf("asked all=%q filters=%v, want all=1 and only volume=[dsock]", all, query)
		}
	}
}

// A daemon that fails, answers nonsense or is not there is an error that
// says which question failed; never a guess.
func TestErrors(t *testing.T) {
	bad := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/info" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{"not":"a list"}`)
	})
	if _, err := (Client{Socket: bad}).Info(context.Background()); err == nil || !strings.Contains(err.Error(), "GET /info: status 500") {
		t.Errorf("Info from a failing daemon: got %v", err)
	}
	if _, err := (Client{Socket: bad}).VolumeInUse(context.Background(), "v"); err == nil || !strings.Contains(err.Error(), "GET /containers/json") {
		t.Errorf("VolumeInUse with a bad answer: got %v", err)
	}
	if _, err := (Client{Socket: filepath.Join(t.TempDir(), "none.sock")}).VolumeInUse(context.Background(), "v"); err == nil {
		t.Errorf("VolumeInUse without a daemon: got nil error")
	}
}

// Volume asks GET /volumes/NAME, the name escaped; a 404 is a
// StatusError. RunningWith asks for running containers only, filtered by
// the volume's name.
func TestVolumeAndRunningWith(t *testing.T) {
	var paths []string
	var all string
	var query map[string][]string
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.EscapedPath())
		switch r.URL.Path {
		case "/volumes/v1":
			io.WriteString(w, `{"Name":"v1","Driver":"sockrelay:latest","Options":{"mode":"relay"},"Status":{"record":"lost"}}`)
		case "/containers/json":
			all = r.URL.Query().Get("all")
			json.Unmarshal([]byte(r.URL.Query().Get("filters")), &query)
			io.WriteString(w, `[{"Id":"c1"},{"Id":"c2"}]`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"get x: no such volume"}`)
		}
	})
	c := Client{Socket: sock}
	v, err := c.Volume(context.Background(), "v1")
	if err != nil || v.Driver != "sockrelay:latest" || v.Options["mode"] != "relay" || v.Status["record"] != "lost" {
		t.Fatalf("Volume v1: got %+v, %v", v, err)
	}
	_, err = c.Volume(context.Background(), "a/../b")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("Volume of an unknown name: got %v, want a 404 StatusError", err)
	}
	if paths[1] != "/volumes/a%2F..%2Fb" {
		t.Errorf("path asked: got %q, want the name escaped as one element", paths[1])
	}
	ids, err := c.RunningWith(context.Background(), "v1")
	if err != nil || !slices.Equal(ids, []string{"c1", "c2"}) {
		t.Errorf("RunningWith: got %v, %v; want [c1 c2]", ids, err)
	}
	if all != "" || !slices.Equal(query["volume"], []string{"v1"}) {
		t.Errorf("RunningWith asked all=%q filters %v, want running only, volume v1", all, query)
	}
}
