package report

import (
	"fmt"
	"slices"
)

// goal is a bar that a peer's median on a figure is held to.
type goal struct {
	peer   string
	figure figure
	// clients, when set, limits the goal to the figure's row with that
	// many clients; unset, the goal holds on every row of the figure.
	clients int
	bound   bound
}

// goals are the bars of the installed plugin's volumes, by peer and
// figure: what users run is what is held to them. idmap has no process in
// the data path, so its bar is direct itself, less the noise between
// pairs, on every figure with a ratio. The idle memory of a relay is
// measured on a process started afresh for it, so its bar is serve's.
var goals = []goal{
	{peer: PluginRelay, figure: pingNew, clients: 1, bound: ratioAtLeast(0.55)},
	{peer: PluginRelay, figure: pingNew, clients: 8, bound: ratioAtLeast(0.50)},
	{peer: PluginRelay, figure: pingKeepAlive, bound: ratioAtLeast(0.65)},
	{peer: PluginRelay, figure: download, bound: ratioAtLeast(0.90)},
	{peer: PluginRelay, figure: upload, bound: ratioAtLeast(0.90)},
	{peer: PluginRelay, figure: burstFailures, bound: neverAbove(0, "failed")},
	{peer: PluginRelay, figure: dockerPing, clients: 1, bound: ratioAtLeast(0.55)},
	{peer: PluginRelay, figure: dockerPing, clients: 8, bound: ratioAtLeast(0.50)},

	{peer: PluginPolicy, figure: pingNew, clients: 1, bound: ratioAtLeast(0.50)},
	{peer: PluginPolicy, figure: pingNew, clients: 8, bound: ratioAtLeast(0.45)},
	{peer: PluginPolicy, figure: pingKeepAlive, bound: ratioAtLeast(0.45)},
	{peer: PluginPolicy, figure: download, bound: ratioAtLeast(0.85)},
	{peer: PluginPolicy, figure: upload, bound: ratioAtLeast(0.85)},
	{peer: PluginPolicy, figure: burstFailures, bound: neverAbove(0, "failed")},
	{peer: PluginPolicy, figure: dockerPing, clients: 1, bound: ratioAtLeast(0.50)},
	{peer: PluginPolicy, figure: dockerPing, clients: 8, bound: ratioAtLeast(0.45)},

	{peer: PluginIdmap, figure: pingNew, bound: ratioAtLeast(0.97)},
	{peer: PluginIdmap, figure: pingKeepAlive, bound: ratioAtLeast(0.97)},
	{peer: PluginIdmap, figure: download, bound: ratioAtLeast(0.97)},
	{peer: PluginIdmap, figure: upload, bound: ratioAtLeast(0.97)},
	{peer: PluginIdmap, figure: burstFailures, bound: neverAbove(0, "failed")},
	{peer: PluginIdmap, figure: dockerPing, bound: ratioAtLeast(0.97)},

	{peer: Serve, figure: idleMemory, bound: atMost(20, "KiB")},
}

// on says whether g holds on the row d.
func (g goal) on(d rowDef) bool {
	return g.figure == d.figure && (g.clients == 0 || g.clients == d.n)
}

// goalsOn are the goals that hold on the row d.
func goalsOn(d rowDef) []goal {
	var out []goal
	for _, g := range goals {
		if g.on(d) {
			out = append(out, g)
		}
	}
	return out
}

// bound is what a median must do to meet a goal: have a ratio to direct
// of at least a floor, or, on a figure where less is better (failures,
// memory), be at most a ceiling.
type bound struct {
	ratio bool // a floor on the ratio to direct; else a ceiling on the median
	value float64
	unit  string // of a ceiling, for its text
	every bool   // a ceiling on every sample, not on the median
}

func ratioAtLeast(x float64) bound        { return bound{ratio: true, value: x} }
func atMost(x float64, unit string) bound { return bound{value: x, unit: unit} }

// neverAbove is a ceiling that every round must keep: one round that
// fails connections is a failure, whatever the others did.
func neverAbove(x float64, unit string) bound { return bound{value: x, unit: unit, every: true} }

func (b bound) String() string {
	switch {
	case b.ratio:
		return fmt.Sprintf("ratio ≥ %.2f", b.value)
	case b.every:
		return fmt.Sprintf("≤ %g %s in every round", b.value, b.unit)
	}
	return fmt.Sprintf("≤ %g %s", b.value, b.unit)
}

// met says whether peer's figure on r meets b; known is false when r has
// no such figure of peer.
func (b bound) met(r *Row, peer string) (met, known bool) {
	v, ok := b.got(r, peer)
	if b.ratio {
		return v >= b.value, ok
	}
	return v <= b.value, ok
}

// got is the figure of peer on r that b holds: its ratio to direct, its
// worst round, or its median.
func (b bound) got(r *Row, peer string) (float64, bool) {
	switch {
	case b.ratio:
		v, ok := r.Ratio[peer]
		return v, ok
	case b.every:
		vs := r.Samples[peer]
		if len(vs) == 0 {
			return 0, false
		}
		return slices.Max(vs), true
	}
	v, ok := r.Median[peer]
	return v, ok
}
