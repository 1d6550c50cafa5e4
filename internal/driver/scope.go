package driver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// optScope confines a policy volume to a scope: scope=NAME, or
// scope=volume for the volume's own name.
const optScope = "scope"

// scopeOfVolume is the scope option's value that names the volume's name.
const scopeOfVolume = "volume"

const scopeHelp = "a scope's name (letters, digits, '_', '.' and '-', starting with a letter or digit), or volume for the volume's name"

// parseScope checks the form of a scope option.
func parseScope(v string) (string, error) {
	if v == scopeOfVolume {
		return v, nil
	}
	if err := policy.CheckScope(v); err != nil {
		return "", fmt.Errorf("want %s, at most %d characters", scopeHelp, policy.MaxScope)
	}
	return v, nil
}

// volumeScope is the scope a volume asks for ("" for none): its option,
// with scope=volume resolved to its name.
func volumeScope(v *Volume) (string, error) {
	s := v.Options[optScope]
	if s == scopeOfVolume {
		s = v.Name
		if err := policy.CheckScope(s); err != nil {
			return "", fmt.Errorf("%w: option scope=volume: the volume's name cannot be a scope's: %s", ErrInvalid, scopeHelp)
		}
	}
	return s, nil
}

// effectiveScope is the scope a volume is confined to: its own option,
// else its policy file's. Both, and different, is an error.
func effectiveScope(v *Volume, p *policy.Policy) (string, error) {
	s, err := volumeScope(v)
	if err != nil {
		return "", err
	}
	switch fs := p.Scope(); {
	case s == "":
		return fs, nil
	case fs != "" && fs != s:
		return "", fmt.Errorf("%w: option scope: policy %s sets scope %s, and the volume another; set it in one place", ErrInvalid, p.Name(), fs)
	}
	return s, nil
}

// scopedPolicy is a Live policy confined to a scope; it makes the
// confined copy once per policy in force.
type scopedPolicy struct {
	live  *policy.Live
	scope string
	last  atomic.Pointer[[2]*policy.Policy] // {in force, confined}
}

func (s *scopedPolicy) Policy() *policy.Policy {
	p := s.live.Policy()
	if l := s.last.Load(); l != nil && l[0] == p {
		return l[1]
	}
	c := p.WithScope(s.scope)
	s.last.Store(&[2]*policy.Policy{p, c})
	return c
}

// resolvers shares a daemon.Resolver, and its watch of the event stream,
// among the scoped volumes of one daemon socket.
type resolvers struct {
	mu sync.Mutex
	m  map[string]*sharedResolver
}

type sharedResolver struct {
	r      *daemon.Resolver
	refs   int
	cancel context.CancelFunc
	done   chan struct{}
}

// acquire returns the socket's Resolver, and the function that gives it
// back; the last one given back stops its watch.
func (rs *resolvers) acquire(socket string, log *slog.Logger) (*daemon.Resolver, func()) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[string]*sharedResolver{}
	}
	sr := rs.m[socket]
	if sr == nil {
		ctx, cancel := context.WithCancel(context.Background())
		sr = &sharedResolver{r: &daemon.Resolver{Client: daemon.Client{Socket: socket}, Log: log}, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(sr.done)
			sr.r.Watch(ctx)
		}()
		rs.m[socket] = sr
	}
	sr.refs++
	var once sync.Once
	return sr.r, func() {
		once.Do(func() {
			rs.mu.Lock()
			sr.refs--
			last := sr.refs == 0
			if last {
				delete(rs.m, socket)
			}
			rs.mu.Unlock()
			if last {
				sr.cancel()
				<-sr.done
			}
		})
	}
}

// scopeCountTimeout bounds the count docker volume inspect shows.
const scopeCountTimeout = 2 * time.Second

// scopeStatus adds a scoped volume's scope, the count of the objects in
// it, and whether the resolver's cache is in use.
func scopeStatus(st map[string]any, scope string, r *daemon.Resolver) {
	st["scope"] = scope
	if r == nil {
		return
	}
	st["scope_cache"] = r.Live()
	ctx, cancel := context.WithTimeout(context.Background(), scopeCountTimeout)
	defer cancel()
	counts, err := r.ScopeCounts(ctx, scope)
	if err != nil {
		st["scope_objects_error"] = "the daemon did not answer: " + err.Error()
		return
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	st["scope_objects"] = total
	st["scope_objects_by_kind"] = counts
}
