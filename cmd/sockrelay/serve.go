package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sockrelay/sockrelay/internal/apiproxy"
	"github.com/sockrelay/sockrelay/internal/config"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/relay"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// runServe is `sockrelay serve`: the plugin's relay (or policy proxy),
// run by hand or by systemd, as a drop-in for the socat recipe.
func runServe(ctx context.Context, cfg *config.Serve, log *slog.Logger, stdout io.Writer) error {
	dir, err := os.Open(filepath.Dir(cfg.Listen))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ln, err := unixsock.Listen(dir, filepath.Base(cfg.Listen), unixsock.Owner{UID: int(cfg.UID), GID: int(cfg.GID), Perm: os.FileMode(cfg.Perm)})
	dir.Close()
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()
	log.Info("sockrelay serving", "version", version, "listen", cfg.Listen, "target", cfg.Target,
		"owner", fmt.Sprintf("%d:%d", cfg.UID, cfg.GID), "perm", fmt.Sprintf("%04o", cfg.Perm), "backlog", unixsock.Backlog(), "fd_limit", fdLimit())
	if cfg.Policy != "" {
		pol, err := policy.FromSpec(cfg.Policy, cfg.PolicyDir)
		if err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		log.Info("serving through a policy", "policy", pol.Name())
		var cur atomic.Pointer[policy.Policy]
		cur.Store(pol)
		audit := apiproxy.NewAuditLog(stdout)
		defer audit.Close()
		px := &apiproxy.Proxy{
			Volume: filepath.Base(cfg.Listen), Upstream: cfg.Target,
			Policy: cur.Load,
			Log:    log, Audit: audit,
			Stats: &apiproxy.Stats{},
		}
		var wg sync.WaitGroup
		if strings.HasPrefix(cfg.Policy, "file:") {
			wctx, stop := context.WithCancel(ctx)
			defer func() { stop(); wg.Wait() }()
			wg.Go(func() {
				policy.Watch(wctx, policy.WatchEvery, &cur, func() (*policy.Policy, error) {
					return policy.FromSpec(cfg.Policy, cfg.PolicyDir)
				}, func(c policy.Change) {
					switch {
					case c.Err != nil:
						log.Error("policy file changed but is refused; the previous policy stays in force", "policy", cfg.Policy, "err", c.Err)
					case c.Reloaded:
						log.Info("policy file changed; new policy in force", "policy", cfg.Policy)
					default:
						log.Info("policy file is back to the policy in force", "policy", cfg.Policy)
					}
				})
			})
		}
		err = px.Serve(ctx, ln)
		log.Info("stopped", "requests", px.Stats.Requests.Load(), "denied", px.Stats.Denied.Load())
		return err
	}
	srv := &relay.Server{Upstream: cfg.Target, Log: log, Stats: &relay.Stats{}}
	err = srv.Serve(ctx, ln)
	log.Info("stopped", "connections", srv.Stats.Total.Load(), "bytes", srv.Stats.Bytes.Load())
	return err
}
