package bench

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// fakeDaemon answers /_ping on a socket, like dockerd, and can stop and
// restart the way dockerd does: with a new socket.
type fakeDaemon struct {
	t    *testing.T
	path string

	pings     atomic.Int64
	restartAt atomic.Int64 // restart when the pings reach it; 0: never

	mu  sync.Mutex
	srv *http.Server
}

func newFakeDaemon(t *testing.T, path string) *fakeDaemon {
	d := &fakeDaemon{t: t, path: path}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *fakeDaemon) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	ln, err := net.Listen("unix", d.path)
	if err != nil {
		d.t.Error(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) {
		if n := d.pings.Add(1); n == d.restartAt.Load() {
			go d.restart()
		}
		io.WriteString(w, "OK")
	})
	mux.HandleFunc("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("all") != "1" {
			http.Error(w, "want all=1", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "[]")
	})
	mux.HandleFunc("GET /containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "known" {
			http.Error(w, `{"message":"No such container"}`, http.StatusNotFound)
			return
		}
		io.WriteString(w, "{}")
	})
	d.srv = &http.Server{Handler: mux}
	go d.srv.Serve(ln)
}

// stop closes the listener, which removes the socket.
func (d *fakeDaemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.srv != nil {
		d.srv.Close()
		d.srv = nil
	}
}

func (d *fakeDaemon) restart() {
	d.stop()
	d.start()
}

func hasNote(notes []string, parts ...string) bool {
	return slices.ContainsFunc(notes, func(n string) bool {
		for _, p := range parts {
			if !strings.Contains(n, p) {
				return false
			}
		}
		return true
	})
}

// A daemon that does not answer, or restarts during a /_ping figure, has
// that round of the figure left out with a note; the run goes on.
func TestDockerStepSkips(t *testing.T) {
	defer func(w time.Duration) { dockerWait = w }(dockerWait)
	dockerWait = 300 * time.Millisecond
	ctx := t.Context()
	dir := tempDir(t)
	d := newFakeDaemon(t, filepath.Join(dir, "docker.sock"))
	cfg := QuickConfig()
	cfg.PingDuration = 100 * time.Millisecond
	cfg.DockerSocket = d.path
	// The daemon's socket is direct, and the same socket again the peer
	// measured beside it.
	h := &harness{cfg: cfg, dir: dir, res: report.NewResults(cfg.layout()), docker: []*peer{{name: report.Direct, addr: d.path}, {name: report.Serve, addr: d.path}}}
	key := report.KeyDockerPing(1)
	samples := func() int { return len(h.res.Samples(key, report.Serve)) }

	if err := h.dockerStep(ctx, 0, 1); err != nil || samples() != 1 {
		t.Fatalf("daemon answering: got %v and %d samples, want 1 sample; notes %q", err, samples(), h.res.Notes())
	}

	d.restartAt.Store(d.pings.Load() + 5) // during the figure
	if err := h.dockerStep(ctx, 1, 1); err != nil || samples() != 1 {
		t.Errorf("daemon restarted: got %v and %d samples, want the round left out", err, samples())
	}
	if !hasNote(h.res.Notes(), "round 2 left out", "restarted") {
		t.Errorf("no note says round 2 was left out for a restart: %q", h.res.Notes())
	}

	d.stop()
	start := time.Now()
	if err := h.dockerStep(ctx, 2, 1); err != nil || samples() != 1 {
		t.Errorf("daemon gone: got %v and %d samples, want the round left out", err, samples())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("daemon gone: the step took %v", took)
	}
	if !hasNote(h.res.Notes(), "round 3 left out", "does not answer") {
		t.Errorf("no note says round 3 was left out, the daemon not answering: %q", h.res.Notes())
	}

	d.start()
	if err := h.dockerStep(ctx, 3, 1); err != nil || samples() != 2 {
		t.Errorf("daemon back: got %v and %d samples, want 2", err, samples())
	}
	if rs := h.res.PairRatios(key, report.Serve); len(rs) != 2 || len(h.res.Samples(key, report.Direct)) != 2 {
		t.Errorf("daemon back: got ratios %v and direct's samples %v, want one of each per round kept", rs, h.res.Samples(key, report.Direct))
	}
}

// The docker ps and inspect figures: the rate of answered GETs beside
// direct; an answer other than 200 is a failed request, counted.
func TestDockerGetStep(t *testing.T) {
	ctx := t.Context()
	dir := tempDir(t)
	d := newFakeDaemon(t, filepath.Join(dir, "docker.sock"))
	cfg := QuickConfig()
	cfg.PingDuration = 100 * time.Millisecond
	cfg.DockerSocket = d.path
	h := &harness{cfg: cfg, dir: dir, res: report.NewResults(cfg.layout()), docker: []*peer{{name: report.Direct, addr: d.path}, {name: report.PluginPolicyScope, addr: d.path}}}
	for _, c := range []struct {
		key, path string
		failed    bool
	}{
		{report.KeyDockerPs, psPath, false},
		{report.KeyDockerInspect, "/containers/known/json", false},
		{report.KeyDockerInspect, "/containers/other/json", true},
	} {
		if err := h.dockerGetStep(ctx, 0, c.key, c.path); err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		vs := h.res.Samples(c.key, report.PluginPolicyScope)
		if len(vs) == 0 {
			t.Fatalf("%s: no sample", c.path)
		}
		failed := h.res.Failed(c.key, report.PluginPolicyScope) > 0
		if failed != c.failed || (vs[len(vs)-1] > 0) == c.failed {
			t.Errorf("%s: got rate %v, failed %v; want failed %v", c.path, vs[len(vs)-1], failed, c.failed)
		}
	}
	if rs := h.res.PairRatios(report.KeyDockerPs, report.PluginPolicyScope); len(rs) != 1 || rs[0] <= 0 {
		t.Errorf("docker ps: got ratios %v, want one beside direct", rs)
	}
}
