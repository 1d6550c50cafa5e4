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
// rounds, per peer, with its ratio to direct and the goals of issues 3
// (sockrelay), 4 (idmap) and 5 (policy).
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
	// Goal is issue 3's goal for sockrelay on this figure; Met says if
	// the median reached it.
	Goal string `json:"goal,omitempty"`
	Met  *bool  `json:"goal_met,omitempty"`
	// Goals are the goals of every peer that has one on this figure
	// (sockrelay's included), by peer.
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

// PeerGoal is the goal of one peer on one figure, from the issue that
// sets it, and whether the median reached it (absent when the peer has no
// figure).
type PeerGoal struct {
	Issue int    `json:"issue"`
	Goal  string `json:"goal"`
	Met   *bool  `json:"met,omitempty"`
}

// goalIssues are the issues that set each peer's goals.
var goalIssues = map[string]int{Sockrelay: 3, Idmap: 4, Policy: 5}

// goal is a goal of a peer on a figure.
type goal struct {
	text string
	met  func(r *Row, peer string) (met, known bool)
}

func ratioAtLeast(x float64) *goal {
	return &goal{text: fmt.Sprintf("ratio ≥ %.2f", x), met: func(r *Row, peer string) (bool, bool) {
		v, ok := r.Ratio[peer]
		return v >= x, ok
	}}
}

func atMost(x float64, unit string) *goal {
	return &goal{text: fmt.Sprintf("≤ %g %s", x, unit), met: func(r *Row, peer string) (bool, bool) {
		v, ok := r.Median[peer]
		return v <= x, ok
	}}
}

// Layout is what a run measures, as far as the rows and their titles
// depend on it.
type Layout struct {
	// Bytes is the size of each download and upload.
	Bytes int64
	// Clients are the numbers of concurrent clients of the new-connection
	// ping.
	Clients []int
	// Burst is how many connections are made at the same instant.
	Burst int
	// Idle is how many idle connections are held for the memory figure.
	Idle int
	// DockerClients are the client counts of the /_ping figure on the
	// real daemon.
	DockerClients []int
	// Volumes are the numbers of existing volumes of the plugin figure.
	Volumes []int
}

// rowDef describes a figure before it is measured.
type rowDef struct {
	key, title, unit string
	lower            bool
	format           string           // of one value
	goals            map[string]*goal // by peer
	counted          bool             // failures are counted
}

// goal sets peer's goal on the figure; a nil g sets none.
func (d *rowDef) goal(peer string, g *goal) {
	if g == nil {
		return
	}
	if d.goals == nil {
		d.goals = map[string]*goal{}
	}
	d.goals[peer] = g
}

// Row keys, for Results.Add.
const (
	KeyPingKeepAlive = "ping_keepalive"
	KeyDownload      = "download"
	KeyUpload        = "upload"
	KeyBurst         = "burst_failures"
	KeyIdleMem       = "idle_memory"
	KeyCPU           = "cpu_per_gib"
)

func KeyPingNew(clients int) string      { return fmt.Sprintf("ping_new_%d", clients) }
func KeyDockerPing(clients int) string   { return fmt.Sprintf("docker_ping_new_%d", clients) }
func KeyPluginCycles(volumes int) string { return fmt.Sprintf("plugin_cycles_%d", volumes) }

// pingGoals are the goals for new-connection pings, by peer and clients:
// issue 3's for sockrelay, issue 5's for policy.
var pingGoals = map[string]map[int]float64{
	Sockrelay: {1: 0.55, 8: 0.50},
	Policy:    {1: 0.50, 8: 0.45},
}

// idmapGoal is issue 4's goal for idmap on every figure with a ratio: it
// is direct.
const idmapGoal = 0.97

// pingGoal is peer's goal for a new-connection ping with clients, or nil.
func pingGoal(peer string, clients int) *goal {
	if g, ok := pingGoals[peer][clients]; ok {
		return ratioAtLeast(g)
	}
	return nil
}

func rowDefs(cfg Layout) []rowDef {
	var defs []rowDef
	pingDef := func(key, title string, c int) rowDef {
		d := rowDef{key: key, title: fmt.Sprintf(title, c, plural(c)), unit: "req/s", format: "%.0f", counted: true}
		d.goal(Sockrelay, pingGoal(Sockrelay, c))
		d.goal(Policy, pingGoal(Policy, c))
		d.goal(Idmap, ratioAtLeast(idmapGoal))
		return d
	}
	for _, c := range cfg.Clients {
		defs = append(defs, pingDef(KeyPingNew(c), "new-conn ping, %d client%s", c))
	}
	keepAlive := rowDef{key: KeyPingKeepAlive, title: "kept-alive ping, 1 client", unit: "req/s", format: "%.0f"}
	keepAlive.goal(Sockrelay, ratioAtLeast(0.65))
	keepAlive.goal(Policy, ratioAtLeast(0.45))
	keepAlive.goal(Idmap, ratioAtLeast(idmapGoal))
	defs = append(defs, keepAlive)
	for _, d := range []rowDef{
		{key: KeyDownload, title: fmt.Sprintf("download %s, sha256 checked", sizeString(cfg.Bytes)), unit: "MiB/s", format: "%.0f"},
		{key: KeyUpload, title: fmt.Sprintf("upload %s, sha256 checked", sizeString(cfg.Bytes)), unit: "MiB/s", format: "%.0f"},
	} {
		d.goal(Sockrelay, ratioAtLeast(0.90))
		d.goal(Policy, ratioAtLeast(0.80))
		d.goal(Idmap, ratioAtLeast(idmapGoal))
		defs = append(defs, d)
	}
	burst := rowDef{key: KeyBurst, title: fmt.Sprintf("failed connects, burst of %d", cfg.Burst), unit: "conns", lower: true, format: "%.0f", counted: true}
	burst.goal(Sockrelay, atMost(0, "failed"))
	mem := rowDef{key: KeyIdleMem, title: fmt.Sprintf("memory per idle conn, %d held (Pss)", cfg.Idle), unit: "KiB", lower: true, format: "%.1f"}
	mem.goal(Sockrelay, atMost(20, "KiB"))
	defs = append(defs, burst, mem,
		rowDef{key: KeyCPU, title: "relay CPU during download+upload", unit: "s/GiB", lower: true, format: "%.2f"},
	)
	for _, c := range cfg.DockerClients {
		defs = append(defs, pingDef(KeyDockerPing(c), "dockerd /_ping, new conn, %d client%s", c))
	}
	for _, v := range cfg.Volumes {
		defs = append(defs, rowDef{key: KeyPluginCycles(v), title: fmt.Sprintf("plugin Create+Mount+Unmount+Remove, %d volumes", v), unit: "cycles/s", format: "%.1f"})
	}
	return defs
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
		for p, g := range d.goals {
			pg := PeerGoal{Issue: goalIssues[p], Goal: g.text}
			if met, known := g.met(&row, p); known {
				pg.Met = &met
			}
			if p == Sockrelay {
				row.Goal, row.Met = pg.Goal, pg.Met
			}
			if !slices.Contains(peers, p) {
				continue
			}
			if row.Goals == nil {
				row.Goals = map[string]PeerGoal{}
			}
			row.Goals[p] = pg
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
// table of its own, beside direct, with its issue's goals.
var mainPeers = []string{Direct, Sockrelay, Socat}

// peerTitles head the tables of the other peers.
var peerTitles = map[string]string{
	Policy: "policy: sockrelay serve --policy full, HTTP parsed, one audit line per request",
	Idmap:  "idmap: an idmapped bind mount of the socket, no process in the data path",
}

// WriteTable prints the report as tables: one row per figure; first
// direct, sockrelay and socat with issue 3's goals for sockrelay, then a
// table for each other peer (policy, idmap) beside direct with its own
// issue's goals. Values of peers other than direct carry their ratio to
// direct.
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
		cells = append(cells, dash(row.Goal), yesNo(row.Met, "met", "NOT MET"), yesNo(row.AheadOfSocat, "ahead", "BEHIND"))
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

// writePeerTable prints the figures of peer beside direct's, with the
// goals of its issue, and how many it met.
func writePeerTable(w io.Writer, peer string, rows []Row) error {
	issue := goalIssues[peer]
	title := peerTitles[peer]
	if title == "" {
		title = peer
	}
	fmt.Fprintf(w, "\n%s (same rounds):\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tunit\t%s\t%s\tgoal (issue %d)\tmet\n", Direct, peer, issue)
	var goals, met int
	for _, row := range rows {
		g, hasGoal := row.Goals[peer]
		cells := []string{row.Title, row.Unit, row.cell(Direct), row.cell(peer), "—", "—"}
		if hasGoal {
			cells[4] = g.Goal
			cells[5] = yesNo(g.Met, "met", "NOT MET")
			if g.Met != nil {
				goals++
				if *g.Met {
					met++
				}
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\ngoals of issue %d met (%s): %d of %d\n", issue, peer, met, goals)
	return err
}

// summary counts issue 3's goals met and the figures ahead of socat.
func (r *Report) summary() string {
	var goals, met, versus, ahead int
	for _, row := range r.Rows {
		if row.Met != nil {
			goals++
			if *row.Met {
				met++
			}
		}
		if row.AheadOfSocat != nil {
			versus++
			if *row.AheadOfSocat {
				ahead++
			}
		}
	}
	s := fmt.Sprintf("\ngoals of issue 3 met: %d of %d", met, goals)
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
