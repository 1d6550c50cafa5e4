package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/config"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/driver"
	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/owner"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/state"
)

// version and commit are set by the linker (make build).
var (
	version = "dev"
	commit  = ""
)

const usage = `usage: sockrelay <command> [flags]

commands:
  plugin    serve the VolumeDriver API (the managed plugin's entrypoint)
  serve     relay one socket to another, outside Docker (sockrelay serve -h)
  state     state export: the volumes as the single state file of older builds
  policy    policy suggest: the tightest policy file for what an audit log shows
  version   print the version and commit
`

// shutdownGrace bounds shutdown: dockerd sends SIGKILL 10 s after SIGTERM.
const shutdownGrace = 7 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "plugin":
		cfg, err := config.Load(args[1:], getenv)
		if err != nil {
			return err
		}
		return runPlugin(ctx, cfg, cfg.Logger(stdout), stdout)
	case "serve":
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help") {
			fmt.Fprintln(stdout, config.ServeUsage)
			return nil
		}
		cfg, err := config.LoadServe(args[1:], getenv)
		if err != nil {
			return err
		}
		return runServe(ctx, cfg, cfg.Logger(stdout), stdout)
	case "state":
		return runState(args[1:], stdout, stderr)
	case "policy":
		return runPolicy(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "sockrelay %s %s\n", version, buildCommit())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func runPlugin(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	log.Info("sockrelay starting", "version", version, "commit", buildCommit(), "pid", os.Getpid(), "fd_limit", fdLimit())
	// The audit log is JSON whatever LOG_FORMAT says: one line a request.
	// A file that cannot be written stops the start, before anything.
	audit, err := openAudit(cfg.Audit, cfg.LogDir, log, stdout)
	if err != nil {
		return fmt.Errorf("AUDIT_FILE: %w (the file lies in the sockrelay/ directory of the logdir mount, whose source is /var/log by default: docker plugin set sockrelay logdir.source=DIR)", err)
	}
	defer audit.Close()
	store, err := state.New(cfg.StateDir)
	if err != nil {
		return err
	}
	daemonSocket := filepath.Join(cfg.SocketDirMount, "docker.sock")
	if _, err := os.Stat(daemonSocket); err != nil {
		// Not fatal: the daemon may be restarting. But docker plugin
		// upgrade takes mounts from the new build's config, so a
		// sockdir.source set before is back at /var/run.
		log.Warn("no docker.sock in the sockdir mount: set sockdir.source to the directory of the daemon's socket (docker plugin upgrade resets it to /var/run)",
			"SOCKET_DIR", cfg.HostSocketDir, "err", err)
	}
	res := &owner.Resolver{
		RemapUser:    cfg.RemapUser,
		SubUID:       cfg.SubUIDFile,
		SubGID:       cfg.SubGIDFile,
		DaemonSocket: daemonSocket,
	}
	if cfg.RemapUID != nil {
		res.Override = &owner.Range{Remapped: *cfg.RemapUID != 0, UID: *cfg.RemapUID, GID: *cfg.RemapGID, Size: 65536, Source: "settings REMAP_UID/REMAP_GID"}
		if !res.Override.Remapped {
			res.Override.Size = 1<<32 - 1
		}
	}
	// Relays live until the plugin stops; their context ends after the
	// API socket is closed, so no Mount can start one during shutdown.
	relayCtx, cancelRelays := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRelays()
	userns := &idmap.Namespaces{}
	defer userns.Close()
	var mets *metrics.Metrics // nil without METRICS_SOCKET: nothing counted
	if cfg.MetricsSocket != "" {
		mets = metrics.New()
	}
	d, err := driver.New(relayCtx, driver.Config{
		Log:            log,
		Store:          store,
		Owner:          res,
		VolumeRoot:     cfg.VolumeRoot,
		HostSocketDir:  cfg.HostSocketDir,
		SocketDirMount: cfg.SocketDirMount,
		Modes: driver.Modes(driver.ModeDeps{
			Log: log, Userns: userns, Audit: audit,
			Policies: policy.Source{Dir: cfg.PolicyDir, Shown: cfg.PolicyDirHost},
			Metrics:  mets,
			Identify: &peer.Resolver{Inspect: daemon.InspectCaller},
			Learn:    driver.LearnDir{Dir: cfg.LearnDir, Shown: cfg.LearnDirHost},
		}),
		Metrics:   mets,
		InUse:     daemon.Client{Socket: daemonSocket}.VolumeInUse,
		AskDaemon: askDaemon(daemon.Client{Socket: daemonSocket}),
	})
	if err != nil {
		return err
	}

	// Listen first: dockerd gives the plugin about 9 s to answer.
	ln, err := listenPlugin(cfg.PluginSocket)
	if err != nil {
		d.Close()
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- volume.NewHandler(mets.Driver(d)).Serve(ln) }()
	log.Info("plugin API listening", "socket", cfg.PluginSocket)
	metricsDone := serveMetrics(relayCtx, cfg, mets, log)

	d.Reconcile()
	// Volumes whose records are lost are rebuilt from the daemon's
	// answers, asked now that the plugin answers the daemon.
	recovered := make(chan struct{})
	go func() {
		defer close(recovered)
		d.Recover(relayCtx)
	}()

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
		log.Error("plugin API stopped", "err", err)
	}
	ln.Close()
	done := make(chan struct{})
	go func() {
		cancelRelays()
		<-recovered
		<-metricsDone
		d.Close()
		close(done)
	}()
	select {
	case <-done:
		log.Info("stopped")
	case <-time.After(shutdownGrace):
		log.Warn("shutdown took too long; exiting with relays still open")
	}
	return err
}

// serveMetrics serves mets on the METRICS_SOCKET until ctx ends; the
// channel it returns is closed then. A socket it cannot listen on is
// logged, and the plugin serves its volumes without metrics: a plugin
// that does not start loses every container's socket.
func serveMetrics(ctx context.Context, cfg *config.Config, mets *metrics.Metrics, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if mets == nil {
		close(done)
		return done
	}
	ln, err := metrics.ListenUnix(cfg.MetricsSocket)
	if err != nil {
		log.Error("no metrics: cannot listen on METRICS_SOCKET; the plugin serves its volumes without them. Set METRICS_SOCKET to a free path in an existing directory below SOCKET_DIR (docker plugin set), or to nothing",
			"METRICS_SOCKET", cfg.MetricsSocketHost, "err", err)
		close(done)
		return done
	}
	log.Info("metrics listening", "socket", cfg.MetricsSocketHost)
	go func() {
		defer close(done)
		if err := mets.Serve(ctx, ln); err != nil {
			log.Error("metrics stopped", "err", err)
		}
	}()
	return done
}

// openAudit opens the audit log: the file a.File, creating its directory
// dir (when not "") if missing, or else stdout.
func openAudit(a config.Audit, dir string, log *slog.Logger, stdout io.Writer) (*audit.Log, error) {
	if a.File == "" {
		return audit.New(stdout), nil
	}
	if dir != "" {
		if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	l, err := audit.OpenFile(audit.FileConfig{Path: a.File, MaxSize: a.MaxSize, Keep: a.Keep, Refuse: a.Refuse, Log: log})
	if err != nil {
		return nil, err
	}
	onFull := "drop"
	if a.Refuse {
		onFull = "refuse"
	}
	log.Info("audit log to a file", "file", a.File, "max_size", a.MaxSize, "keep", a.Keep, "on_full", onFull)
	return l, nil
}

// askDaemon asks the daemon what it holds of a volume, and which running
// containers use it.
func askDaemon(c daemon.Client) func(ctx context.Context, name string) (driver.DaemonVolume, error) {
	return func(ctx context.Context, name string) (driver.DaemonVolume, error) {
		v, err := c.Volume(ctx, name)
		var se *daemon.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound && strings.Contains(se.Message, "no such volume") {
			return driver.DaemonVolume{}, nil
		}
		if err != nil {
			return driver.DaemonVolume{}, err
		}
		running, err := c.RunningWith(ctx, name)
		if err != nil {
			return driver.DaemonVolume{}, err
		}
		return driver.DaemonVolume{Found: true, Driver: v.Driver, Options: v.Options, Status: v.Status, Running: running}, nil
	}
}

// listenPlugin listens on the plugin API socket, replacing a stale file.
func listenPlugin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("plugin socket %s is served by another process", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("plugin socket: %w", err)
	}
	return ln, nil
}

// fdLimit is the open-file limit in force. The Go runtime raises the soft
// limit to the hard one at start; each relayed connection takes two
// descriptors.
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}
