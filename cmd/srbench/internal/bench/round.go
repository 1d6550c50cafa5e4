package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
)

// rotate starts the order of the peers at a different one each round,
// so that none is always measured first, or right after socat.
func rotate(peers []*peer, r int) []*peer {
	if len(peers) == 0 {
		return nil
	}
	k := r % len(peers)
	return append(append([]*peer{}, peers[k:]...), peers[:k]...)
}

// settle waits until socat's per-connection children are gone, so that
// the next measurement does not share the CPU with them.
func (h *harness) settle(ctx context.Context, p *peer) error {
	if p.proc == nil {
		return nil
	}
	err := p.proc.WaitNoChildren(ctx, 15*time.Second)
	if err != nil && ctx.Err() == nil {
		h.res.Note("%s: %v", p.name, err)
		return nil
	}
	return err
}

// step is one figure of a round: measure runs on each peer in turn, or,
// when whole is set, whole measures them all itself.
type step struct {
	peers   []*peer
	keys    []string // the rows it fills
	measure func(ctx context.Context, p *peer) error
	whole   func(ctx context.Context) error
}

// round measures every figure once, each on every peer before the next
// figure, starting with a different peer each round.
func (h *harness) round(ctx context.Context, r int) error {
	order := rotate(h.peers, r)
	var relays []*peer
	for _, p := range order {
		if p.proc != nil {
			relays = append(relays, p)
		}
	}
	var steps []step
	for _, c := range h.cfg.Clients {
		steps = append(steps, step{peers: order, keys: []string{report.KeyPingNew(c)}, measure: h.pingStep(report.KeyPingNew(c), c)})
	}
	steps = append(steps,
		step{peers: order, keys: []string{report.KeyPingKeepAlive}, measure: func(ctx context.Context, p *peer) error {
			v, err := keepAliveRate(ctx, p.addr, h.cfg.PingDuration)
			if err != nil {
				return err
			}
			h.res.Add(report.KeyPingKeepAlive, p.name, v)
			return nil
		}},
		step{peers: order, keys: []string{report.KeyDownload, report.KeyUpload, report.KeyCPU}, measure: h.bulk},
		step{peers: order, keys: []string{report.KeyBurst}, measure: func(ctx context.Context, p *peer) error {
			failed, err := burst(ctx, p.addr, h.cfg.Burst)
			if err != nil {
				return err
			}
			h.res.Add(report.KeyBurst, p.name, float64(failed))
			h.res.AddFailed(report.KeyBurst, p.name, failed, h.cfg.Burst)
			return nil
		}},
		step{peers: relays, keys: []string{report.KeyIdleMem}, measure: func(ctx context.Context, p *peer) error {
			return h.idleMemory(ctx, h.kinds[p.name], r)
		}},
	)
	if len(h.docker) > 0 {
		for _, c := range h.cfg.DockerClients {
			steps = append(steps, step{keys: []string{report.KeyDockerPing(c)}, whole: func(ctx context.Context) error {
				return h.dockerStep(ctx, r, c)
			}})
		}
	}
	for i, pr := range h.plugins {
		key := report.KeyPluginCycles(h.cfg.Volumes[i])
		steps = append(steps, step{peers: []*peer{{name: report.Plugin}}, keys: []string{key}, measure: func(ctx context.Context, _ *peer) error {
			v, err := pr.cycles(ctx, h.cfg.CycleDuration)
			if err != nil {
				return err
			}
			h.res.Add(key, report.Plugin, v)
			return nil
		}})
	}

	for _, s := range steps {
		if s.whole != nil {
			if err := s.whole(ctx); err != nil {
				return err
			}
		}
		for _, p := range s.peers {
			if err := s.measure(ctx, p); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if err := h.settle(ctx, p); err != nil {
				return err
			}
		}
		if err := h.done(r, s.keys...); err != nil {
			return err
		}
	}
	return nil
}

// pingStep measures the new-connection ping rate with clients clients.
func (h *harness) pingStep(key string, clients int) func(context.Context, *peer) error {
	return func(ctx context.Context, p *peer) error {
		res, err := pingRate(ctx, p.addr, clients, h.cfg.PingDuration)
		if err != nil {
			return err
		}
		h.res.Add(key, p.name, res.rate)
		h.res.AddFailed(key, p.name, res.failed, res.ok+res.failed)
		return nil
	}
}

// done prints the round's samples of keys and checks the relays live.
func (h *harness) done(r int, keys ...string) error {
	for _, key := range keys {
		if h.leftOut[key] == r+1 {
			continue // its last samples are an earlier round's
		}
		var b strings.Builder
		fmt.Fprintf(&b, "round %d/%d  %-28s", r+1, h.cfg.Rounds, key)
		measured := false
		for _, p := range append(h.peerNames(), report.Plugin) {
			vs := h.res.Samples(key, p)
			if len(vs) == 0 {
				continue
			}
			measured = true
			if h.leftOut[key+" "+p] != r+1 {
				fmt.Fprintf(&b, "  %s %.4g", p, vs[len(vs)-1])
			}
		}
		if measured {
			h.logf("%s", b.String())
		}
	}
	return h.checkAlive()
}

// bulk measures a download and an upload through p, and the CPU time the
// relay spent on them.
func (h *harness) bulk(ctx context.Context, p *peer) error {
	var before float64
	if p.proc != nil {
		if err := h.settle(ctx, p); err != nil {
			return err
		}
		var err error
		if before, err = p.proc.CPU(); err != nil {
			return err
		}
	}
	dl, err := download(ctx, p.addr, h.cfg.Bytes, h.sum)
	if err != nil {
		return err
	}
	ul, err := upload(ctx, h.stream, p.addr, h.cfg.Bytes, h.sum)
	if err != nil {
		return err
	}
	h.res.Add(report.KeyDownload, p.name, dl)
	h.res.Add(report.KeyUpload, p.name, ul)
	if p.proc == nil {
		return nil
	}
	if err := h.settle(ctx, p); err != nil {
		return err
	}
	after, err := p.proc.CPU()
	if err != nil {
		return err
	}
	gib := float64(2*h.cfg.Bytes) / (1 << 30)
	h.res.Add(report.KeyCPU, p.name, (after-before)/gib)
	return nil
}

// idleMemory starts a fresh relay of kind k, holds cfg.Idle idle
// connections through it, and records how much its memory grew per
// connection. A fresh process keeps earlier rounds' heap out of the figure.
func (h *harness) idleMemory(ctx context.Context, k relayKind, r int) error {
	listen := filepath.Join(h.dir, fmt.Sprintf("idle-%s-%d.sock", k.name, r))
	p, err := startRelay(ctx, h.procs, k, listen, h.up.addr)
	if err != nil {
		return err
	}
	defer p.proc.Stop()
	// One request first, so the figure leaves out what the first
	// connection sets up once.
	if err := pingNew(ctx, listen); err != nil {
		return fmt.Errorf("first ping: %w", err)
	}
	if err := h.settle(ctx, p); err != nil {
		return err
	}
	base, err := h.quietUpstream(ctx)
	if err != nil {
		return err
	}
	before, _, err := p.proc.MemKiB()
	if err != nil {
		return err
	}
	// The policy proxy dials the upstream at a connection's first
	// request: each connection carries one before it idles.
	conns, err := holdIdle(ctx, listen, h.cfg.Idle, k.name == report.Policy)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	want := base + int64(h.cfg.Idle)
	if k.name == report.Policy {
		// The first ping's upstream connection waits in the proxy's pool
		// (counted in base) and serves the first connection held.
		want--
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = waitActive(wctx, h.up.addr, want)
	cancel()
	if err != nil {
		return err
	}
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	after, children, err := p.proc.MemKiB()
	closeAll(conns)
	if err != nil {
		return err
	}
	h.res.Add(report.KeyIdleMem, k.name, float64(after-before)/float64(h.cfg.Idle))
	if !h.idleNote {
		h.idleNote = true
		h.res.Note("memory per idle conn: growth of the relay's Pss (smaps_rollup; VmRSS where missing) with the connections held, over their count; user-space pages only, not socket buffers")
	}
	if k.name == report.Socat && r == 0 {
		h.res.Note("socat forks a process per connection: its memory is the Pss of the listener plus all its children (%d of them with %d connections held); their page tables and kernel stacks are not counted", children, h.cfg.Idle)
	}
	// Let socat reap its own children before it is stopped; orphans
	// would wait for init to reap them.
	return h.settle(ctx, p)
}

// quietUpstream waits until the upstream's connection count has not
// changed for a moment (connections of the previous figure closing), and
// returns it.
func (h *harness) quietUpstream(ctx context.Context) (int64, error) {
	last, err := upstream.Active(ctx, h.up.addr)
	for same, deadline := 0, time.Now().Add(5*time.Second); err == nil && same < 5 && time.Now().Before(deadline); {
		if err := sleep(ctx, pollInterval); err != nil {
			return 0, err
		}
		var n int64
		if n, err = upstream.Active(ctx, h.up.addr); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last, err
}
