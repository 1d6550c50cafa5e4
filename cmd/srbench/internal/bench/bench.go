// Package bench measures sockrelay as users run it, beside a direct
// connection and other relays: it starts a synthetic upstream HTTP server
// on a Unix socket, reaches it through volumes of the installed plugin
// (relay, policy, idmap: their host-side socket paths, mounted by a
// container of the plugin's daemon), through `sockrelay serve` with and
// without the policy proxy, socat and wollomatic/socket-proxy, and
// interleaves the measurements over several rounds. Each peer's figure is
// measured right beside one of direct's, and its ratio is the median of
// those pairs' ratios, shown with their spread (package report). It
// reports; it never fails on a figure, only on an error such as a
// checksum mismatch or a peer that will not start.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
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

	// Sockrelay is the sockrelay binary; empty leaves sockrelay serve (and
	// the policy proxy and the plugin figure) out.
	Sockrelay string
	// Socat is the socat binary; empty leaves socat out.
	Socat string
	// SocketProxy is the wollomatic/socket-proxy binary; empty leaves it
	// out.
	SocketProxy string
	// DockerSocket is a userns-remapped daemon's socket: its /_ping is
	// measured, and Plugin is installed there; empty skips both. The
	// bench never starts, stops or configures a daemon (make bench starts
	// one of its own and passes its socket); in it, it makes only a
	// container, an image and volumes of its own, and removes them. A
	// daemon that stops answering, or restarts, during a /_ping figure
	// has that round of it left out, with a note.
	DockerSocket string
	// Plugin is the name of the installed sockrelay plugin on
	// DockerSocket whose volumes are measured; empty leaves them out.
	Plugin string
	// Self is the program started with upstream.Env set to serve the
	// upstream, and with HoldEnv in the container that keeps the plugin's
	// volumes mounted; empty means this very program (os.Executable).
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
	if c.Plugin != "" && c.DockerSocket == "" {
		errs = append(errs, errors.New("plugin: needs the socket of the daemon it is installed in"))
	}
	return errors.Join(errs...)
}

// harness holds what one run started; close stops it all.
type harness struct {
	cfg      Config
	dir      string
	upDir    string // the upstream's directory: below the plugin's SOCKET_DIR when the plugin is measured
	stream   *upstream.Stream
	sum      [32]byte // sha256 of the first cfg.Bytes of the stream
	up       *peer    // the upstream, in a process of its own
	procs    *proctree.Set
	peers    []*peer              // direct first
	kinds    map[string]relayKind // to start fresh relays of each peer
	docker   []*peer              // direct to the daemon first; empty when skipped
	inst     *installed           // the installed plugin; nil when not measured
	leftOut  map[string]int       // row key (and " peer"): the last round (from 1) left out
	plugins  []*pluginRun         // one per cfg.Volumes, when measured
	res      *report.Results
	idleNote bool
	rounds   int // rounds completed
}

// Run measures every figure cfg asks for and returns the report. On an
// error it returns the report of what was measured so far, and the error.
// Every process and file it made is gone when it returns, and so is all
// it made in the daemon.
func Run(ctx context.Context, cfg Config) (*report.Report, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	start := time.Now()
	h := &harness{cfg: cfg, res: report.NewResults(cfg.layout()), kinds: map[string]relayKind{}}
	err := h.run(ctx)
	if cerr := h.close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
	}
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

// self is the program the bench starts as its upstream and runs in the
// holding container: cfg.Self, or this very program.
func (h *harness) self() (string, error) {
	if h.cfg.Self != "" {
		return h.cfg.Self, nil
	}
	return os.Executable()
}

func (h *harness) setup(ctx context.Context) error {
	h.raiseNoFile()
	dir, err := os.MkdirTemp("", "srb")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	h.dir, h.upDir = dir, dir
	h.procs = proctree.NewSet(dir)
	// sun_path is 108 bytes; the longest socket path below it is about 30.
	if len(dir) > 70 {
		return fmt.Errorf("temp dir %s is too long for socket paths (sun_path is 108 bytes): set TMPDIR to a short directory", dir)
	}
	if h.cfg.Plugin != "" {
		h.logf("plugin %s on %s", h.cfg.Plugin, h.cfg.DockerSocket)
		if h.inst, err = inspectInstalled(ctx, h.cfg.DockerSocket, h.cfg.Plugin, dir); err != nil {
			return err
		}
		// The plugin reaches only targets below its SOCKET_DIR.
		if h.upDir, err = os.MkdirTemp(h.inst.sockDir, "srb"); err != nil {
			return fmt.Errorf("the upstream's directory in the plugin's SOCKET_DIR: %w", err)
		}
		if len(h.upDir) > 90 {
			return fmt.Errorf("the plugin's SOCKET_DIR %s is too long for the upstream's socket path (sun_path is 108 bytes)", h.inst.sockDir)
		}
	}
	h.stream = upstream.NewStream(upstream.Seed)
	h.sum = h.stream.Sum(h.cfg.Bytes)
	if err := h.startUpstream(ctx); err != nil {
		return err
	}
	h.peers = []*peer{{name: report.Direct, addr: h.up.addr}}
	if h.inst != nil {
		self, err := h.self()
		if err != nil {
			return err
		}
		h.logf("plugin %s: a volume of each mode, mounted by a container that holds still", h.cfg.Plugin)
		peers, docker, err := h.inst.start(ctx, self, h.up.addr, h.dockerSocket())
		if err != nil {
			return fmt.Errorf("plugin %s: %w", h.cfg.Plugin, err)
		}
		h.peers = append(h.peers, peers...)
		h.docker = docker // direct is put first by setupDocker
		h.res.Note("plugin: volumes of the installed plugin %s (relay, policy=full, idmap; and policy=full with scope=volume on the daemon alone), reached through their host-side socket paths (%s/plugins/<id>/propagated-mount/<volume>/docker.sock) and mounted by a container that holds still; its CPU figure is the plugin process's", h.cfg.Plugin, h.inst.root)
		for _, n := range h.inst.notes {
			h.res.Note("%s", n)
		}
		if len(docker) > 0 {
			h.res.Note("dockerd docker ps -a and docker inspect: GET %s, and GET /containers/<id>/json of a container made through the policy+scope volume (in its scope, so every peer may inspect it); through policy+scope, ps lists the scope's containers alone", psPath)
		}
	}
	if h.cfg.Sockrelay != "" {
		h.kinds[report.Serve] = serveKind(h.cfg.Sockrelay)
		h.kinds[report.ServePolicy] = servePolicyKind(h.cfg.Sockrelay)
		h.res.Note("serve-policy: sockrelay serve --policy full, its audit lines going to a log file (the plugin's go to the daemon's log)")
	}
	if h.cfg.Socat != "" {
		h.kinds[report.Socat] = socatKind(h.cfg.Socat)
	}
	if h.cfg.SocketProxy != "" {
		h.kinds[report.SocketProxy] = socketProxyKind(h.cfg.SocketProxy)
		h.res.Note("socket-proxy: wollomatic/socket-proxy (%s), every method allowed on every path, log level ERROR", h.cfg.SocketProxy)
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
	if err := h.setupDocker(ctx); err != nil {
		return err
	}
	if err := h.setupPlugins(ctx); err != nil {
		return err
	}
	return h.warmUp(ctx)
}

// dockerSocket is the daemon's socket when its /_ping is measured.
func (h *harness) dockerSocket() string {
	if len(h.cfg.DockerClients) == 0 {
		return ""
	}
	return h.cfg.DockerSocket
}

func (h *harness) setupDocker(ctx context.Context) error {
	sock := h.dockerSocket()
	if sock == "" {
		h.docker = nil
		return nil
	}
	i, err := newDockerAPI(sock).info(ctx)
	if err != nil {
		return fmt.Errorf("dockerd on %s: %w", sock, err)
	}
	if !i.remapped() {
		return fmt.Errorf("dockerd on %s does not run with userns-remap", sock)
	}
	docker := append([]*peer{{name: report.Direct, addr: sock}}, h.docker...)
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
	h.docker = docker
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

func (h *harness) close() error {
	var errs []error
	for _, pr := range h.plugins {
		pr.close()
	}
	if h.inst != nil {
		errs = append(errs, h.inst.close())
	}
	if h.procs != nil {
		h.procs.StopAll()
	}
	if h.upDir != "" && h.upDir != h.dir {
		errs = append(errs, os.RemoveAll(h.upDir))
	}
	if h.dir != "" {
		errs = append(errs, os.RemoveAll(h.dir))
	}
	return errors.Join(errs...)
}

// relayNames are the peers that are relay processes, in the order they
// are started.
var relayNames = []string{report.Serve, report.ServePolicy, report.Socat, report.SocketProxy}

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

// checkAlive fails when a relay has died, or the plugin's process is not
// the one measured: its figures would be nonsense.
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
	if h.inst != nil {
		return h.inst.alive()
	}
	return nil
}

func (h *harness) startUpstream(ctx context.Context) error {
	self := h.cfg.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	}
	addr := filepath.Join(h.upDir, "up.sock")
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
