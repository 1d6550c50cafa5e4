// Package report turns the samples of a bench run into its report: the
// median of every figure per peer, its ratio to direct by the paired
// estimator (the median of per-pair ratios, with their spread), the goals
// each peer is held to, and the report's tables and JSON.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured: the median of every figure over the
// rounds, per peer, with its ratio to direct and each peer's goals.
type Report struct {
	Start time.Time `json:"start"`
	// Rounds is how many rounds the medians are of; the last may be
	// partial when the run stopped on an error (see Notes).
	Rounds int   `json:"rounds"`
	Bytes  int64 `json:"bytes"`
	// Peers are the columns, direct first.
	Peers []string `json:"peers"`
	Rows  []Row    `json:"rows"`
	// Notes say what was skipped and why, and what failed along the way.
	Notes []string `json:"notes,omitempty"`
}

// Row is one figure.
type Row struct {
	Key   string `json:"key"`
	Title string `json:"title"`
	Unit  string `json:"unit"`
	// Lower is set when a lower value is better (memory, CPU, failures).
	Lower bool `json:"lower_is_better,omitempty"`
	// Median is the median of each peer's samples; direct's are those
	// of every pair.
	Median  map[string]float64   `json:"median"`
	Samples map[string][]float64 `json:"samples"`
	// PairRatios are, per peer, its sample over direct's sample measured
	// right beside it, one per pair (per round).
	PairRatios map[string][]float64 `json:"pair_ratios,omitempty"`
	// Ratio is each peer's median of PairRatios: the paired estimator,
	// which a change of the machine's load between pairs moves less
	// than a ratio of medians.
	Ratio map[string]float64 `json:"ratio_to_direct,omitempty"`
	// Spread is the lowest and highest of each peer's PairRatios: how
	// much the figure moves from pair to pair.
	Spread map[string][2]float64 `json:"ratio_spread,omitempty"`
	// Failed counts failed connections over all rounds, per peer.
	Failed map[string]int `json:"failed_connections,omitempty"`
	// Attempts counts the connections tried over all rounds, per peer,
	// for rows that count failures.
	Attempts map[string]int `json:"attempts,omitempty"`
	// Goals are the goals of every peer (among Peers) that has one on
	// this figure, by peer.
	Goals map[string]PeerGoal `json:"goals,omitempty"`

	format string
}

// Row returns the row with key, or nil.
func (r *Report) Row(key string) *Row {
	for i := range r.Rows {
		if r.Rows[i].Key == key {
			return &r.Rows[i]
		}
	}
	return nil
}

// PeerGoal is the goal of one peer on one figure, and whether the median
// reached it (absent when the peer has no figure).
type PeerGoal struct {
	Goal string `json:"goal"`
	Met  *bool  `json:"met,omitempty"`
	// Got is the figure the goal holds, as the table shows it: a ratio,
	// the worst round, or the median.
	Got string `json:"got,omitempty"`
}

// Results gathers the samples of every round.
type Results struct {
	layout   Layout
	defs     []rowDef
	samples  map[string]map[string][]float64
	pairs    map[string]map[string][]float64
	failed   map[string]map[string]int
	attempts map[string]map[string]int
	notes    []string
}

// NewResults is ready for the samples of a run that measures l.
func NewResults(l Layout) *Results {
	return &Results{layout: l, defs: rowDefs(l), samples: map[string]map[string][]float64{},
		pairs: map[string]map[string][]float64{}, failed: map[string]map[string]int{}, attempts: map[string]map[string]int{}}
}

// Add records a sample of peer on the row key, one with no direct
// measured beside it (memory, CPU, the plugin's cycles, direct alone).
func (rs *Results) Add(key, peer string, v float64) {
	add(rs.samples, key, peer, v)
}

// AddPair records a sample v of peer on the row key and the sample of
// direct measured right beside it.
func (rs *Results) AddPair(key, peer string, direct, v float64) {
	add(rs.samples, key, Direct, direct)
	add(rs.samples, key, peer, v)
	if direct > 0 {
		add(rs.pairs, key, peer, v/direct)
	}
}

func add(m map[string]map[string][]float64, key, peer string, v float64) {
	if m[key] == nil {
		m[key] = map[string][]float64{}
	}
	m[key][peer] = append(m[key][peer], v)
}

// AddFailed counts attempts connections of peer on the row key, failed of
// which failed.
func (rs *Results) AddFailed(key, peer string, failed, attempts int) {
	if rs.failed[key] == nil {
		rs.failed[key] = map[string]int{}
		rs.attempts[key] = map[string]int{}
	}
	rs.failed[key][peer] += failed
	rs.attempts[key][peer] += attempts
}

// Note adds a line to the report's notes.
func (rs *Results) Note(format string, args ...any) {
	rs.notes = append(rs.notes, fmt.Sprintf(format, args...))
}

// Samples are the samples of peer on the row key so far, oldest first.
func (rs *Results) Samples(key, peer string) []float64 { return rs.samples[key][peer] }

// PairRatios are peer's ratios to direct on the row key so far.
func (rs *Results) PairRatios(key, peer string) []float64 { return rs.pairs[key][peer] }

// Failed is how many connections of peer failed on the row key so far.
func (rs *Results) Failed(key, peer string) int { return rs.failed[key][peer] }

// Notes are the notes so far.
func (rs *Results) Notes() []string { return rs.notes }

// Report computes medians, ratios and goals of every figure measured, of
// a run that started at start and measured the columns peers (direct
// first) over rounds rounds.
func (rs *Results) Report(start time.Time, peers []string, rounds int) *Report {
	rep := &Report{Start: start, Rounds: rounds, Bytes: rs.layout.Bytes, Peers: peers, Notes: rs.notes}
	for _, d := range rs.defs {
		s := rs.samples[d.key]
		if len(s) == 0 {
			continue
		}
		row := Row{Key: d.key, Title: d.title, Unit: d.unit, Lower: d.lower, Median: map[string]float64{}, Samples: s, format: d.format}
		for p, vs := range s {
			row.Median[p] = median(vs)
		}
		if pr := rs.pairs[d.key]; len(pr) > 0 && !d.lower {
			row.PairRatios = pr
			row.Ratio = map[string]float64{Direct: 1}
			row.Spread = map[string][2]float64{}
			for p, vs := range pr {
				row.Ratio[p] = median(vs)
				row.Spread[p] = [2]float64{slices.Min(vs), slices.Max(vs)}
			}
		}
		if d.counted {
			row.Failed, row.Attempts = rs.failed[d.key], rs.attempts[d.key]
		}
		for _, g := range goalsOn(d) {
			if !slices.Contains(peers, g.peer) {
				continue
			}
			pg := PeerGoal{Goal: g.bound.String()}
			if met, known := g.bound.met(&row, g.peer); known {
				pg.Met = &met
				v, _ := g.bound.got(&row, g.peer)
				pg.Got = fmt.Sprintf("%.2f", v)
				if !g.bound.ratio {
					pg.Got = fmt.Sprintf(d.format, v)
				}
			}
			if row.Goals == nil {
				row.Goals = map[string]PeerGoal{}
			}
			row.Goals[g.peer] = pg
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteTable prints the report: first the installed plugin's volumes
// beside direct, with their goals; then the other peers (serve, socat,
// socket-proxy) beside direct; then the plugin's VolumeDriver cost and the
// notes. A ratio is the median of the per-pair ratios, with their lowest
// and highest in brackets; a figure where less is better is the median.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "sockrelay bench: %d round%s; %s per transfer; x.xx (lo-hi) = the median of the ratios of\n", r.Rounds, plural(r.Rounds), sizeString(r.Bytes))
	fmt.Fprintf(w, "each peer to direct measured right beside it, one pair per round, and the lowest and highest of them\n")
	var mine, others []string
	for _, p := range r.Peers {
		switch {
		case p == Direct:
		case slices.Contains(pluginPeers, p):
			mine = append(mine, p)
		default:
			others = append(others, p)
		}
	}
	var plugin, figures []Row
	for _, row := range r.Rows {
		if _, ok := row.Median[Plugin]; ok {
			plugin = append(plugin, row)
		} else {
			figures = append(figures, row)
		}
	}
	if len(mine) > 0 {
		fmt.Fprintln(w, "\nthe installed plugin: its volumes through their host-side socket paths")
		if err := writeTable(w, figures, mine); err != nil {
			return err
		}
		for _, p := range mine {
			if p != PluginPolicyScope {
				fmt.Fprintln(w, goalLine(figures, p))
			}
		}
		if line := scopeLine(figures); line != "" {
			fmt.Fprintln(w, line)
		}
	}
	if len(others) > 0 {
		fmt.Fprintln(w, "\nbeside it: the same upstream through other processes")
		if err := writeTable(w, figures, others); err != nil {
			return err
		}
		for _, p := range others {
			if _, goals := goalsMet(figures, p); goals > 0 {
				fmt.Fprintln(w, goalLine(figures, p))
			}
		}
	}
	if len(plugin) > 0 {
		fmt.Fprintln(w, "\nplugin VolumeDriver cost (sockrelay plugin, real HTTP protocol, no direct or socat equivalent):")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, row := range plugin {
			fmt.Fprintf(tw, "  %s\t%s %s\n", row.Title, row.cell(Plugin), row.Unit)
		}
		tw.Flush()
	}
	var notes []string
	for _, row := range r.Rows {
		for _, p := range r.Peers {
			if f := row.Failed[p]; f > 0 && row.Key != KeyBurst {
				notes = append(notes, fmt.Sprintf("%s: %d of %d connections failed in %q (rates count answered requests only)", p, f, row.Attempts[p], row.Title))
			}
		}
	}
	notes = append(notes, r.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, "  -", n)
		}
	}
	return nil
}

// writeTable prints rows for direct and peers, a row only when one of
// them has a figure on it.
func writeTable(w io.Writer, rows []Row, peers []string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"figure", "unit", peerHeads[Direct]}
	for _, p := range peers {
		head = append(head, peerHeads[p])
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, row := range rows {
		if !slices.ContainsFunc(peers, func(p string) bool { _, ok := row.Median[p]; return ok }) {
			continue
		}
		cells := []string{row.Title, row.Unit, row.cell(Direct)}
		for _, p := range peers {
			cells = append(cells, row.cell(p))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// goalLine says how many of peer's goals it met, and which it missed.
func goalLine(rows []Row, peer string) string {
	met, goals := goalsMet(rows, peer)
	s := fmt.Sprintf("goals met (%s): %d of %d", peer, met, goals)
	var missed []string
	for _, row := range rows {
		if g := row.Goals[peer]; g.Met != nil && !*g.Met {
			missed = append(missed, fmt.Sprintf("%s %s, want %s", row.Title, g.Got, g.Goal))
		}
	}
	for _, m := range missed {
		s += "\n  NOT MET: " + m
	}
	return s
}

// scopeLine gives, on every row that has figures of both, the scoped
// policy volume's ratio to direct over the unscoped one's: what scoping
// costs on top of the policy proxy.
func scopeLine(rows []Row) string {
	var cells []string
	for _, row := range rows {
		if s, ok := row.ScopeCost(); ok {
			cells = append(cells, fmt.Sprintf("%s %.2f", row.Title, s))
		}
	}
	if len(cells) == 0 {
		return ""
	}
	return "policy+scope against policy (its ratio to direct over policy's): " + strings.Join(cells, "; ")
}

// ScopeCost is the scoped policy volume's ratio to direct over the
// unscoped policy volume's on the row, and whether the row has both.
func (row *Row) ScopeCost() (float64, bool) {
	s, ok := row.Ratio[PluginPolicyScope]
	p, ok2 := row.Ratio[PluginPolicy]
	if !ok || !ok2 || p == 0 {
		return 0, false
	}
	return s / p, true
}

// goalsMet counts peer's goals on rows that it met, and those it has a
// figure for.
func goalsMet(rows []Row, peer string) (met, goals int) {
	for _, row := range rows {
		if g := row.Goals[peer]; g.Met != nil {
			goals++
			if *g.Met {
				met++
			}
		}
	}
	return met, goals
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (row *Row) cell(peer string) string {
	v, ok := row.Median[peer]
	if !ok {
		return "—"
	}
	s := row.value(peer)
	if sp, ok := row.Spread[peer]; ok {
		s += fmt.Sprintf(" (%.2f-%.2f)", sp[0], sp[1])
	} else if peer == Direct && !row.Lower {
		s = fmt.Sprintf(row.format, v)
	}
	if f := row.Failed[peer]; f > 0 && row.Key != KeyBurst {
		s += " !"
	}
	return s
}

// value is peer's figure on the row: its ratio to direct where it has
// one, its median otherwise.
func (row *Row) value(peer string) string {
	if r, ok := row.Ratio[peer]; ok && peer != Direct {
		return fmt.Sprintf("%.2f", r)
	}
	return fmt.Sprintf(row.format, row.Median[peer])
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
