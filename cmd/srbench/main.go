// Command srbench measures sockrelay as users run it (make bench): the
// installed plugin's relay, policy and idmap volumes, sockrelay serve
// with and without the policy proxy, socat and wollomatic/socket-proxy,
// each beside a direct connection measured right next to it. It prints
// the ratios to direct (medians of per-pair ratios, with their spread)
// and the goals of the plugin's volumes; it exits non-zero only on an
// error, never on a figure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/bench"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
)

func main() {
	// The bench runs this very program in a container of the plugin's
	// daemon to keep the plugin's volumes mounted; there it only holds.
	if os.Getenv(bench.HoldEnv) != "" {
		bench.Hold()
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "srbench:", err)
		os.Exit(1)
	}
}

// run is main without the process, so that tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// The bench starts this very program again as its upstream.
	if path := getenv(upstream.Env); path != "" {
		return upstream.Serve(ctx, path)
	}
	fs := flag.NewFlagSet("srbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "measure briefly: 2 rounds, 16MiB transfers, smaller counts")
	rounds := fs.Int("rounds", 0, "rounds; the report gives the median (default 5, 2 with -quick)")
	size := fs.String("bytes", "", "size of each download and upload, such as 256MiB (default 256MiB, 16MiB with -quick)")
	dur := fs.Duration("duration", 0, "how long each ping rate is measured (default 1s, 200ms with -quick)")
	jsonOut := fs.String("json", "", "also write the report as JSON to `FILE`")
	sockrelay := fs.String("sockrelay", "bin/sockrelay", "the sockrelay binary (make build)")
	socat := fs.String("socat", "socat", "the socat binary; empty leaves socat out")
	socketProxy := fs.String("socket-proxy", "", "the wollomatic/socket-proxy binary; empty leaves it out")
	docker := fs.String("docker", "", "the `socket` of a userns-remapped daemon (one of the bench's own: make bench starts one) for the /_ping figure and -plugin; empty skips both")
	plugin := fs.String("plugin", "", "the `name` of the sockrelay plugin installed in the -docker daemon whose volumes are measured; empty leaves them out")
	volumes := fs.String("volumes", "", "the `counts` of existing volumes beside which the plugin's Create+Mount+Unmount+Remove cycles are timed, such as 10,5000 (default 10,5000; 10,500 with -quick)")
	cycles := fs.Duration("cycles", 0, "how long the plugin's cycles are timed at each count (default 1s, 200ms with -quick)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	cfg := bench.DefaultConfig()
	if *quick {
		cfg = bench.QuickConfig()
	}
	if *rounds != 0 {
		cfg.Rounds = *rounds
	}
	if *size != "" {
		n, err := bench.ParseSize(*size)
		if err != nil {
			return fmt.Errorf("-bytes: %w", err)
		}
		cfg.Bytes = n
	}
	if *dur != 0 {
		cfg.PingDuration = *dur
	}
	if *volumes != "" {
		cfg.Volumes = nil
		for _, f := range strings.Split(*volumes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				return fmt.Errorf("-volumes: %q: want counts of volumes, such as 10,5000", f)
			}
			cfg.Volumes = append(cfg.Volumes, n)
		}
	}
	if *cycles != 0 {
		cfg.CycleDuration = *cycles
	}
	bin, err := filepath.Abs(*sockrelay)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		return fmt.Errorf("-sockrelay: %w; run make build first", err)
	}
	cfg.Sockrelay = bin
	if *socat != "" {
		path, err := exec.LookPath(*socat)
		if err != nil {
			return fmt.Errorf("-socat: %w; install it (apt-get install socat) or pass -socat '' to leave it out", err)
		}
		cfg.Socat = path
	}
	if *socketProxy != "" {
		path, err := exec.LookPath(*socketProxy)
		if err != nil {
			return fmt.Errorf("-socket-proxy: %w", err)
		}
		cfg.SocketProxy = path
	}
	cfg.DockerSocket, cfg.Plugin = *docker, *plugin
	cfg.Progress = stderr

	start := time.Now()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		fmt.Fprintln(stdout)
		if werr := rep.WriteTable(stdout); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Fprintf(stdout, "\n(%d CPUs, %s, run took %s)\n", runtime.NumCPU(), runtime.Version(), time.Since(start).Round(time.Second))
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, rep); werr != nil {
				return errors.Join(err, werr)
			}
		}
	}
	return err
}

func writeJSON(path string, rep *report.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-json: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("-json: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("-json: %w", err)
	}
	return nil
}
