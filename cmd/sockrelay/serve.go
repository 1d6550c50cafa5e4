package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/config"
	"github.com/sockrelay/sockrelay/internal/driver"
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
	var mode driver.Mode = &driver.RelayMode{Log: log}
	if cfg.Policy != "" {
		audit := audit.New(stdout)
		defer audit.Close()
		mode = &driver.PolicyMode{Log: log, Audit: audit, Policies: policy.Source{Dir: cfg.PolicyDir},
			Learn: driver.LearnDir{Dir: cfg.LearnDir}}
		v.Mode, v.Options["policy"] = "policy", cfg.Policy
		if err := mode.Check(v); err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
	}
	srv, err := mode.Start(ctx, driver.Dir{RW: dir, View: dir}, v)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	log.Info("sockrelay serving", "version", version, "mode", v.Mode, "listen", cfg.Listen, "target", cfg.Target,
		"owner", fmt.Sprintf("%d:%d", cfg.UID, cfg.GID), "perm", fmt.Sprintf("%04o", cfg.Perm), "backlog", unixsock.Backlog(), "fd_limit", fdLimit())
	<-ctx.Done()
	err = srv.Stop()
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
