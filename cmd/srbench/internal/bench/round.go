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

// value is one figure of one measurement of a peer.
type value struct {
	key string
	v   float64
	// failed of tried connections, for the figures that count them.
	failed, tried int
	// alone is a figure with no direct counterpart (a relay's CPU time).
	alone bool
}

// measure measures one figure, or a few, of a peer.
type measure func(ctx context.Context, p *peer) ([]value, error)

// step is one figure of a round, measured on each peer in turn, each
// right beside direct; or, when whole is set, measured by whole itself.
type step struct {
	keys    []string // the rows it fills
	measure measure
	whole   func(ctx context.Context) error
}

// round measures every figure once, each on every peer before the next
// figure, starting with a different peer each round.
func (h *harness) round(ctx context.Context, r int) error {
	var steps []step
	for _, c := range h.cfg.Clients {
		steps = append(steps, step{keys: []string{report.KeyPingNew(c)}, measure: h.pingStep(report.KeyPingNew(c), c, ioTimeout)})
	}
	steps = append(steps,
		step{keys: []string{report.KeyPingKeepAlive}, measure: func(ctx context.Context, p *peer) ([]value, error) {
			v, err := keepAliveRate(ctx, p.addr, h.cfg.PingDuration)
			return []value{{key: report.KeyPingKeepAlive, v: v}}, err
		}},
		step{keys: []string{report.KeyDownload, report.KeyUpload, report.KeyCPU}, measure: h.bulk},
		step{keys: []string{report.KeyBurst}, measure: func(ctx context.Context, p *peer) ([]value, error) {
			failed, err := burst(ctx, p.addr, h.cfg.Burst)
			return []value{{key: report.KeyBurst, v: float64(failed), failed: failed, tried: h.cfg.Burst}}, err
		}},
		step{keys: []string{report.KeyIdleMem}, whole: func(ctx context.Context) error {
			for _, p := range rotate(h.peers, r) {
				if k, ok := h.kinds[p.name]; ok {
					if err := h.idleMemory(ctx, k, r); err != nil {
						return fmt.Errorf("%s: %w", p.name, err)
					}
				}
			}
			return nil
		}},
	)
	if len(h.docker) > 0 {
		for _, c := range h.cfg.DockerClients {
			steps = append(steps, step{keys: []string{report.KeyDockerPing(c)}, whole: func(ctx context.Context) error {
				return h.dockerStep(ctx, r, c)
			}})
		}
		steps = append(steps, step{keys: []string{report.KeyDockerPs}, whole: func(ctx context.Context) error {
			return h.dockerGetStep(ctx, r, report.KeyDockerPs, psPath)
		}})
		if h.inst != nil && h.inst.target != "" {
			steps = append(steps, step{keys: []string{report.KeyDockerInspect}, whole: func(ctx context.Context) error {
				return h.dockerGetStep(ctx, r, report.KeyDockerInspect, "/containers/"+h.inst.target+"/json")
			}})
		}
	}
	for i, pr := range h.plugins {
		key := report.KeyPluginCycles(h.cfg.Volumes[i])
		steps = append(steps, step{keys: []string{key}, whole: func(ctx context.Context) error {
			v, err := pr.cycles(ctx, h.cfg.CycleDuration)
			if err != nil {
				return err
			}
			h.res.Add(key, report.Plugin, v)
			return nil
		}})
	}

	for _, s := range steps {
		var err error
		if s.whole != nil {
			err = s.whole(ctx)
		} else {
			err = h.pairs(ctx, r, h.peers, s.measure, nil)
		}
		if err != nil {
			return err
		}
		if err := h.done(r, s.keys...); err != nil {
			return err
		}
	}
	return nil
}

// pairs measures every peer of peers (direct first) right beside direct:
// direct, then the peer, or the other way round, alternating from pair
// to pair and round to round, so that neither is always first. Each
// pair's figures are recorded together, or, when keep says no, none of
// the step's.
func (h *harness) pairs(ctx context.Context, r int, peers []*peer, m measure, keep func() (bool, error)) error {
	direct := peers[0]
	type pair struct {
		p      *peer
		dv, pv []value
	}
	var got []pair
	for i, p := range rotate(peers[1:], r) {
		var dv, pv []value
		for _, q := range order(direct, p, r+i) {
			vs, err := m(ctx, q)
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			if err := h.settle(ctx, q); err != nil {
				return err
			}
			if q == direct {
				dv = vs
			} else {
				pv = vs
			}
		}
		got = append(got, pair{p: p, dv: dv, pv: pv})
	}
	if keep != nil {
		if ok, err := keep(); err != nil || !ok {
			return err
		}
	}
	for _, g := range got {
		for _, v := range g.pv {
			switch d, ok := find(g.dv, v.key); {
			case v.alone || !ok:
				h.res.Add(v.key, g.p.name, v.v)
			default:
				h.res.AddPair(v.key, g.p.name, d.v, v.v)
				if d.tried > 0 {
					h.res.AddFailed(v.key, report.Direct, d.failed, d.tried)
				}
			}
			if v.tried > 0 {
				h.res.AddFailed(v.key, g.p.name, v.failed, v.tried)
			}
		}
	}
	return nil
}

// order is the order of a pair: direct first when n is even.
func order(direct, p *peer, n int) []*peer {
	if n%2 == 0 {
		return []*peer{direct, p}
	}
	return []*peer{p, direct}
}

func find(vs []value, key string) (value, bool) {
	for _, v := range vs {
		if v.key == key {
			return v, true
		}
	}
	return value{}, false
}

// pingStep measures the new-connection ping rate with clients clients,
// each request bounded by timeout.
func (h *harness) pingStep(key string, clients int, timeout time.Duration) measure {
	return func(ctx context.Context, p *peer) ([]value, error) {
		res, err := pingRateWithin(ctx, p.addr, clients, h.cfg.PingDuration, timeout)
		return []value{{key: key, v: res.rate, failed: res.failed, tried: res.ok + res.failed}}, err
	}
}

// done prints the round's figures of keys: each peer's ratio to direct
// in its pair, or its sample where it has no ratio. It checks the relays
// live.
func (h *harness) done(r int, keys ...string) error {
	for _, key := range keys {
		if h.leftOut[key] == r+1 {
			continue // its last samples are an earlier round's
		}
		var b strings.Builder
		fmt.Fprintf(&b, "round %d/%d  %-22s", r+1, h.cfg.Rounds, key)
		measured := false
		for _, p := range append(h.peerNames(), report.Plugin) {
			vs := h.res.Samples(key, p)
			if len(vs) == 0 || h.leftOut[key+" "+p] == r+1 {
				continue
			}
			measured = true
			if rs := h.res.PairRatios(key, p); len(rs) > 0 {
				fmt.Fprintf(&b, "  %s %.2f", p, rs[len(rs)-1])
			} else {
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
// process in the data path spent on them, if there is one.
func (h *harness) bulk(ctx context.Context, p *peer) ([]value, error) {
	before, hasCPU, err := p.cpu()
	if err != nil {
		return nil, err
	}
	dl, err := download(ctx, p.addr, h.cfg.Bytes, h.sum)
	if err != nil {
		return nil, err
	}
	ul, err := upload(ctx, h.stream, p.addr, h.cfg.Bytes, h.sum)
	if err != nil {
		return nil, err
	}
	vs := []value{{key: report.KeyDownload, v: dl}, {key: report.KeyUpload, v: ul}}
	if !hasCPU {
		return vs, nil
	}
	if err := h.settle(ctx, p); err != nil {
		return nil, err
	}
	after, _, err := p.cpu()
	if err != nil {
		return nil, err
	}
	gib := float64(2*h.cfg.Bytes) / (1 << 30)
	return append(vs, value{key: report.KeyCPU, v: (after - before) / gib, alone: true}), nil
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
	// request: each connection carries one before it idles. So does
	// socket-proxy, an HTTP proxy too.
	prime := k.name == report.ServePolicy || k.name == report.SocketProxy
	conns, err := holdIdle(ctx, listen, h.cfg.Idle, prime)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	want := base + int64(h.cfg.Idle)
	if k.name == report.ServePolicy {
		// The first ping's upstream connection waits in the proxy's pool
		// (counted in base) and serves the first connection held.
		want--
	}
	if k.name == report.SocketProxy {
		// It keeps a few upstream connections for all its clients, not
		// one per client: wait for none.
		want = 0
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
		h.res.Note("memory per idle conn: growth of the relay's Pss (smaps_rollup; VmRSS where missing) with the connections held, over their count; user-space pages only, not socket buffers; of processes the bench starts afresh for it (not the installed plugin, a long-running process)")
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
