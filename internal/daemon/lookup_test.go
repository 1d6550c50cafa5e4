package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// Each lookup is one GET whose reference dockerd resolves; a 404 is
// policy.ErrNoSuchObject, any other failure an error that says why.
func TestLookup(t *testing.T) {
	var paths []string
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.RequestURI())
		switch r.URL.Path {
		case "/containers/web/json":
			io.WriteString(w, `{"Id":"abc123","Name":"/web","HostConfig":{"Privileged":true},"Mounts":[{"Type":"volume","Driver":"sockrelay:latest"}]}`)
		case "/containers/amb/json":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"message":"multiple IDs found with provided prefix: amb"}`)
		case "/volumes/v":
			io.WriteString(w, `{"Name":"v","Driver":"local"}`)
		case "/exec/e1/json":
			io.WriteString(w, `{"ID":"e1","ContainerID":"abc123"}`)
		case "/networks":
			io.WriteString(w, `[{"Id":"h1","Name":"host","Driver":"host"}]`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"No such object"}`)
		}
	})
	l := Lookup{Client: Client{Socket: sock}, Ctx: context.Background()}
	c, err := l.Container("web")
	if err != nil || c.ID != "abc123" || !c.HostConfig.Privileged || len(c.Mounts) != 1 || c.Mounts[0].Driver != "sockrelay:latest" {
		t.Fatalf("Container(web): got %+v, %v", c, err)
	}
	if _, err := l.Container("nope"); !errors.Is(err, policy.ErrNoSuchObject) {
		t.Fatalf("Container(nope): got %v, want ErrNoSuchObject", err)
	}
	_, err = l.Container("amb")
	if err == nil || errors.Is(err, policy.ErrNoSuchObject) || !strings.Contains(err.Error(), "multiple IDs") {
		t.Fatalf("Container(amb): got %v, want the daemon's error", err)
	}
	if v, err := l.Volume("v"); err != nil || v.Driver != "local" {
		t.Fatalf("Volume(v): got %+v, %v", v, err)
	}
	if _, err := l.Volume("a/b"); !errors.Is(err, policy.ErrNoSuchObject) {
		t.Fatalf("Volume(a/b): got %v, want ErrNoSuchObject", err)
	}
	if e, err := l.Exec("e1"); err != nil || e.ContainerID != "abc123" {
		t.Fatalf("Exec(e1): got %+v, %v", e, err)
	}
	nets, err := l.HostNetworks()
	if err != nil || len(nets) != 1 || nets[0] != (policy.Network{ID: "h1", Name: "host"}) {
		t.Fatalf("HostNetworks: got %+v, %v", nets, err)
	}
	want := "/networks?filters=%7B%22driver%22%3A%5B%22host%22%5D%7D"
	if !strings.Contains(strings.Join(paths, " "), want) {
		t.Fatalf("requests %v: want %s", paths, want)
	}
	if !strings.Contains(strings.Join(paths, " "), "/volumes/a%2Fb") {
		t.Fatalf("requests %v: want the name escaped as one segment", paths)
	}
}
