package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sockrelay/sockrelay/internal/config"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/driver"
	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// runServe is `sockrelay serve`: the plugin's relay (or policy proxy),
// run by hand or by systemd, as a drop-in for the socat recipe. It starts
// the mode as the plugin does, on a volume of one socket whose owner is
// given in host ids.
func runServe(ctx context.Context, cfg *config.Serve, log *slog.Logger, stdout io.Writer) error {
	dir, err := os.Open(filepath.Dir(cfg.Listen))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer dir.Close()
	v := &driver.Volume{
		Name: filepath.Base(cfg.Listen), Mode: "relay", Socket: filepath.Base(cfg.Listen),
		Target: cfg.Target, Upstream: cfg.Target,
		Options: map[string]string{
			"uid":  strconv.FormatUint(uint64(cfg.UID), 10),
			"gid":  strconv.FormatUint(uint64(cfg.GID), 10),
			"perm": fmt.Sprintf("%04o", cfg.Perm),
		},
	}
	var mets *metrics.Metrics
	var metricsLn net.Listener
	if cfg.Metrics != "" {
		// Taken first: a metrics address that is not free stops serve
		// before it makes its socket.
		if metricsLn, err = metrics.Listen(cfg.Metrics); err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		defer metricsLn.Close()
		mets = metrics.New()
	}
	var mode driver.Mode = &driver.RelayMode{Log: log, Metrics: mets}
	if cfg.Policy != "" {
		pm := &driver.PolicyMode{Log: log, Policies: policy.Source{Dir: cfg.PolicyDir}, Metrics: mets,
			Identify: &peer.Resolver{Inspect: daemon.InspectCaller}, Learn: driver.LearnDir{Dir: cfg.LearnDir}}
		v.Mode, v.Options["policy"] = "policy", cfg.Policy
		if err := pm.Check(v); err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		// The audit file is opened once the rest is known good: a bad
		// setting creates nothing.
		audit, err := openAudit(cfg.Audit, "", log, stdout)
		if err != nil {
			return fmt.Errorf("--audit-file: %w", err)
		}
		defer audit.Close()
		pm.Audit, mode = audit, pm
	}
	srv, err := mode.Start(ctx, driver.Dir{RW: dir, View: dir}, v)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	log.Info("sockrelay serving", "version", version, "mode", v.Mode, "listen", cfg.Listen, "target", cfg.Target,
		"owner", fmt.Sprintf("%d:%d", cfg.UID, cfg.GID), "perm", fmt.Sprintf("%04o", cfg.Perm), "backlog", unixsock.Backlog(), "fd_limit", fdLimit())
	metricsDone := make(chan struct{})
	if mets != nil {
		mets.Volume(v.Name, v.Mode)
		log.Info("metrics listening", "addr", cfg.Metrics)
		go func() {
			defer close(metricsDone)
			if err := mets.Serve(ctx, metricsLn); err != nil {
				log.Error("metrics stopped", "err", err)
			}
		}()
	} else {
		close(metricsDone)
	}
	<-ctx.Done()
	err = srv.Stop()
	<-metricsDone
	st := map[string]any{}
	srv.Status(st)
	args := []any{}
	for _, k := range []string{"policy", "requests", "denied", "connections_total", "bytes_relayed", "learned_file", "learned_requests"} {
		if val, ok := st[k]; ok {
			args = append(args, k, val)
		}
	}
	log.Info("stopped", args...)
	return err
}
