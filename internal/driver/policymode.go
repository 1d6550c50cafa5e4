package driver

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockrelay/sockrelay/internal/apiproxy"
	"github.com/sockrelay/sockrelay/internal/policy"
	"github.com/sockrelay/sockrelay/internal/state"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// Policies finds the policy a volume names: a preset, or file:NAME in Dir.
// Shown is Dir as the host names it, for messages.
type Policies struct {
	Dir, Shown string
}

func (ps Policies) load(ref string) (*policy.Policy, error) {
	p, err := policy.FromSpec(ref, ps.Dir)
	if err != nil && ps.Shown != "" {
		return nil, &shownError{msg: strings.ReplaceAll(err.Error(), ps.Dir, ps.Shown), err: err}
	}
	return p, err
}

// shownError says an error with host paths in place of the plugin's.
type shownError struct {
	msg string
	err error
}

func (e *shownError) Error() string { return e.msg }
func (e *shownError) Unwrap() error { return e.err }

// PolicyCheck refuses, at Create, a policy that does not exist or does
// not parse; the error names the file, the line and the reason.
func PolicyCheck(ps Policies) CheckFunc {
	return func(v *state.Volume, _ string) error {
		if _, err := ps.load(v.Policy); err != nil {
			return fmt.Errorf("%w: option policy: %v", ErrInvalid, err)
		}
		return nil
	}
}

// PolicyMode serves a volume through the policy proxy. audit gets one
// line per request.
func PolicyMode(log *slog.Logger, audit *apiproxy.AuditLog, ps Policies) StartFunc {
	return func(ctx context.Context, dir Dir, v *state.Volume, upstream string) (Server, error) {
		pol, err := ps.load(v.Policy)
		if err != nil {
			return nil, err
		}
		ln, err := unixsock.Listen(dir.RW, v.Socket, unixsock.Owner{UID: int(v.UID), GID: int(v.GID), Perm: os.FileMode(v.Perm)})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(ctx)
		s := &policyServer{log: log.With("volume", v.Name), ps: ps, ref: v.Policy, cancel: cancel}
		s.cur.Store(pol)
		s.proxy = apiproxy.Proxy{
			Volume: v.Name, Upstream: upstream, Policy: s.cur.Load,
			Log: log, Audit: audit, Stats: &apiproxy.Stats{},
		}
		s.wg.Go(func() {
			s.proxy.Serve(ctx, ln)
			ln.Close()
		})
		if strings.HasPrefix(v.Policy, "file:") {
			s.wg.Go(func() { s.watch(ctx) })
		}
		return s, nil
	}
}

type policyServer struct {
	log    *slog.Logger
	ps     Policies
	ref    string
	proxy  apiproxy.Proxy
	cur    atomic.Pointer[policy.Policy]
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex
	reloads  int
	lastErr  string
	lastErrT time.Time
}

// watch picks up a changed policy file whole, or refuses it loudly and
// keeps the policy in force: a policy never half-applies.
func (s *policyServer) watch(ctx context.Context) {
	load := func() (*policy.Policy, error) { return s.ps.load(s.ref) }
	policy.Watch(ctx, policy.WatchEvery, &s.cur, load, func(c policy.Change) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case c.Err != nil:
			s.log.Error("policy file changed but is refused; the previous policy stays in force", "policy", s.ref, "err", c.Err)
			s.lastErr, s.lastErrT = c.Err.Error(), time.Now().UTC()
		case c.Reloaded:
			s.lastErr = ""
			s.reloads++
			s.log.Info("policy file changed; new policy in force", "policy", s.ref)
		default:
			s.lastErr = "" // back to the file in force
		}
	})
}

func (s *policyServer) Stop() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

func (s *policyServer) Status(st map[string]any) {
	st["policy"] = s.ref
	st["connections"] = s.proxy.Stats.Active.Load()
	st["requests"] = s.proxy.Stats.Requests.Load()
	st["denied"] = s.proxy.Stats.Denied.Load()
	st["bytes_relayed"] = s.proxy.Stats.Bytes.Load()
	st["upstream_idle"] = s.proxy.IdleUpstreams()
	s.mu.Lock()
	defer s.mu.Unlock()
	st["policy_reloads"] = s.reloads
	if s.lastErr != "" {
		st["policy_error"] = s.lastErr
		st["policy_error_at"] = s.lastErrT.Format(time.RFC3339)
	}
}
