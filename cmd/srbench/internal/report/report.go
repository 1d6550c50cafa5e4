// Package report turns the samples of a bench run into its report: the
// median of every figure per peer, its ratio to direct, the goals each
// peer is held to, and the report's tables and JSON.
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
	Lower   bool                 `json:"lower_is_better,omitempty"`
	Median  map[string]float64   `json:"median"`
	Samples map[string][]float64 `json:"samples"`
	// Ratio is each peer's median over direct's, for rows that have direct.
	Ratio map[string]float64 `json:"ratio_to_direct,omitempty"`
	// Failed counts failed connections over all rounds, per peer.
	Failed map[string]int `json:"failed_connections,omitempty"`
	// Attempts counts the connections tried over all rounds, per peer,
	// for rows that count failures.
	Attempts map[string]int `json:"attempts,omitempty"`
	// Goals are the goals of every peer (among Peers) that has one on
	// this figure, by peer.
	Goals map[string]PeerGoal `json:"goals,omitempty"`
	// AheadOfSocat says if sockrelay's median beats socat's.
	AheadOfSocat *bool `json:"ahead_of_socat,omitempty"`

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
}

// Results gathers the samples of every round.
type Results struct {
	layout   Layout
	defs     []rowDef
	samples  map[string]map[string][]float64
	failed   map[string]map[string]int
	attempts map[string]map[string]int
	notes    []string
}

// NewResults is ready for the samples of a run that measures l.
func NewResults(l Layout) *Results {
	return &Results{layout: l, defs: rowDefs(l), samples: map[string]map[string][]float64{},
		failed: map[string]map[string]int{}, attempts: map[string]map[string]int{}}
}

// Add records a sample of peer on the row key.
func (rs *Results) Add(key, peer string, v float64) {
	if rs.samples[key] == nil {
		rs.samples[key] = map[string][]float64{}
	}
	rs.samples[key][peer] = append(rs.samples[key][peer], v)
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
		if dv, ok := row.Median[Direct]; ok && dv > 0 && !d.lower {
			row.Ratio = map[string]float64{}
			for p, v := range row.Median {
				row.Ratio[p] = v / dv
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
			}
			if row.Goals == nil {
				row.Goals = map[string]PeerGoal{}
			}
			row.Goals[g.peer] = pg
		}
		sr, okR := row.Median[Sockrelay]
		so, okS := row.Median[Socat]
		if okR && okS {
			ahead := sr > so
			if d.lower {
				ahead = sr < so || sr == 0 && so == 0
			}
			row.AheadOfSocat = &ahead
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

// mainPeers are the columns of the first table; every other peer gets a
// table of its own, beside direct, with its own goals.
var mainPeers = []string{Direct, Sockrelay, Socat}

// peerTitles head the tables of the other peers.
var peerTitles = map[string]string{
	Policy: "policy: sockrelay serve --policy full, HTTP parsed, one audit line per request",
	Idmap:  "idmap: an idmapped bind mount of the socket, no process in the data path",
}

// WriteTable prints the report as tables: one row per figure; first
// direct, sockrelay and socat with sockrelay's goals, then a table for
// each other peer (policy, idmap) beside direct with its own goals.
// Values of peers other than direct carry their ratio to direct.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "sockrelay bench: median of %d round%s; (x.xx) = ratio to direct, same run; %s per transfer\n\n", r.Rounds, plural(r.Rounds), sizeString(r.Bytes))
	var peers, others []string
	for _, p := range r.Peers {
		if slices.Contains(mainPeers, p) {
			peers = append(peers, p)
		} else {
			others = append(others, p)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"figure", "unit"}
	head = append(head, peers...)
	head = append(head, "goal (sockrelay)", "met", "vs socat")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	var plugin, figures []Row
	for _, row := range r.Rows {
		if _, ok := row.Median[Plugin]; ok {
			plugin = append(plugin, row)
			continue
		}
		figures = append(figures, row)
		cells := []string{row.Title, row.Unit}
		for _, p := range peers {
			cells = append(cells, row.cell(p))
		}
		g := row.Goals[Sockrelay]
		cells = append(cells, dash(g.Goal), yesNo(g.Met, "met", "NOT MET"), yesNo(row.AheadOfSocat, "ahead", "BEHIND"))
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, r.summary())
	for _, p := range others {
		if err := writePeerTable(w, p, figures); err != nil {
			return err
		}
	}
	if len(plugin) > 0 {
		fmt.Fprintln(w, "\nplugin VolumeDriver cost (sockrelay plugin, real HTTP protocol, no direct or socat equivalent):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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

// writePeerTable prints the figures of peer beside direct's, with its
// goals, and how many it met.
func writePeerTable(w io.Writer, peer string, rows []Row) error {
	title := peerTitles[peer]
	if title == "" {
		title = peer
	}
	fmt.Fprintf(w, "\n%s (same rounds):\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tunit\t%s\t%s\tgoal (%s)\tmet\n", Direct, peer, peer)
	for _, row := range rows {
		cells := []string{row.Title, row.Unit, row.cell(Direct), row.cell(peer), "—", "—"}
		if g, ok := row.Goals[peer]; ok {
			cells[4] = g.Goal
			cells[5] = yesNo(g.Met, "met", "NOT MET")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	met, goals := goalsMet(rows, peer)
	_, err := fmt.Fprintf(w, "\ngoals met (%s): %d of %d\n", peer, met, goals)
	return err
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

// summary counts sockrelay's goals met and the figures ahead of socat.
func (r *Report) summary() string {
	var versus, ahead int
	for _, row := range r.Rows {
		if row.AheadOfSocat != nil {
			versus++
			if *row.AheadOfSocat {
				ahead++
			}
		}
	}
	met, goals := goalsMet(r.Rows, Sockrelay)
	s := fmt.Sprintf("\ngoals met (%s): %d of %d", Sockrelay, met, goals)
	if versus > 0 {
		s += fmt.Sprintf("; sockrelay ahead of socat: %d of %d figures", ahead, versus)
	}
	return s
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
	s := fmt.Sprintf(row.format, v)
	if ratio, ok := row.Ratio[peer]; ok && peer != Direct {
		s += fmt.Sprintf(" (%.2f)", ratio)
	}
	if f := row.Failed[peer]; f > 0 && row.Key != KeyBurst {
		s += " !"
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func yesNo(b *bool, yes, no string) string {
	switch {
	case b == nil:
		return "—"
	case *b:
		return yes
	default:
		return no
	}
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
