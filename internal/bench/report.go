package bench

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
// rounds, per peer, with its ratio to direct and the goal of issue 3.
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

// goal is one of issue 3's goals for sockrelay.
type goal struct {
	text string
	met  func(r *Row) (met, known bool)
}

func ratioAtLeast(x float64) *goal {
	return &goal{text: fmt.Sprintf("ratio ≥ %.2f", x), met: func(r *Row) (bool, bool) {
		v, ok := r.Ratio[Sockrelay]
		return v >= x, ok
	}}
}

func atMost(x float64, unit string) *goal {
	return &goal{text: fmt.Sprintf("≤ %g %s", x, unit), met: func(r *Row) (bool, bool) {
		v, ok := r.Median[Sockrelay]
		return v <= x, ok
	}}
}

// rowDef describes a figure before it is measured.
type rowDef struct {
	key, title, unit string
	lower            bool
	format           string // of one value
	goal             *goal
	counted          bool // failures are counted
}

// Row keys.
const (
	keyPingKeepAlive = "ping_keepalive"
	keyDownload      = "download"
	keyUpload        = "upload"
	keyBurst         = "burst_failures"
	keyIdleMem       = "idle_memory"
	keyCPU           = "cpu_per_gib"
)

func keyPingNew(clients int) string      { return fmt.Sprintf("ping_new_%d", clients) }
func keyDockerPing(clients int) string   { return fmt.Sprintf("docker_ping_new_%d", clients) }
func keyPluginCycles(volumes int) string { return fmt.Sprintf("plugin_cycles_%d", volumes) }

// pingGoals are issue 3's goals for new-connection pings, by clients.
var pingGoals = map[int]float64{1: 0.55, 8: 0.50}

func rowDefs(cfg Config) []rowDef {
	var defs []rowDef
	for _, c := range cfg.Clients {
		d := rowDef{key: keyPingNew(c), title: fmt.Sprintf("new-conn ping, %d client%s", c, plural(c)), unit: "req/s", format: "%.0f", counted: true}
		if g, ok := pingGoals[c]; ok {
			d.goal = ratioAtLeast(g)
		}
		defs = append(defs, d)
	}
	defs = append(defs,
		rowDef{key: keyPingKeepAlive, title: "kept-alive ping, 1 client", unit: "req/s", format: "%.0f", goal: ratioAtLeast(0.65)},
		rowDef{key: keyDownload, title: fmt.Sprintf("download %s, sha256 checked", sizeString(cfg.Bytes)), unit: "MiB/s", format: "%.0f", goal: ratioAtLeast(0.90)},
		rowDef{key: keyUpload, title: fmt.Sprintf("upload %s, sha256 checked", sizeString(cfg.Bytes)), unit: "MiB/s", format: "%.0f", goal: ratioAtLeast(0.90)},
		rowDef{key: keyBurst, title: fmt.Sprintf("failed connects, burst of %d", cfg.Burst), unit: "conns", lower: true, format: "%.0f", goal: atMost(0, "failed"), counted: true},
		rowDef{key: keyIdleMem, title: fmt.Sprintf("memory per idle conn, %d held (Pss)", cfg.Idle), unit: "KiB", lower: true, format: "%.1f", goal: atMost(20, "KiB")},
		rowDef{key: keyCPU, title: "relay CPU during download+upload", unit: "s/GiB", lower: true, format: "%.2f"},
	)
	for _, c := range cfg.DockerClients {
		d := rowDef{key: keyDockerPing(c), title: fmt.Sprintf("dockerd /_ping, new conn, %d client%s", c, plural(c)), unit: "req/s", format: "%.0f", counted: true}
		if g, ok := pingGoals[c]; ok {
			d.goal = ratioAtLeast(g)
		}
		defs = append(defs, d)
	}
	for _, v := range cfg.Volumes {
		defs = append(defs, rowDef{key: keyPluginCycles(v), title: fmt.Sprintf("plugin Create+Mount+Unmount+Remove, %d volumes", v), unit: "cycles/s", format: "%.1f"})
	}
	return defs
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// results gathers the samples of every round.
type results struct {
	defs     []rowDef
	samples  map[string]map[string][]float64
	failed   map[string]map[string]int
	attempts map[string]map[string]int
	notes    []string
}

func newResults(defs []rowDef) *results {
	return &results{defs: defs, samples: map[string]map[string][]float64{},
		failed: map[string]map[string]int{}, attempts: map[string]map[string]int{}}
}

func (rs *results) add(key, peer string, v float64) {
	if rs.samples[key] == nil {
		rs.samples[key] = map[string][]float64{}
	}
	rs.samples[key][peer] = append(rs.samples[key][peer], v)
}

func (rs *results) addFailed(key, peer string, failed, attempts int) {
	if rs.failed[key] == nil {
		rs.failed[key] = map[string]int{}
		rs.attempts[key] = map[string]int{}
	}
	rs.failed[key][peer] += failed
	rs.attempts[key][peer] += attempts
}

func (rs *results) note(format string, args ...any) {
	rs.notes = append(rs.notes, fmt.Sprintf(format, args...))
}

// report computes medians, ratios and goals of every measured figure.
func (rs *results) report(cfg Config, start time.Time, peers []string, rounds int) *Report {
	rep := &Report{Start: start, Rounds: rounds, Bytes: cfg.Bytes, Peers: peers, Notes: rs.notes}
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
		if d.goal != nil {
			row.Goal = d.goal.text
			if met, known := d.goal.met(&row); known {
				row.Met = &met
			}
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

// WriteTable prints the report as a table: one row per figure, one column
// per peer with its ratio to direct, then the goal and whether it is met.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "sockrelay bench: median of %d round%s; (x.xx) = ratio to direct, same run; %s per transfer\n\n", r.Rounds, plural(r.Rounds), sizeString(r.Bytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"figure", "unit"}
	head = append(head, r.Peers...)
	head = append(head, "goal (sockrelay)", "met", "vs socat")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	var plugin []Row
	for _, row := range r.Rows {
		if _, ok := row.Median[pluginPeer]; ok {
			plugin = append(plugin, row)
			continue
		}
		cells := []string{row.Title, row.Unit}
		for _, p := range r.Peers {
			cells = append(cells, row.cell(p))
		}
		cells = append(cells, dash(row.Goal), yesNo(row.Met, "met", "NOT MET"), yesNo(row.AheadOfSocat, "ahead", "BEHIND"))
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, r.summary())
	if len(plugin) > 0 {
		fmt.Fprintln(w, "\nplugin VolumeDriver cost (sockrelay plugin, real HTTP protocol, no direct or socat equivalent):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, row := range plugin {
			fmt.Fprintf(tw, "  %s\t%s %s\n", row.Title, row.cell(pluginPeer), row.Unit)
		}
		tw.Flush()
	}
	var notes []string
	for _, row := range r.Rows {
		for _, p := range r.Peers {
			if f := row.Failed[p]; f > 0 && row.Key != keyBurst {
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

// summary counts the goals met and the figures ahead of socat.
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
	if f := row.Failed[peer]; f > 0 && row.Key != keyBurst {
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
