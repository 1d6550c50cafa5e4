//go:build benchrun

// A whole run of the harness is slow, so make test leaves it out:
// make bench-test runs it (go test -tags benchrun ./cmd/srbench/...).

package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// TestRunQuick runs the whole harness briefly against direct, sockrelay
// (bin/sockrelay, from make build), socat when installed, the policy
// proxy (sockrelay serve --policy full) and, as root where the kernel can,
// an idmapped mount. It checks the report, not the figures: no timing is
// asserted.
func TestRunQuick(t *testing.T) {
	bin, err := filepath.Abs("../../../../bin/sockrelay")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no %s: run make build first (make bench-test does)", bin)
	}
	cfg := QuickConfig()
	cfg.Sockrelay = bin
	cfg.DockerSocket = "" // leave the daemon alone
	cfg.PingDuration = 150 * time.Millisecond
	peers := []string{report.Direct, report.Sockrelay}
	if socat, err := exec.LookPath("socat"); err == nil {
		cfg.Socat = socat
		peers = append(peers, report.Socat)
	} else {
		t.Log("socat not installed: measuring direct and sockrelay only")
	}
	peers = append(peers, report.Policy)
	relays := slices.Clone(peers[1:]) // processes: memory and CPU figures
	withIdmap := false
	if os.Geteuid() != 0 {
		t.Log("not root: no idmap column")
	} else if err := probeIdmap(); err != nil {
		t.Logf("idmap cannot be measured here, its column is left out: %v", err)
	} else {
		withIdmap = true
		peers = append(peers, report.Idmap)
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	if !slices.Equal(rep.Peers, peers) {
		t.Errorf("peers: got %v, want %v", rep.Peers, peers)
	}
	if !withIdmap && !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.HasPrefix(n, "idmap: left out of the bench: ") }) {
		t.Errorf("no idmap column, and no note says why: %q", rep.Notes)
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool {
		return strings.Contains(n, "wollomatic/socket-proxy") && strings.Contains(n, "not measured here")
	}) {
		t.Errorf("no note quotes the reference figures of another proxy: %q", rep.Notes)
	}
	if m := idmapMounts(t); len(m) > 0 {
		t.Errorf("idmap mounts left after Run: %q", m)
	}

	want := map[string][]string{
		report.KeyPingKeepAlive: peers, report.KeyDownload: peers, report.KeyUpload: peers, report.KeyBurst: peers,
		report.KeyIdleMem: relays, report.KeyCPU: relays,
	}
	for _, c := range cfg.Clients {
		want[report.KeyPingNew(c)] = peers
	}
	if os.Geteuid() == 0 {
		for _, v := range cfg.Volumes {
			want[report.KeyPluginCycles(v)] = []string{report.Plugin}
		}
	} else if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "needs root") }) {
		t.Errorf("not root, and no note says the plugin figure was skipped: %q", rep.Notes)
	}
	if len(rep.Rows) != len(want) {
		t.Errorf("got %d rows, want %d", len(rep.Rows), len(want))
	}
	policyGoals := []string{report.KeyPingNew(1), report.KeyPingNew(8), report.KeyPingKeepAlive, report.KeyDownload, report.KeyUpload}
	sockrelayGoals := append([]string{report.KeyBurst, report.KeyIdleMem}, policyGoals...)
	for key, ps := range want {
		row := rep.Row(key)
		if row == nil {
			t.Errorf("no row %s", key)
			continue
		}
		for _, p := range ps {
			if n := len(row.Samples[p]); n != cfg.Rounds {
				t.Errorf("%s %s: got %d samples, want %d", key, p, n, cfg.Rounds)
			}
			v, ok := row.Median[p]
			switch {
			case !ok:
				t.Errorf("%s: no median for %s", key, p)
			case key == report.KeyBurst && (v < 0 || v > float64(cfg.Burst)):
				t.Errorf("%s %s: got %v failures of %d", key, p, v, cfg.Burst)
			case key == report.KeyIdleMem && (v <= 0 || v > 10<<10):
				t.Errorf("%s %s: got %v KiB per connection, want between 0 and 10 MiB", key, p, v)
			case key == report.KeyCPU && v < 0:
				t.Errorf("%s %s: got %v s/GiB", key, p, v)
			case key != report.KeyBurst && key != report.KeyIdleMem && key != report.KeyCPU && v <= 0:
				t.Errorf("%s %s: got %v, want > 0", key, p, v)
			}
		}
		if r, ok := row.Ratio[report.Direct]; ok && r != 1 {
			t.Errorf("%s: direct's ratio is %v", key, r)
		}
		for p := range row.Median {
			if !slices.Contains(ps, p) {
				t.Errorf("%s: a figure for %s, which should have none", key, p)
			}
		}
		// The goals: sockrelay's and policy's on the figures of the goals
		// table, idmap's on every ratio.
		for _, p := range []string{report.Sockrelay, report.Policy, report.Idmap} {
			g, ok := row.Goals[p]
			wantGoal := slices.Contains(peers, p) && (p == report.Sockrelay && slices.Contains(sockrelayGoals, key) ||
				p == report.Policy && slices.Contains(policyGoals, key) ||
				p == report.Idmap && row.Ratio != nil)
			switch {
			case ok != wantGoal:
				t.Errorf("%s: goal for %s: got %+v (present %v), want present %v", key, p, g, ok, wantGoal)
			case ok && (g.Goal == "" || g.Met == nil):
				t.Errorf("%s: goal for %s: got %+v, want a goal, met or not", key, p, g)
			}
		}
	}
	if f := rep.Row(report.KeyBurst).Median[report.Direct]; f != 0 {
		t.Errorf("direct lost %v connections of a burst of %d on a listener with a backlog of somaxconn", f, cfg.Burst)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	wantTables := []string{"goals met (sockrelay)", "goals met (policy)"}
	if withIdmap {
		wantTables = append(wantTables, "goals met (idmap)")
	}
	for _, s := range wantTables {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
	t.Logf("\n%s", table.String())
}
