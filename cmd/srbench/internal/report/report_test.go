package report

import (
	"bytes"
	"encoding/json"
	"math"
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
	// Each peer's samples beside direct's: the ratios of the pairs are
	// 0.6, 0.5, 0.7 for the relay whatever direct's own drift.
	for i, d := range []float64{1000, 800, 1200} {
		rs.AddPair(KeyPingNew(1), PluginRelay, d, []float64{0.6, 0.5, 0.7}[i]*d)
		rs.AddPair(KeyPingNew(1), PluginPolicy, d, []float64{0.52, 0.48, 0.51}[i]*d)
		rs.AddPair(KeyPingNew(1), PluginIdmap, d, []float64{0.95, 0.96, 0.99}[i]*d)
		rs.AddPair(KeyPingNew(1), Serve, d, 0.4*d)
		rs.AddPair(KeyPingNew(1), Socat, d, 0.05*d)
	}
	for _, v := range []struct {
		key, peer string
		vals      []float64
	}{
		{KeyBurst, Direct, []float64{0, 0, 0}},
		{KeyBurst, PluginRelay, []float64{0, 0, 0}},
		{KeyBurst, PluginPolicy, []float64{0, 1, 0}},
		{KeyBurst, Socat, []float64{100, 120, 90}},
		{KeyIdleMem, Serve, []float64{30, 31, 29}},
		{KeyIdleMem, Socat, []float64{60, 61, 59}},
		{KeyPluginCycles(10), Plugin, []float64{50, 40, 60}},
	} {
		for _, x := range v.vals {
			rs.Add(v.key, v.peer, x)
		}
	}
	rs.AddFailed(KeyPingNew(1), Socat, 7, 100)
	rs.Note("a note")
	peers := []string{Direct, PluginRelay, PluginPolicy, PluginIdmap, Serve, Socat}
	rep := rs.Report(time.Now(), peers, rounds)

	ping := rep.Row(KeyPingNew(1))
	if ping == nil {
		t.Fatal("no ping row")
	}
	if got := ping.Ratio[PluginRelay]; got != 0.6 {
		t.Errorf("relay ratio: got %v, want 0.6, the median of the pairs' ratios", got)
	}
	if got := ping.Spread[PluginRelay]; got != [2]float64{0.5, 0.7} {
		t.Errorf("relay spread: got %v, want [0.5 0.7]", got)
	}
	if got := ping.Median[Direct]; got != 1000 {
		t.Errorf("direct: got %v, want 1000, the median of every pair's direct sample", got)
	}
	if g := ping.Goals[PluginRelay]; g.Goal != "ratio ≥ 0.55" || g.Met == nil || !*g.Met {
		t.Errorf("ping, relay: got goal %+v, want ratio ≥ 0.55, met (0.60)", g)
	}
	if g := ping.Goals[PluginPolicy]; g.Goal != "ratio ≥ 0.50" || g.Met == nil || !*g.Met {
		t.Errorf("ping, policy: got goal %+v, want ratio ≥ 0.50, met (0.51)", g)
	}
	if g := ping.Goals[PluginIdmap]; g.Goal != "ratio ≥ 0.97" || g.Met == nil || *g.Met {
		t.Errorf("ping, idmap: got goal %+v, want ratio ≥ 0.97, not met (0.96)", g)
	}
	if _, ok := ping.Goals[Serve]; ok {
		t.Error("ping: serve has a goal, but the goals are the installed plugin's")
	}
	if b := rep.Row(KeyBurst); b.Goals[PluginRelay].Met == nil || !*b.Goals[PluginRelay].Met || b.Ratio != nil {
		t.Errorf("burst: got relay's goal %+v, ratio %v; want met, no ratio", b.Goals[PluginRelay], b.Ratio)
	}
	if m := rep.Row(KeyIdleMem); m.Goals[Serve].Goal != "≤ 20 KiB" || m.Goals[Serve].Met == nil || *m.Goals[Serve].Met {
		t.Errorf("memory: got serve's goal %+v; want ≤ 20 KiB, not met (30 KiB)", m.Goals[Serve])
	}
	if rep.Row(KeyDownload) != nil {
		t.Error("a row with no samples is reported")
	}

	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"new-conn ping, 1 client", "0.60 (0.50-0.70)", "0.51 (0.48-0.52)", "1000",
		"goals met (plugin-relay): 2 of 2", "goals met (plugin-policy): 1 of 2\n  NOT MET: failed connects, burst of 200 1, want ≤ 0 failed in every round",
		"goals met (plugin-idmap): 0 of 1\n  NOT MET: new-conn ping, 1 client 0.96, want ratio ≥ 0.97",
		"goals met (serve): 0 of 1", "0.40 (0.40-0.40)", "0.05 (0.05-0.05) !",
		"plugin Create+Mount+Unmount+Remove, 10 volumes", "50.0 cycles/s", "socat: 7 of 100 connections failed", "a note"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	// The first table has direct and the plugin's volumes only.
	lines := strings.Split(out.String(), "\n")
	if i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "figure") }); i < 0 || strings.Contains(lines[i], "serve") || !strings.Contains(lines[i], "idmap") {
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
	if len(back.Rows) != len(rep.Rows) || back.Row(KeyPingNew(1)).Ratio[Socat] != 0.05 || !slices.Equal(back.Peers, peers) ||
		back.Row(KeyPingNew(1)).Spread[PluginRelay] != [2]float64{0.5, 0.7} {
		t.Errorf("JSON round trip: got %v %+v", back.Peers, back.Rows)
	}

	// Without the idmap column there is no idmap goal.
	rep = rs.Report(time.Now(), []string{Direct, PluginRelay, Socat}, rounds)
	if _, ok := rep.Row(KeyPingNew(1)).Goals[PluginIdmap]; ok {
		t.Error("a goal for idmap, which is not a column")
	}
}

func TestBound(t *testing.T) {
	floor := ratioAtLeast(0.55)
	for _, c := range []struct {
		ratio float64
		want  bool
	}{{0.6, true}, {0.55, true}, {0.5, false}} {
		met, known := floor.met(&Row{Ratio: map[string]float64{PluginPolicy: c.ratio}}, PluginPolicy)
		if !known || met != c.want {
			t.Errorf("ratio %v: got met %v (known %v), want %v", c.ratio, met, known, c.want)
		}
	}
	if _, known := floor.met(&Row{Ratio: map[string]float64{PluginPolicy: 1}}, PluginRelay); known {
		t.Error("a row without sockrelay has a known goal for sockrelay")
	}
	ceiling := atMost(0, "failed")
	for _, c := range []struct {
		median float64
		want   bool
	}{{0, true}, {1, false}} {
		met, known := ceiling.met(&Row{Median: map[string]float64{PluginRelay: c.median}}, PluginRelay)
		if !known || met != c.want {
			t.Errorf("median %v: got met %v (known %v), want %v", c.median, met, known, c.want)
		}
	}
	every := neverAbove(0, "failed")
	if met, known := every.met(&Row{Median: map[string]float64{PluginRelay: 0}, Samples: map[string][]float64{PluginRelay: {0, 2, 0}}}, PluginRelay); !known || met {
		t.Errorf("a round with 2 failures of 3 rounds: got met %v (known %v), want not met", met, known)
	}
	for b, want := range map[bound]string{floor: "ratio ≥ 0.55", ceiling: "≤ 0 failed", atMost(20, "KiB"): "≤ 20 KiB", every: "≤ 0 failed in every round"} {
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
		if !slices.Contains([]string{PluginRelay, PluginPolicy, PluginIdmap, Serve, ServePolicy, Socat, SocketProxy}, g.peer) {
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

// The scoped policy volume is a column of the plugin's table with no
// goals of its own, and a line gives its cost over the unscoped one on
// the rows that have both.
func TestScopeCost(t *testing.T) {
	rs := NewResults(quick)
	for _, d := range []float64{1000, 800, 1200} {
		rs.AddPair(KeyDockerPs, PluginPolicy, d, 0.5*d)
		rs.AddPair(KeyDockerPs, PluginPolicyScope, d, 0.4*d)
		rs.AddPair(KeyDockerPing(1), PluginPolicy, d, 0.5*d)
	}
	rep := rs.Report(time.Now(), []string{Direct, PluginPolicy, PluginPolicyScope}, 3)
	for _, c := range []struct {
		key  string
		want float64
		ok   bool
	}{{KeyDockerPs, 0.8, true}, {KeyDockerPing(1), 0, false}} {
		row := rep.Row(c.key)
		if row == nil {
			t.Fatalf("no row %s", c.key)
		}
		got, ok := row.ScopeCost()
		if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: ScopeCost got %v, %v, want %v, %v", c.key, got, ok, c.want, c.ok)
		}
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	if !strings.Contains(table, "policy+scope") {
		t.Errorf("table lacks the policy+scope column:\n%s", table)
	}
	const want = "policy+scope against policy (its ratio to direct over policy's): dockerd docker ps -a, new conn, 1 client 0.80\n"
	if !strings.Contains(table, want) {
		t.Errorf("table lacks %q:\n%s", want, table)
	}
	if strings.Contains(table, "goals met ("+PluginPolicyScope) {
		t.Errorf("table: a goal line for policy+scope, which has no goals:\n%s", table)
	}
}
