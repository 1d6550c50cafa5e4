package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/mounts/mounttest"
)

// TestMain lets Run start this test binary as its upstream, and as the
// user namespace holder of the idmap column.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == idmap.HelperArg {
		idmap.RunHelper()
		os.Exit(0)
	}
	if path := os.Getenv(upstream.Env); path != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err := upstream.Serve(ctx, path)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	mounttest.Main(m)
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "srb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveUpstream runs upstream.Serve in this process for the test.
func serveUpstream(t *testing.T) string {
	t.Helper()
	addr := filepath.Join(tempDir(t), "up.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- upstream.Serve(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("upstream.Serve: %v", err)
		}
	})
	for range 100 {
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("upstream does not answer")
	return ""
}

func TestUpstream(t *testing.T) {
	ctx := t.Context()
	addr := serveUpstream(t)
	s := upstream.NewStream(upstream.Seed)
	if err := pingNew(ctx, addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
	for _, n := range []int64{1, 3*mib + 5} {
		if _, err := download(ctx, addr, n, s.Sum(n)); err != nil {
			t.Errorf("download %d: %v", n, err)
		}
		if _, err := upload(ctx, s, addr, n, s.Sum(n)); err != nil {
			t.Errorf("upload %d: %v", n, err)
		}
	}
	if _, err := keepAliveRate(ctx, addr, 20*time.Millisecond); err != nil {
		t.Errorf("kept-alive ping: %v", err)
	}
	if failed, err := burst(ctx, addr, 50); err != nil || failed != 0 {
		t.Errorf("burst of 50: %d failed, %v", failed, err)
	}

	conns, err := holdIdle(ctx, addr, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitActive(wctx, addr, 10); err != nil {
		t.Errorf("waitActive with 10 idle connections: %v", err)
	}
	closeAll(conns)
	// Primed: each carries a kept-alive ping, then idles, still open.
	conns, err = holdIdle(ctx, addr, 5, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitActive(wctx, addr, 5); err != nil {
		t.Errorf("waitActive with 5 primed idle connections: %v", err)
	}
	for i, c := range conns {
		if err := pingOn(c); err != nil {
			t.Errorf("primed connection %d: a second ping: %v", i, err)
		}
	}
	closeAll(conns)
}

// A changed byte is an error, never a figure.
func TestChecksumMismatchIsAnError(t *testing.T) {
	ctx := t.Context()
	s := upstream.NewStream(upstream.Seed)
	const n = 2*upstream.BlockSize + 3
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		s.WriteN(&buf, n)
		buf.Bytes()[upstream.BlockSize+7] ^= 1
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%x %d\n", sha256.Sum256(nil), got)
	})
	addr := filepath.Join(tempDir(t), "bad.sock")
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	if _, err := download(ctx, addr, n, s.Sum(n)); !errors.Is(err, errChecksum) {
		t.Errorf("download of a changed stream: got %v, want %v", err, errChecksum)
	}
	if _, err := upload(ctx, s, addr, n, s.Sum(n)); !errors.Is(err, errChecksum) {
		t.Errorf("upload answered with a wrong sum: got %v, want %v", err, errChecksum)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"256MiB", 256 << 20}, {"1GiB", 1 << 30}, {"64M", 64 << 20}, {"4K", 4096},
		{"1048576", 1 << 20}, {"10B", 10}, {" 2 MiB ", 2 << 20},
	} {
		if got, err := ParseSize(c.in); err != nil || got != c.want {
			t.Errorf("ParseSize(%q): got %d, %v, want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1.5GiB", "MiB", "2TiB", "2048GiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): got %d, want an error", in, got)
		}
	}
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
	cfg := QuickConfig()
	cfg.Rounds = 3
	rs := newResults(rowDefs(cfg))
	for _, v := range []struct {
		key, peer string
		vals      []float64
	}{
		{keyPingNew(1), Direct, []float64{1000, 900, 1100}},
		{keyPingNew(1), Sockrelay, []float64{600, 500, 700}},
		{keyPingNew(1), Socat, []float64{200, 250, 150}},
		{keyPingNew(1), Policy, []float64{520, 480, 510}},
		{keyPingNew(1), Idmap, []float64{950, 960, 990}},
		{keyBurst, Direct, []float64{0, 0, 0}},
		{keyBurst, Sockrelay, []float64{0, 0, 0}},
		{keyBurst, Socat, []float64{100, 120, 90}},
		{keyBurst, Policy, []float64{0, 1, 0}},
		{keyBurst, Idmap, []float64{0, 0, 0}},
		{keyIdleMem, Policy, []float64{40, 41, 39}},
		{keyIdleMem, Sockrelay, []float64{30, 31, 29}},
		{keyIdleMem, Socat, []float64{60, 61, 59}},
		{keyPluginCycles(10), pluginPeer, []float64{50, 40, 60}},
	} {
		for _, x := range v.vals {
			rs.add(v.key, v.peer, x)
		}
	}
	rs.addFailed(keyPingNew(1), Socat, 7, 100)
	rs.note("a note")
	peers := []string{Direct, Sockrelay, Socat, Policy, Idmap}
	rep := rs.report(cfg, time.Now(), peers, cfg.Rounds)

	ping := rep.Row(keyPingNew(1))
	if ping == nil {
		t.Fatal("no ping row")
	}
	if got := ping.Ratio[Sockrelay]; got != 0.6 {
		t.Errorf("sockrelay ratio: got %v, want 0.6", got)
	}
	if ping.Met == nil || !*ping.Met || ping.AheadOfSocat == nil || !*ping.AheadOfSocat {
		t.Errorf("ping: got met %v, ahead %v; want met (0.60 ≥ 0.55), ahead", ping.Met, ping.AheadOfSocat)
	}
	if g := ping.Goals[Policy]; g.Issue != 5 || g.Goal != "ratio ≥ 0.50" || g.Met == nil || !*g.Met {
		t.Errorf("ping, policy: got goal %+v, want issue 5's ratio ≥ 0.50, met (0.51)", g)
	}
	if g := ping.Goals[Idmap]; g.Issue != 4 || g.Goal != "ratio ≥ 0.97" || g.Met == nil || *g.Met {
		t.Errorf("ping, idmap: got goal %+v, want issue 4's ratio ≥ 0.97, not met (0.96)", g)
	}
	if g := ping.Goals[Sockrelay]; g.Issue != 3 || g.Goal != ping.Goal || g.Met != ping.Met {
		t.Errorf("ping, sockrelay: got goal %+v, want issue 3's, as Goal and Met", g)
	}
	if _, ok := rep.Row(keyBurst).Goals[Idmap]; ok {
		t.Error("burst: idmap has a goal, but issue 4 sets ratios only")
	}
	if b := rep.Row(keyBurst); b.Met == nil || !*b.Met || !*b.AheadOfSocat || b.Ratio != nil {
		t.Errorf("burst: got met %v, ahead %v, ratio %v; want met, ahead, no ratio", b.Met, b.AheadOfSocat, b.Ratio)
	}
	if m := rep.Row(keyIdleMem); m.Met == nil || *m.Met || !*m.AheadOfSocat {
		t.Errorf("memory: got met %v, ahead %v; want not met (30 KiB > 20), ahead", m.Met, m.AheadOfSocat)
	}
	if rep.Row(keyDownload) != nil {
		t.Error("a row with no samples is reported")
	}

	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"new-conn ping, 1 client", "600 (0.60)", "ratio ≥ 0.55", "NOT MET", "ahead",
		"plugin Create+Mount+Unmount+Remove, 10 volumes", "50.0 cycles/s", "socat: 7 of 100 connections failed", "a note",
		"goals of issue 3 met: 2 of 3; sockrelay ahead of socat: 3 of 3 figures",
		"goal (issue 5)", "510 (0.51)", "goals of issue 5 met (policy): 1 of 1",
		"goal (issue 4)", "960 (0.96)", "goals of issue 4 met (idmap): 0 of 1"} {
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
	if len(back.Rows) != len(rep.Rows) || back.Row(keyPingNew(1)).Median[Socat] != 200 || !slices.Equal(back.Peers, peers) {
		t.Errorf("JSON round trip: got %v %+v", back.Peers, back.Rows)
	}
	if g := back.Row(keyPingNew(1)).Goals[Idmap]; g.Issue != 4 || g.Met == nil || *g.Met {
		t.Errorf("JSON round trip: idmap's goal: got %+v", g)
	}

	// Without the idmap column there is no idmap goal nor table.
	rep = rs.report(cfg, time.Now(), []string{Direct, Sockrelay, Socat}, cfg.Rounds)
	if _, ok := rep.Row(keyPingNew(1)).Goals[Idmap]; ok {
		t.Error("a goal for idmap, which is not a column")
	}
}

func TestRatioGoal(t *testing.T) {
	g := ratioAtLeast(0.55)
	for _, c := range []struct {
		ratio float64
		want  bool
	}{{0.6, true}, {0.55, true}, {0.5, false}} {
		met, known := g.met(&Row{Ratio: map[string]float64{Policy: c.ratio}}, Policy)
		if !known || met != c.want {
			t.Errorf("ratio %v: got met %v (known %v), want %v", c.ratio, met, known, c.want)
		}
	}
	if _, known := g.met(&Row{Ratio: map[string]float64{Policy: 1}}, Sockrelay); known {
		t.Error("a row without sockrelay has a known goal for sockrelay")
	}
}

func TestConfigCheck(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"rounds":   func(c *Config) { c.Rounds = 0 },
		"bytes":    func(c *Config) { c.Bytes = 0 },
		"clients":  func(c *Config) { c.Clients = []int{1, 0} },
		"volumes":  func(c *Config) { c.Volumes = []int{-1} },
		"duration": func(c *Config) { c.PingDuration = 0 },
	} {
		c := QuickConfig()
		mod(&c)
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%s: Run accepted a bad config", name)
		}
	}
}

// probeIdmap says whether an idmapped mount of a socket in the temp dir,
// where Run makes its own, can be made here.
func probeIdmap() error {
	dir, err := os.MkdirTemp("", "srb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "probe.sock"))
	if err != nil {
		return err
	}
	defer ln.Close()
	ns := &idmap.Namespaces{Self: os.Args[0]}
	defer ns.Close()
	return ns.Probe(filepath.Join(dir, "probe.sock"), idmapMapping)
}

// idmapMounts lists the mounts of this process named like Run's idmap
// mounts.
func idmapMounts(t *testing.T) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4], "/srb") && strings.HasSuffix(f[4], "idmap.sock") {
			out = append(out, f[4])
		}
	}
	return out
}
