package driver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/relay"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// RelayMode serves a volume with a byte relay to its upstream, on a
// socket owned as the volume's uid, gid and perm say.
type RelayMode struct {
	Log     *slog.Logger
	Metrics *metrics.Metrics // nil: none
}

func (*RelayMode) Name() string      { return "relay" }
func (*RelayMode) Options() []Option { return ownerOptions }

func (*RelayMode) Check(v *Volume) error {
	_, err := v.SocketOwner()
	return err
}

func (*RelayMode) Describe(v *Volume, st map[string]any) { describeOwner(v, st) }

func (m *RelayMode) Start(ctx context.Context, dir Dir, v *Volume) (Server, error) {
	own, err := v.SocketOwner()
	if err != nil {
		return nil, err
	}
	ln, err := unixsock.Listen(dir.RW, v.Socket, own)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stats := &relay.Stats{}
	r := &relayServer{
		srv:    relay.Server{Upstream: v.Upstream, Log: m.Log.With("volume", v.Name), Stats: stats},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	// Metrics read the Status counters at a scrape: the relay counts
	// nothing more.
	r.detach = m.Metrics.Volume(v.Name, v.Mode).Attach(metrics.Connections|metrics.UpstreamFailures, func() metrics.Counts {
		return metrics.Counts{Open: stats.Active.Load(), Conns: stats.Total.Load(), In: stats.In.Load(), Out: stats.Out.Load(),
			UpstreamFailures: stats.Failed.Load()}
	})
	go func() {
		defer close(r.done)
		r.srv.Serve(ctx, ln)
		r.closeErr = ln.Close()
	}()
	return r, nil
}

type relayServer struct {
	srv      relay.Server
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	closeErr error
	detach   func() // from the volume's metrics
}

func (r *relayServer) Stop() error {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.detach()
	})
	return r.closeErr
}

func (r *relayServer) Status(st map[string]any) {
	st["connections"] = r.srv.Stats.Active.Load()
	st["connections_total"] = r.srv.Stats.Total.Load()
	st["upstream_failures"] = r.srv.Stats.Failed.Load()
	st["bytes_relayed"] = r.srv.Stats.Bytes()
	if e := r.srv.Stats.LastError.Load(); e != nil {
		st["last_error"] = e.Err
		st["last_error_at"] = e.At.Format(time.RFC3339)
	}
}
