package policy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Source says where policies are read from.
type Source struct {
	// Dir is the directory of policy files, as this process sees it.
	Dir string
	// Shown is Dir as the user names it (the plugin sees the host's /etc
	// elsewhere); errors say Shown in place of Dir. Empty: Dir.
	Shown string
}

// Load resolves a policy reference: a preset's name, or file:NAME.
func (s Source) Load(ref string) (*Policy, error) {
	p, err := FromSpec(ref, s.Dir)
	if err != nil && s.Shown != "" && s.Shown != s.Dir {
		return nil, &shownError{msg: strings.ReplaceAll(err.Error(), s.Dir, s.Shown), err: err}
	}
	return p, err
}

// shownError is an error with the user's paths in place of this
// process's.
type shownError struct {
	msg string
	err error
}

func (e *shownError) Error() string { return e.msg }
func (e *shownError) Unwrap() error { return e.err }

// Live is one reference's policy in force. A policy file is read again
// every WatchEvery while Watch runs: a valid change replaces the policy
// whole, between two requests; an invalid one is refused, logged, and
// shown by Status, and the policy in force stays.
type Live struct {
	ref string
	src Source
	cur atomic.Pointer[Policy]

	mu       sync.Mutex
	reloads  int
	refusals int
	lastErr  string
	errAt    time.Time
}

// NewLive loads ref from src.
func NewLive(ref string, src Source) (*Live, error) {
	p, err := src.Load(ref)
	if err != nil {
		return nil, err
	}
	l := &Live{ref: ref, src: src}
	l.cur.Store(p)
	return l, nil
}

// Policy is the policy in force.
func (l *Live) Policy() *Policy { return l.cur.Load() }

// Ref is the reference the policy was loaded from.
func (l *Live) Ref() string { return l.ref }

// Watch keeps a policy file's policy current until ctx ends, logging each
// change of state to log. For a preset it returns at once.
func (l *Live) Watch(ctx context.Context, log *slog.Logger) {
	if !strings.HasPrefix(l.ref, filePrefix) {
		return
	}
	Watch(ctx, WatchEvery, &l.cur, func() (*Policy, error) { return l.src.Load(l.ref) }, func(c Change) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case c.Err != nil:
			log.Error("policy file changed but is refused; the previous policy stays in force", "policy", l.ref, "err", c.Err)
			l.lastErr, l.errAt = c.Err.Error(), time.Now().UTC()
			l.refusals++
		case c.Reloaded:
			l.lastErr = ""
			l.reloads++
			log.Info("policy file changed; new policy in force", "policy", l.ref)
		default:
			l.lastErr = ""
			log.Info("policy file is back to the policy in force", "policy", l.ref)
		}
	})
}

// Reloads is how many changes of the policy file were put in force, and
// how many were refused, since NewLive.
func (l *Live) Reloads() (done, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reloads, l.refusals
}

// Status adds the policy's keys to a volume's Status: policy,
// policy_reloads, and policy_error with policy_error_at while a changed
// file is refused.
func (l *Live) Status(st map[string]any) {
	st["policy"] = l.ref
	l.mu.Lock()
	defer l.mu.Unlock()
	st["policy_reloads"] = l.reloads
	if l.lastErr != "" {
		st["policy_error"] = l.lastErr
		st["policy_error_at"] = l.errAt.Format(time.RFC3339)
	}
}
