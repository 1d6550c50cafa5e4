package report

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// quick is the layout of srbench -quick.
var quick = Layout{
	Bytes:         16 << 20,
	Clients:       []int{1, 8, 64},
	Burst:         200,
	Idle:          200,
	DockerClients: []int{1, 8},
	Volumes:       []int{10, 500},
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v): got %v, want %v", c.in, got, c.want)
		}
	}
}

func TestReport(t *testing.T) {
	const rounds = 3
	rs := NewResults(quick)
	for _, v := range []struct {
		key, peer string
		vals      []float64
	}{
		{KeyPingNew(1), Direct, []float64{1000, 900, 1100}},
		{KeyPingNew(1), Sockrelay, []float64{600, 500, 700}},
		{KeyPingNew(1), Socat, []float64{200, 250, 150}},
		{KeyPingNew(1), Policy, []float64{520, 480, 510}},
		{KeyPingNew(1), Idmap, []float64{950, 960, 990}},
		{KeyBurst, Direct, []float64{0, 0, 0}},
		{KeyBurst, Sockrelay, []float64{0, 0, 0}},
		{KeyBurst, Socat, []float64{100, 120, 90}},
		{KeyBurst, Policy, []float64{0, 1, 0}},
		{KeyBurst, Idmap, []float64{0, 0, 0}},
		{KeyIdleMem, Policy, []float64{40, 41, 39}},
		{KeyIdleMem, Sockrelay, []float64{30, 31, 29}},
		{KeyIdleMem, Socat, []float64{60, 61, 59}},
		{KeyPluginCycles(10), Plugin, []float64{50, 40, 60}},
	} {
		for _, x := range v.vals {
			rs.Add(v.key, v.peer, x)
		}
	}
	rs.AddFailed(KeyPingNew(1), Socat, 7, 100)
	rs.Note("a note")
	peers := []string{Direct, Sockrelay, Socat, Policy, Idmap}
	rep := rs.Report(time.Now(), peers, rounds)

	ping := rep.Row(KeyPingNew(1))
	if ping == nil {
		t.Fatal("no ping row")
	}
	if got := ping.Ratio[Sockrelay]; got != 0.6 {
		t.Errorf("sockrelay ratio: got %v, want 0.6", got)
	}
	if g := ping.Goals[Sockrelay]; g.Goal != "ratio ≥ 0.55" || g.Met == nil || !*g.Met || ping.AheadOfSocat == nil || !*ping.AheadOfSocat {
		t.Errorf("ping, sockrelay: got goal %+v, ahead %v; want ratio ≥ 0.55, met (0.60), ahead", g, ping.AheadOfSocat)
	}
	if g := ping.Goals[Policy]; g.Goal != "ratio ≥ 0.50" || g.Met == nil || !*g.Met {
		t.Errorf("ping, policy: got goal %+v, want ratio ≥ 0.50, met (0.51)", g)
	}
	if g := ping.Goals[Idmap]; g.Goal != "ratio ≥ 0.97" || g.Met == nil || *g.Met {
		t.Errorf("ping, idmap: got goal %+v, want ratio ≥ 0.97, not met (0.96)", g)
	}
	if _, ok := rep.Row(KeyBurst).Goals[Idmap]; ok {
		t.Error("burst: idmap has a goal, but its goals are on ratios only")
	}
	if b := rep.Row(KeyBurst); b.Goals[Sockrelay].Met == nil || !*b.Goals[Sockrelay].Met || !*b.AheadOfSocat || b.Ratio != nil {
		t.Errorf("burst: got sockrelay's goal %+v, ahead %v, ratio %v; want met, ahead, no ratio", b.Goals[Sockrelay], b.AheadOfSocat, b.Ratio)
	}
	if m := rep.Row(KeyIdleMem); m.Goals[Sockrelay].Goal != "≤ 20 KiB" || m.Goals[Sockrelay].Met == nil || *m.Goals[Sockrelay].Met || !*m.AheadOfSocat {
		t.Errorf("memory: got sockrelay's goal %+v, ahead %v; want ≤ 20 KiB, not met (30 KiB), ahead", m.Goals[Sockrelay], m.AheadOfSocat)
	}
	if rep.Row(KeyDownload) != nil {
		t.Error("a row with no samples is reported")
	}

	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"new-conn ping, 1 client", "600 (0.60)", "ratio ≥ 0.55", "NOT MET", "ahead",
		"plugin Create+Mount+Unmount+Remove, 10 volumes", "50.0 cycles/s", "socat: 7 of 100 connections failed", "a note",
		"goals met (sockrelay): 2 of 3; sockrelay ahead of socat: 3 of 3 figures",
		"goal (policy)", "510 (0.51)", "goals met (policy): 1 of 1",
		"goal (idmap)", "960 (0.96)", "goals met (idmap): 0 of 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	// The first table has direct, sockrelay and socat only.
	lines := strings.Split(out.String(), "\n")
	if i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "figure") }); i < 0 || strings.Contains(lines[i], Policy) || strings.Contains(lines[i], Idmap) {
		t.Errorf("first table's head: got %q", lines[max(i, 0)])
	}
	for _, l := range lines {
		if n := len([]rune(l)); n > 130 {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
	out.Reset()
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != len(rep.Rows) || back.Row(KeyPingNew(1)).Median[Socat] != 200 || !slices.Equal(back.Peers, peers) {
		t.Errorf("JSON round trip: got %v %+v", back.Peers, back.Rows)
	}
	if g := back.Row(KeyPingNew(1)).Goals[Idmap]; g.Goal != "ratio ≥ 0.97" || g.Met == nil || *g.Met {
		t.Errorf("JSON round trip: idmap's goal: got %+v", g)
	}

	// Without the idmap column there is no idmap goal nor table.
	rep = rs.Report(time.Now(), []string{Direct, Sockrelay, Socat}, rounds)
	if _, ok := rep.Row(KeyPingNew(1)).Goals[Idmap]; ok {
		t.Error("a goal for idmap, which is not a column")
	}
}

func TestBound(t *testing.T) {
	floor := ratioAtLeast(0.55)
	for _, c := range []struct {
		ratio float64
		want  bool
	}{{0.6, true}, {0.55, true}, {0.5, false}} {
		met, known := floor.met(&Row{Ratio: map[string]float64{Policy: c.ratio}}, Policy)
		if !known || met != c.want {
			t.Errorf("ratio %v: got met %v (known %v), want %v", c.ratio, met, known, c.want)
		}
	}
	if _, known := floor.met(&Row{Ratio: map[string]float64{Policy: 1}}, Sockrelay); known {
		t.Error("a row without sockrelay has a known goal for sockrelay")
	}
	ceiling := atMost(0, "failed")
	for _, c := range []struct {
		median float64
		want   bool
	}{{0, true}, {1, false}} {
		met, known := ceiling.met(&Row{Median: map[string]float64{Sockrelay: c.median}}, Sockrelay)
		if !known || met != c.want {
			t.Errorf("median %v: got met %v (known %v), want %v", c.median, met, known, c.want)
		}
	}
	for b, want := range map[bound]string{floor: "ratio ≥ 0.55", ceiling: "≤ 0 failed", atMost(20, "KiB"): "≤ 20 KiB"} {
		if got := b.String(); got != want {
			t.Errorf("%#v: got %q, want %q", b, got, want)
		}
	}
}

// Every goal holds on a row that srbench measures, no row has two goals
// of one peer, and each bound suits its row: a floor on the ratio where
// more is better, a ceiling where less is.
func TestGoals(t *testing.T) {
	defs := rowDefs(quick)
	for _, g := range goals {
		if !slices.Contains([]string{Sockrelay, Socat, Policy, Idmap}, g.peer) {
			t.Errorf("goal %+v: peer %q is not one with a ratio to direct", g, g.peer)
		}
		if !slices.ContainsFunc(defs, g.on) {
			t.Errorf("goal %+v holds on no row", g)
		}
	}
	for _, d := range defs {
		seen := map[string]bool{}
		for _, g := range goalsOn(d) {
			if seen[g.peer] {
				t.Errorf("row %s: two goals of %s", d.key, g.peer)
			}
			seen[g.peer] = true
			if g.bound.ratio == d.lower {
				t.Errorf("row %s (lower is better: %v): goal %s of %s", d.key, d.lower, g.bound, g.peer)
			}
		}
	}
}
