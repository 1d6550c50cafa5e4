package report

import "fmt"

// goal is a bar that a peer's median on a figure is held to.
type goal struct {
	peer   string
	figure figure
	// clients, when set, limits the goal to the figure's row with that
	// many clients; unset, the goal holds on every row of the figure.
	clients int
	bound   bound
}

// goals are the bars of the relay, the policy proxy and idmap, by peer
// and figure. idmap has no process in the data path, so its bar is direct
// itself, less the noise between rounds, on every figure with a ratio.
var goals = []goal{
	{peer: Sockrelay, figure: pingNew, clients: 1, bound: ratioAtLeast(0.55)},
	{peer: Sockrelay, figure: pingNew, clients: 8, bound: ratioAtLeast(0.50)},
	{peer: Sockrelay, figure: pingKeepAlive, bound: ratioAtLeast(0.65)},
	{peer: Sockrelay, figure: download, bound: ratioAtLeast(0.90)},
	{peer: Sockrelay, figure: upload, bound: ratioAtLeast(0.90)},
	{peer: Sockrelay, figure: burstFailures, bound: atMost(0, "failed")},
	{peer: Sockrelay, figure: idleMemory, bound: atMost(20, "KiB")},
	{peer: Sockrelay, figure: dockerPing, clients: 1, bound: ratioAtLeast(0.55)},
	{peer: Sockrelay, figure: dockerPing, clients: 8, bound: ratioAtLeast(0.50)},

	{peer: Policy, figure: pingNew, clients: 1, bound: ratioAtLeast(0.50)},
	{peer: Policy, figure: pingNew, clients: 8, bound: ratioAtLeast(0.45)},
	{peer: Policy, figure: pingKeepAlive, bound: ratioAtLeast(0.45)},
	{peer: Policy, figure: download, bound: ratioAtLeast(0.80)},
	{peer: Policy, figure: upload, bound: ratioAtLeast(0.80)},
	{peer: Policy, figure: dockerPing, clients: 1, bound: ratioAtLeast(0.50)},
	{peer: Policy, figure: dockerPing, clients: 8, bound: ratioAtLeast(0.45)},

	{peer: Idmap, figure: pingNew, bound: ratioAtLeast(0.97)},
	{peer: Idmap, figure: pingKeepAlive, bound: ratioAtLeast(0.97)},
	{peer: Idmap, figure: download, bound: ratioAtLeast(0.97)},
	{peer: Idmap, figure: upload, bound: ratioAtLeast(0.97)},
	{peer: Idmap, figure: dockerPing, bound: ratioAtLeast(0.97)},
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
}

func ratioAtLeast(x float64) bound        { return bound{ratio: true, value: x} }
func atMost(x float64, unit string) bound { return bound{value: x, unit: unit} }

func (b bound) String() string {
	if b.ratio {
		return fmt.Sprintf("ratio ≥ %.2f", b.value)
	}
	return fmt.Sprintf("≤ %g %s", b.value, b.unit)
}

// met says whether peer's figure on r meets b; known is false when r has
// no such figure of peer.
func (b bound) met(r *Row, peer string) (met, known bool) {
	if b.ratio {
		v, ok := r.Ratio[peer]
		return v >= b.value, ok
	}
	v, ok := r.Median[peer]
	return v <= b.value, ok
}
