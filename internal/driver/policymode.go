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
	// Learn is where learning volumes (policy=learn) write what they
	// learned.
	Learn LearnDir
}

func (*PolicyMode) Name() string { return "policy" }

func (*PolicyMode) Options() []Option {
	return append(ownerOptions[:len(ownerOptions):len(ownerOptions)],
		Option{Key: optPolicy, Required: true, Help: policyHelp, Parse: parsePolicyRef})
}

const policyHelp = "read-only, no-escalation, full, file:NAME for a file in the plugin's policy directory, or learn (learn:NAME) to learn a policy file"

// Check refuses a policy that does not exist or does not parse; the error
// names the file, the line and the reason.
func (m *PolicyMode) Check(v *Volume) error {
	if _, err := v.SocketOwner(); err != nil {
		return err
	}
	if ref, _, ok := learnRef(v); ok {
		if _, err := policy.FromSpec(ref, ""); err != nil {
			return fmt.Errorf("%w: option policy: %v", ErrInvalid, err)
		}
		root, err := m.Learn.open()
		if err != nil {
			return fmt.Errorf("%w: option policy: learn: %v", ErrInvalid, err)
		}
		return root.Close()
	}
	if _, err := m.Policies.Load(v.Options[optPolicy]); err != nil {
		return fmt.Errorf("%w: option policy: %v", ErrInvalid, err)
	}
	return nil
}

func (*PolicyMode) Describe(v *Volume, st map[string]any) {
	describeOwner(v, st)
	st["policy"] = v.Options[optPolicy]
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
	ctx, cancel := context.WithCancel(ctx)
	s := &policyServer{live: live, cancel: cancel, learner: lr}
	s.proxy = apiproxy.Proxy{
		Volume: v.Name, Upstream: v.Upstream, Policy: live.Policy,
		Log: m.Log, Audit: m.Audit, Stats: &apiproxy.Stats{},
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
}

func (s *policyServer) Stop() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
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
	st["bytes_relayed"] = s.proxy.Stats.Bytes.Load()
	st["upstream_idle"] = s.proxy.IdleUpstreams()
}
