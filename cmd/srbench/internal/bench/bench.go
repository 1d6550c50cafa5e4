// Package bench measures sockrelay beside a direct connection and socat:
// it starts a synthetic upstream HTTP server on a Unix socket, the relays
// in front of it (sockrelay serve, as a byte relay and as the policy proxy
// set to allow everything, and socat), makes an idmapped bind mount of it
// when root, and interleaves the measurements of every peer over several
// rounds. It reports the median of every figure with its ratio to direct
// and the goals of sockrelay, policy and idmap (package report). It
// reports; it never fails on a figure, only on an error such as a checksum
// mismatch or a peer that will not start.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/proctree"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
	"github.com/sockrelay/sockrelay/internal/idmap"
)

// Config says what to measure and how long.
type Config struct {
	// Rounds is how many times every figure is measured; the report
	// gives the median.
	Rounds int
	// Bytes is the size of each download and upload.
	Bytes int64
	// PingDuration is how long each ping rate is measured.
	PingDuration time.Duration
	// Clients are the numbers of concurrent clients of the new-connection
	// ping (each request on a new connection).
	Clients []int
	// Burst is how many connections are made at the same instant.
	Burst int
	// Idle is how many idle connections are held for the memory figure.
	Idle int
	// DockerClients are the client counts of the /_ping figure on the
	// real daemon; none skips it.
	DockerClients []int
	// Volumes are the numbers of existing volumes at which the plugin's
	// Create+Mount+Unmount+Remove cycle is timed; none skips it.
	Volumes []int
	// CycleDuration is how long the plugin cycles are timed.
	CycleDuration time.Duration

	// Sockrelay is the sockrelay binary; empty leaves sockrelay (and the
	// policy proxy and the plugin figure) out.
	Sockrelay string
	// Socat is the socat binary; empty leaves socat out.
	Socat string
	// DockerSocket is the daemon's socket, measured only when it answers
	// and the daemon runs with userns-remap; empty skips it. A daemon that
	// stops answering, or restarts, during a /_ping figure has that round
	// of it left out, with a note.
	DockerSocket string
	// Self is the program started with upstream.Env set to serve the
	// upstream, and with idmap.HelperArg to hold a user namespace for the
	// idmap column; empty means this very program (os.Executable).
	Self string

	// Progress, when set, gets a line per figure and round as they come.
	Progress io.Writer
}

// DefaultConfig is what `make bench` measures.
func DefaultConfig() Config {
	return Config{
		Rounds:        5,
		Bytes:         256 * mib,
		PingDuration:  time.Second,
		Clients:       []int{1, 8, 64},
		Burst:         1000,
		Idle:          2000,
		DockerClients: []int{1, 8},
		Volumes:       []int{10, 5000},
		CycleDuration: time.Second,
		DockerSocket:  "/var/run/docker.sock",
	}
}

// QuickConfig measures every figure briefly: fewer rounds, smaller
// transfers and counts. The figures are noisy; the run checks the harness.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Rounds = 2
	c.Bytes = 16 * mib
	c.PingDuration = 200 * time.Millisecond
	c.Burst = 200
	c.Idle = 200
	c.Volumes = []int{10, 500}
	c.CycleDuration = 200 * time.Millisecond
	return c
}

// layout is the part of c that decides the report's rows and titles.
func (c Config) layout() report.Layout {
	return report.Layout{Bytes: c.Bytes, Clients: c.Clients, Burst: c.Burst, Idle: c.Idle, DockerClients: c.DockerClients, Volumes: c.Volumes}
}

func (c Config) check() error {
	var errs []error
	if c.Rounds < 1 {
		errs = append(errs, errors.New("rounds: want at least 1"))
	}
	if c.Bytes < 1 || c.Bytes > upstream.MaxTransfer {
		errs = append(errs, errors.New("bytes: want from 1 byte to 1 TiB"))
	}
	if c.PingDuration <= 0 || c.CycleDuration <= 0 {
		errs = append(errs, errors.New("durations: want more than 0"))
	}
	if c.Burst < 1 || c.Idle < 1 {
		errs = append(errs, errors.New("burst and idle counts: want at least 1"))
	}
	for _, n := range slices.Concat(c.Clients, c.DockerClients, c.Volumes) {
		if n < 1 {
			errs = append(errs, errors.New("client and volume counts: want at least 1"))
			break
		}
	}
	return errors.Join(errs...)
}

// harness holds what one run started; close stops it all.
type harness struct {
	cfg      Config
	dir      string
	stream   *upstream.Stream
	sum      [32]byte // sha256 of the first cfg.Bytes of the stream
	up       *peer    // the upstream, in a process of its own
	procs    *proctree.Set
	peers    []*peer              // direct first
	kinds    map[string]relayKind // to start fresh relays of each peer
	docker   []*peer              // direct to the daemon first; empty when skipped
	userns   *idmap.Namespaces    // of the idmap mounts; nil when not root
	mounts   []*idmapMount        // every idmap mount made, detached by close
	dkIdmap  *idmapMount          // the idmap mount of the daemon's socket, if any
	leftOut  map[string]int       // row key (and " peer"): the last round (from 1) left out
	plugins  []*pluginRun         // one per cfg.Volumes, when measured
	res      *report.Results
	idleNote bool
	rounds   int // rounds completed
}

// Run measures every figure cfg asks for and returns the report. On an
// error it returns the report of what was measured so far, and the error.
// Every process and file it made is gone when it returns.
func Run(ctx context.Context, cfg Config) (*report.Report, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	start := time.Now()
	h := &harness{cfg: cfg, res: report.NewResults(cfg.layout()), kinds: map[string]relayKind{}}
	err := h.run(ctx)
	h.close()
	if ctx.Err() != nil {
		err = fmt.Errorf("bench interrupted: %w", ctx.Err())
	}
	rounds := h.rounds
	if err != nil && h.rounds < cfg.Rounds {
		rounds++ // the medians include what it measured
		h.res.Note("stopped in round %d of %d (%v); the medians include that round's figures so far", h.rounds+1, cfg.Rounds, err)
	}
	return h.res.Report(start, h.peerNames(), rounds), err
}

func (h *harness) run(ctx context.Context) error {
	if err := h.setup(ctx); err != nil {
		return err
	}
	for r := range h.cfg.Rounds {
		if err := h.round(ctx, r); err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		h.rounds++
	}
	return nil
}

func (h *harness) logf(format string, args ...any) {
	if h.cfg.Progress != nil {
		fmt.Fprintf(h.cfg.Progress, format+"\n", args...)
	}
}

func (h *harness) setup(ctx context.Context) error {
	h.raiseNoFile()
	dir, err := os.MkdirTemp("", "srb")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	h.dir = dir
	h.procs = proctree.NewSet(dir)
	// sun_path is 108 bytes; the longest socket name here is about 30.
	if len(dir) > 70 {
		return fmt.Errorf("temp dir %s is too long for socket paths (sun_path is 108 bytes): set TMPDIR to a short directory", dir)
	}
	h.stream = upstream.NewStream(upstream.Seed)
	h.sum = h.stream.Sum(h.cfg.Bytes)
	if err := h.startUpstream(ctx); err != nil {
		return err
	}
	h.peers = []*peer{{name: report.Direct, addr: h.up.addr}}
	if h.cfg.Sockrelay != "" {
		h.kinds[report.Sockrelay] = sockrelayKind(h.cfg.Sockrelay)
		h.kinds[report.Policy] = policyKind(h.cfg.Sockrelay)
		h.res.Note("policy: sockrelay serve --policy full (every request parsed, allowed, and written as a JSON audit line to its stdout, a log file); it keeps up to 32 idle upstream connections for the next client connections, as HTTP reverse proxies do; each of its idle connections carries one kept-alive /_ping first, as the proxy takes its upstream connection at a connection's first request")
		h.res.Note("reference from another harness, not measured here: wollomatic/socket-proxy 1.13 set to allow everything, as ratios to direct: 0.47 new-conn ping (1 client), 0.37 at 8 clients, 0.35 kept-alive, 0.66 download; sockguard 1.7 and cetusguard lower still")
	}
	if h.cfg.Socat != "" {
		h.kinds[report.Socat] = socatKind(h.cfg.Socat)
	}
	for _, name := range relayNames {
		k, ok := h.kinds[name]
		if !ok {
			continue
		}
		p, err := startRelay(ctx, h.procs, k, filepath.Join(dir, name+".sock"), h.up.addr)
		if err != nil {
			return err
		}
		h.peers = append(h.peers, p)
	}
	if err := h.setupIdmap(ctx); err != nil {
		return err
	}
	if err := h.setupDocker(ctx); err != nil {
		return err
	}
	if err := h.setupPlugins(ctx); err != nil {
		return err
	}
	return h.warmUp(ctx)
}

// startUpstream runs upstream.Serve in a child process: cfg.Self with
// upstream.Env set.
func (h *harness) startUpstream(ctx context.Context) error {
	self := h.cfg.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	}
	addr := filepath.Join(h.dir, "up.sock")
	env := []string{"PATH=" + os.Getenv("PATH"), upstream.Env + "=" + addr}
	p, err := h.procs.Start("upstream", []string{self}, env)
	if err != nil {
		return err
	}
	if err := p.WaitReady(ctx, addr, 10*time.Second); err != nil {
		return fmt.Errorf("upstream (%s with %s set): %w", self, upstream.Env, err)
	}
	h.up = &peer{name: "upstream", addr: addr, proc: p}
	return nil
}

// raiseNoFile lifts the bench's open-file limit to the hard limit: the
// burst and the idle connections hold thousands of sockets at once.
func (h *harness) raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		h.res.Note("cannot read RLIMIT_NOFILE: %v", err)
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			h.res.Note("cannot raise RLIMIT_NOFILE: %v", err)
		}
	}
	// Each idle or burst connection costs the bench up to 2 fds (client
	// and upstream side).
	if need := uint64(2*max(h.cfg.Burst, h.cfg.Idle) + 512); rl.Cur < need {
		h.res.Note("RLIMIT_NOFILE is %d, below the %d the counts need: expect failures that are the bench's, not the relay's", rl.Cur, need)
	}
}

func (h *harness) setupDocker(ctx context.Context) error {
	if h.cfg.DockerSocket == "" || len(h.cfg.DockerClients) == 0 {
		return nil
	}
	sock := h.cfg.DockerSocket
	userns, err := dockerUserns(ctx, sock)
	// A socket that is there but does not answer may be a daemon that
	// someone is restarting: give it a moment.
	for deadline := time.Now().Add(dockerWait); err != nil && ctx.Err() == nil && time.Now().Before(deadline); {
		if _, serr := os.Stat(sock); serr != nil {
			break
		}
		if sleep(ctx, 500*time.Millisecond) == nil {
			userns, err = dockerUserns(ctx, sock)
		}
	}
	if err != nil {
		h.res.Note("dockerd /_ping: skipped, %s does not answer (%v)", sock, err)
		h.logf("dockerd /_ping: skipped: %v", err)
		return nil
	}
	if !userns {
		h.res.Note("dockerd /_ping: skipped, the daemon on %s does not run with userns-remap", sock)
		h.logf("dockerd /_ping: skipped: no userns-remap")
		return nil
	}
	docker := []*peer{{name: report.Direct, addr: sock}}
	for _, name := range relayNames {
		k, ok := h.kinds[name]
		if !ok {
			continue
		}
		p, err := startRelay(ctx, h.procs, k, filepath.Join(h.dir, "dk-"+name+".sock"), sock)
		if err != nil {
			return fmt.Errorf("relay to dockerd: %w", err)
		}
		docker = append(docker, p)
	}
	if p := h.setupDockerIdmap(ctx, sock); p != nil {
		docker = append(docker, p)
	}
	h.docker = docker
	return nil
}

// setupDockerIdmap makes the idmap peer of the /_ping figure: an
// idmapped bind mount of the daemon's socket. It returns nil, with a note
// saying why, when it cannot.
func (h *harness) setupDockerIdmap(ctx context.Context, sock string) *peer {
	const label = "the dockerd /_ping figure"
	if h.userns == nil {
		return nil // not root: said already
	}
	if err := h.userns.Probe(sock, idmapMapping); err != nil {
		h.skipIdmap(label, "%v", err)
		return nil
	}
	m, err := h.mountIdmap(sock, "dk-idmap.sock")
	if err == nil {
		err = m.check(ctx)
	}
	if err != nil {
		h.skipIdmap(label, "%v", err)
		return nil
	}
	h.dkIdmap = m
	return &peer{name: report.Idmap, addr: m.path}
}

// dockerUserns asks the daemon's GET /info whether it remaps user ids.
func dockerUserns(ctx context.Context, sock string) (bool, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx, sock) }}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return false, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET /info: %s", resp.Status)
	}
	var info struct{ SecurityOptions []string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&info); err != nil {
		return false, fmt.Errorf("GET /info: %w", err)
	}
	for _, o := range info.SecurityOptions {
		if strings.Contains(o, "name=userns") {
			return true, nil
		}
	}
	return false, nil
}

func (h *harness) setupPlugins(ctx context.Context) error {
	switch {
	case len(h.cfg.Volumes) == 0:
		return nil
	case h.cfg.Sockrelay == "":
		h.res.Note("plugin VolumeDriver cost: skipped, no sockrelay binary")
		return nil
	case os.Geteuid() != 0:
		h.res.Note("plugin VolumeDriver cost: skipped, needs root (Mount chowns each volume's socket to the remapped root %d)", remapID)
		h.logf("plugin VolumeDriver cost: skipped: not root")
		return nil
	}
	for _, n := range h.cfg.Volumes {
		h.logf("starting sockrelay plugin with %d existing volumes", n)
		pr, err := startPlugin(ctx, h.procs, h.cfg.Sockrelay, h.dir, n)
		if err != nil {
			return err
		}
		h.plugins = append(h.plugins, pr)
	}
	return nil
}

// warmUp runs a little traffic through every peer, so that the first
// round does not pay for page faults and cold caches alone.
func (h *harness) warmUp(ctx context.Context) error {
	n := min(h.cfg.Bytes, 8*mib)
	sum := h.stream.Sum(n)
	for _, p := range h.peers {
		if _, err := pingRate(ctx, p.addr, 1, 50*time.Millisecond); err != nil {
			return err
		}
		if _, err := download(ctx, p.addr, n, sum); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if _, err := upload(ctx, h.stream, p.addr, n, sum); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return h.checkAlive()
}

func (h *harness) close() {
	for _, pr := range h.plugins {
		pr.close()
	}
	if h.procs != nil {
		h.procs.StopAll()
	}
	h.closeIdmap()
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// relayNames are the peers that are relay processes, in the order they
// are started.
var relayNames = []string{report.Sockrelay, report.Socat, report.Policy}

// peerNames are the columns: direct and every peer set up, in peerOrder.
func (h *harness) peerNames() []string {
	have := map[string]bool{report.Direct: true}
	for _, n := range relayNames {
		_, have[n] = h.kinds[n]
	}
	for _, p := range slices.Concat(h.peers, h.docker) {
		have[p.name] = true
	}
	var names []string
	for _, n := range peerOrder {
		if have[n] {
			names = append(names, n)
		}
	}
	return names
}

// checkAlive fails when a relay has died: its figures would be nonsense.
func (h *harness) checkAlive() error {
	for _, p := range slices.Concat([]*peer{h.up}, h.peers, h.docker) {
		if p.proc != nil {
			if err := p.proc.Exited(); err != nil {
				return err
			}
		}
	}
	for _, pr := range h.plugins {
		if err := pr.proc.Exited(); err != nil {
			return err
		}
	}
	return nil
}

// ParseSize reads a byte count such as 256MiB, 1GiB, 64M or 1048576.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 1 || n > upstream.MaxTransfer/mult {
		return 0, fmt.Errorf("size %q: want a count of bytes from 1 to 1TiB, such as 256MiB", s)
	}
	return n * mult, nil
}
