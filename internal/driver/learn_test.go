package driver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// learnUpstream answers every request 200 with an empty JSON object, and a
// volume inspect as a local volume: enough of dockerd for the proxy.
func learnUpstream(t *testing.T, sock string) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "/volumes/") {
			fmt.Fprintf(w, `{"Name":"x","Driver":"local"}`)
			return
		}
		w.Write([]byte("{}"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

type learnEnv struct {
	mode *PolicyMode
	dir  *os.File
	vol  *Volume
	sock string
}

func newLearnEnv(t *testing.T, learnDir string) *learnEnv {
	t.Helper()
	base, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	up := filepath.Join(base, "up.sock")
	learnUpstream(t, up)
	dir, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	if learnDir == "" {
		learnDir = filepath.Join(base, "log", "sockrelay", "learned")
	}
	a := audit.New(io.Discard)
	t.Cleanup(func() { a.Close() })
	return &learnEnv{
		mode: &PolicyMode{Log: testLog(t), Audit: a, Learn: LearnDir{Dir: learnDir, Shown: "/var/log/sockrelay/learned"}},
		dir:  dir,
		vol: &Volume{Name: "ci", Mode: "policy", Socket: "docker.sock", Upstream: up, Options: map[string]string{
			"uid": strconv.Itoa(os.Getuid()), "gid": strconv.Itoa(os.Getgid()), "perm": "0600", "policy": "learn",
		}},
		sock: filepath.Join(base, "docker.sock"),
	}
}

func (e *learnEnv) start(t *testing.T) Server {
	t.Helper()
	if err := e.mode.Check(e.vol); err != nil {
		t.Fatalf("Check: %v", err)
	}
	srv, err := e.mode.Start(context.Background(), Dir{RW: e.dir, View: e.dir}, e.vol)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return srv
}

func (e *learnEnv) do(t *testing.T, method, target, body string) {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.sock)
	}}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(method, "http://docker"+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("%s %s: got %d, want 200", method, target, res.StatusCode)
	}
}

// learnedStatus waits for n requests learned (a request's line, and what
// it taught, come after its answer), and returns the Status.
func learnedStatus(t *testing.T, srv Server, n int) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := map[string]any{}
		srv.Status(st)
		if st["learned_requests"] == n || time.Now().After(deadline) {
			return st
		}
	}
}

// TestLearnVolume: a learning volume serves as full, writes the learned
// policy (valid for file:NAME) and shows it in Status; after a restart
// it goes on from what it learned.
func TestLearnVolume(t *testing.T) {
	e := newLearnEnv(t, "")
	srv := e.start(t)
	e.do(t, "GET", "/v1.41/containers/json", "")
	e.do(t, "POST", "/v1.41/containers/create", `{"Image":"a","HostConfig":{"Privileged":true,"Binds":["/srv/data:/d"]}}`)
	st := learnedStatus(t, srv, 2)
	if st["learned_requests"] != 2 || st["learned_file"] != "/var/log/sockrelay/learned/ci.yaml" || st["policy"] != "learn:ci" {
		t.Errorf("Status while learning: got %v", st)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(e.mode.Learn.Dir, "ci.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(e.mode.Learn.Dir, "ci")
	if err != nil {
		t.Fatalf("the learned file does not load as file:ci: %v\n%s", err, data)
	}
	for _, want := range []string{"privileged: true", `- "/srv/data"`, `path: "/containers/json"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the learned file lacks %q:\n%s", want, data)
		}
	}
	if d := p.Decide(policy.Request{Method: "DELETE", Target: "/images/x"}); d.Allow {
		t.Error("the learned file allows DELETE /images/x, never seen")
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("learned file mode: got %v %v, want 0640", fi.Mode(), err)
	}

	// A restart goes on from the records.
	srv = e.start(t)
	e.do(t, "GET", "/v1.41/images/json", "")
	st = learnedStatus(t, srv, 3)
	if st["learned_requests"] != 3 {
		t.Errorf("Status after a restart: got %v, want 3 learned requests", st)
	}
	srv.Stop()
	data, _ = os.ReadFile(file)
	for _, want := range []string{"privileged: true", `path: "/images/json"`, "3 requests seen"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("after a restart, the learned file lacks %q:\n%s", want, data)
		}
	}
	ents, _ := os.ReadDir(e.mode.Learn.Dir)
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	if strings.Join(names, " ") != "ci.records ci.yaml" {
		t.Errorf("learned directory: got %v, want ci.records and ci.yaml only", names)
	}
}

// TestLearnVolumeBadDir: a learning volume whose directory cannot be
// made is refused at create, saying why.
func TestLearnVolumeBadDir(t *testing.T) {
	base := t.TempDir()
	blocker := filepath.Join(base, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newLearnEnv(t, filepath.Join(blocker, "learned"))
	err := e.mode.Check(e.vol)
	if err == nil || !strings.Contains(err.Error(), "cannot make the directory of learned policies /var/log/sockrelay/learned") {
		t.Fatalf("Check: got %v, want a clear error", err)
	}
	e.mode.Learn = LearnDir{}
	if err := e.mode.Check(e.vol); err == nil || !strings.Contains(err.Error(), "no directory for learned policies") {
		t.Fatalf("Check without a directory: got %v", err)
	}
	e.vol.Options["policy"] = "learn:bad/name"
	if _, err := parsePolicyRef("learn:bad/name"); err == nil {
		t.Error("parsePolicyRef(learn:bad/name): got no error")
	}
	for _, ok := range []string{"learn", "learn:ci", "learn:a.b-c_1"} {
		if _, err := parsePolicyRef(ok); err != nil {
			t.Errorf("parsePolicyRef(%s): %v", ok, err)
		}
	}
}
