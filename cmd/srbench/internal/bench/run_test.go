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
// serve (bin/sockrelay, from make build) with and without the policy
// proxy, and socat when installed. It leaves the installed plugin out:
// that needs a daemon of the test's own, which make bench starts. It
// checks the report, not the figures: no timing is asserted.
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
	cfg.PingDuration = 150 * time.Millisecond
	peers := []string{report.Direct, report.Serve, report.ServePolicy}
	if socat, err := exec.LookPath("socat"); err == nil {
		cfg.Socat = socat
		peers = append(peers, report.Socat)
	} else {
		t.Log("socat not installed: measuring direct and serve only")
	}
	relays := slices.Clone(peers[1:]) // processes: memory and CPU figures
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	if !slices.Equal(rep.Peers, peers) {
		t.Errorf("peers: got %v, want %v", rep.Peers, peers)
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
	for key, ps := range want {
		row := rep.Row(key)
		if row == nil {
			t.Errorf("no row %s", key)
			continue
		}
		for _, p := range ps {
			n := len(row.Samples[p])
			wantN := cfg.Rounds
			if p == report.Direct {
				wantN *= len(peers) - 1 // one beside each peer
			}
			if n != wantN {
				t.Errorf("%s %s: got %d samples, want %d", key, p, n, wantN)
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
			if row.Lower || p == report.Direct || key == report.KeyPluginCycles(cfg.Volumes[0]) || key == report.KeyPluginCycles(cfg.Volumes[1]) {
				continue
			}
			if n := len(row.PairRatios[p]); n != cfg.Rounds {
				t.Errorf("%s %s: got %d pairs, want one a round", key, p, n)
			}
			if sp := row.Spread[p]; sp[0] > row.Ratio[p] || sp[1] < row.Ratio[p] {
				t.Errorf("%s %s: ratio %v outside its spread %v", key, p, row.Ratio[p], sp)
			}
		}
		for p := range row.Median {
			if !slices.Contains(ps, p) {
				t.Errorf("%s: a figure for %s, which should have none", key, p)
			}
		}
	}
	if f := rep.Row(report.KeyBurst).Median[report.Direct]; f != 0 {
		t.Errorf("direct lost %v connections of a burst of %d on a listener with a backlog of somaxconn", f, cfg.Burst)
	}
	if g := rep.Row(report.KeyIdleMem).Goals[report.Serve]; g.Met == nil {
		t.Errorf("serve's memory goal: got %+v, want a goal, met or not", g)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"beside it", "serve --policy", "goals met (serve)"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q", s)
		}
	}
	t.Logf("\n%s", table.String())
}
