package driver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/sockrelay/sockrelay/internal/apiproxy"
	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// optPolicy names a policy mode volume's policy: a preset or file:NAME.
const optPolicy = "policy"

// PolicyMode serves a volume through the policy proxy, on a socket owned
// as the volume's uid, gid and perm say. Audit gets one line per request.
type PolicyMode struct {
	Log      *slog.Logger
	Audit    *audit.Log
	Policies policy.Source
	Metrics  *metrics.Metrics // nil: none
	// Identify places clients in their containers (nil: not done).
	Identify *peer.Resolver
	// Learn is where learning volumes (policy=learn) write what they
	// learned.
	Learn LearnDir

	scoped resolvers // of the scoped volumes, by daemon socket
}

func (*PolicyMode) Name() string { return "policy" }

func (*PolicyMode) Options() []Option {
	return append(ownerOptions[:len(ownerOptions):len(ownerOptions)],
		Option{Key: optPolicy, Required: true, Help: policyHelp, Parse: parsePolicyRef},
		Option{Key: optScope, Help: scopeHelp, Parse: parseScope})
}

const policyHelp = "read-only, no-escalation, full, file:NAME for a file in the plugin's policy directory, or learn (learn:NAME) to learn a policy file"

// Check refuses a policy that does not exist or does not parse; the error
// names the file, the line and the reason.
func (m *PolicyMode) Check(v *Volume) error {
	if _, err := v.SocketOwner(); err != nil {
		return err
	}
	if ref, _, ok := learnRef(v); ok {
		if v.Options[optScope] != "" {
			return fmt.Errorf("%w: option scope: a learning volume (policy=learn) cannot be scoped: learn unscoped, then use the learned file as policy=file:NAME with scope", ErrInvalid)
		}
		if _, err := policy.FromSpec(ref, ""); err != nil {
			return fmt.Errorf("%w: option policy: %v", ErrInvalid, err)
		}
		root, err := m.Learn.open()
		if err != nil {
			return fmt.Errorf("%w: option policy: learn: %v", ErrInvalid, err)
		}
		return root.Close()
	}
	p, err := m.Policies.Load(v.Options[optPolicy])
	if err != nil {
		return fmt.Errorf("%w: option policy: %v", ErrInvalid, err)
	}
	_, err = effectiveScope(v, p)
	return err
}

func (*PolicyMode) Describe(v *Volume, st map[string]any) {
	describeOwner(v, st)
	st["policy"] = v.Options[optPolicy]
	if s, err := volumeScope(v); err == nil && s != "" {
		st["scope"] = s
	}
}

func (m *PolicyMode) Start(ctx context.Context, dir Dir, v *Volume) (Server, error) {
	own, err := v.SocketOwner()
	if err != nil {
		return nil, err
	}
	ref := v.Options[optPolicy]
	var lr *learner
	if r, name, ok := learnRef(v); ok {
		ref = r
		if lr, err = newLearner(m.Learn, name, m.Log.With("volume", v.Name)); err != nil {
			return nil, err
		}
	}
	live, err := policy.NewLive(ref, m.Policies)
	var ln net.Listener
	if err == nil {
		ln, err = unixsock.Listen(dir.RW, v.Socket, own)
	}
	if err != nil {
		if lr != nil {
			lr.root.Close()
		}
		return nil, err
	}
	scope, err := effectiveScope(v, live.Policy())
	if err != nil {
		ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &policyServer{live: live, cancel: cancel, scope: scope, learner: lr}
	stats := &apiproxy.Stats{}
	s.proxy = apiproxy.Proxy{
		Volume: v.Name, Upstream: v.Upstream, Policy: live.Policy,
		Log: m.Log, Audit: m.Audit, Stats: stats,
		Identify: m.Identify,
	}
	// Metrics read the Status counters at a scrape; the proxy tells them
	// only what Status does not count: each request's decision, rule
	// and latency.
	vm := m.Metrics.Volume(v.Name, v.Mode)
	if vm != nil {
		s.proxy.Observer = vm
	}
	s.detach = vm.Attach(metrics.Connections|metrics.Reloads, func() metrics.Counts {
		done, refused := live.Reloads()
		return metrics.Counts{Open: stats.Active.Load(), Conns: stats.Total.Load(), In: stats.In.Load(), Out: stats.Out.Load(),
			Reloads: uint64(done), ReloadRefusals: uint64(refused)}
	})
	// The scope is fixed while the volume is served: a policy file
	// that changes its scope: takes effect at the next start.
	s.proxy.Policy = (&scopedPolicy{live: live, scope: scope}).Policy
	if scope != "" {
		s.resolver, s.release = m.scoped.acquire(v.Upstream, m.Log)
		s.proxy.Resolver = s.resolver
	}
	if lr != nil {
		s.proxy.Learned = lr.learned
	}
	s.wg.Go(func() {
		s.proxy.Serve(ctx, ln)
		ln.Close()
	})
	s.wg.Go(func() { live.Watch(ctx, m.Log.With("volume", v.Name)) })
	if lr != nil {
		s.wg.Go(func() { lr.run(ctx) })
	}
	return s, nil
}

// parsePolicyRef checks the form of a policy reference; whether the
// preset or file exists is Check's.
func parsePolicyRef(v string) (string, error) {
	if name, ok := strings.CutPrefix(v, "file:"); ok {
		if len(name) > 64 || !nameRE.MatchString(name) {
			return "", fmt.Errorf("file:NAME wants a NAME of letters, digits, '_', '.' and '-', starting with a letter or digit")
		}
		return v, nil
	}
	if _, err := policy.Preset(v); err == nil {
		return v, nil
	}
	if v == "learn" {
		return v, nil
	}
	if name, ok := policy.LearnName(v); ok {
		if len(name) > 64 || !nameRE.MatchString(name) {
			return "", fmt.Errorf("learn:NAME wants a NAME of letters, digits, '_', '.' and '-', starting with a letter or digit")
		}
		return v, nil
	}
	return "", fmt.Errorf("want %s", policyHelp)
}

type policyServer struct {
	live    *policy.Live
	learner *learner // policy=learn: nil otherwise
	proxy   apiproxy.Proxy
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	detach  func() // from the volume's metrics
	// scope is the volume's, "" for none; resolver is shared with the
	// daemon's other scoped volumes until release.
	scope    string
	resolver *daemon.Resolver
	release  func()
}

func (s *policyServer) Stop() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.detach()
		if s.release != nil {
			s.release()
		}
		if s.learner != nil {
			// What the last requests taught, once the proxy has stopped.
			s.learner.close()
		}
	})
	return nil
}

func (s *policyServer) Status(st map[string]any) {
	s.live.Status(st)
	if s.learner != nil {
		s.learner.Status(st)
	}
	st["connections"] = s.proxy.Stats.Active.Load()
	st["requests"] = s.proxy.Stats.Requests.Load()
	st["denied"] = s.proxy.Stats.Denied.Load()
	st["bytes_relayed"] = s.proxy.Stats.Bytes()
	st["upstream_idle"] = s.proxy.IdleUpstreams()
	if s.scope != "" {
		scopeStatus(st, s.scope, s.resolver)
	}
}
