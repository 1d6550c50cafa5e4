package apiproxy

import (
	"fmt"
	"sync"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// Every byte a client sends is hostile, and so is every connection it
// opens and holds. What clients can make a proxy hold is bounded here:
// connections, the memory of the bodies the policy reads whole, and the
// time a request's head and such a body may take to arrive. Each bound
// holds for one proxy (one volume, one container's socket as a rule) and
// for all the proxies of the process together, so that one volume's
// clients cannot take what the others need.
//
// Connections beyond a bound are answered 503 and closed at once, not
// left to wait at accept: a client behind a full listen queue hangs with
// no word of why, and so does every honest client behind it. An
// idle kept-alive connection holds no buffer (serve), so the bound on
// connections is a bound on descriptors and goroutines, set well above
// what docker clients open (docker compose, a CLI loop, a thousand at
// once in the e2e suite).

// Limits bound what the clients of one proxy can hold at once. A zero
// field takes its default.
type Limits struct {
	// Conns bounds the client connections open at once
	// (DefaultConns).
	Conns int
	// BodyBytes bounds the memory of the bodies the policy reads whole
	// (DefaultBodyBytes). Below policy.MaxBody, the largest bodies
	// never fit and are always refused.
	BodyBytes int64
	// HeadTimeout bounds the time a request's head takes to arrive:
	// from the connection's start for its first request, from the
	// request's first byte for later ones (DefaultHeadTimeout). A
	// kept-alive connection may stay idle between requests as long as
	// its client likes.
	HeadTimeout time.Duration
	// BodyTimeout bounds the time a body the policy reads whole takes
	// to arrive, from the end of its head (DefaultBodyTimeout). Bodies
	// passed through (build contexts, image loads) have no bound: they
	// hold no more than a read buffer, and take as long as they take.
	BodyTimeout time.Duration
}

// The defaults of Limits and of the shared budget.
const (
	DefaultConns       = 2048
	DefaultBodyBytes   = 16 * policy.MaxBody
	DefaultHeadTimeout = 30 * time.Second
	DefaultBodyTimeout = 30 * time.Second

	DefaultSharedConns     = 4 * DefaultConns
	DefaultSharedBodyBytes = 4 * DefaultBodyBytes
)

// budgetWait is how long a request waits for memory for its body before
// it is refused: long enough to ride out a burst of honest requests,
// short enough that a flood is refused rather than queued.
const budgetWait = time.Second

func (l Limits) withDefaults() Limits {
	if l.Conns <= 0 {
		l.Conns = DefaultConns
	}
	if l.BodyBytes <= 0 {
		l.BodyBytes = DefaultBodyBytes
	}
	if l.HeadTimeout <= 0 {
		l.HeadTimeout = DefaultHeadTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	return l
}

// Shared bounds what the clients of every proxy that holds it can hold
// together. A process makes one and gives it to all its proxies; a proxy
// given none shares the process's default (DefaultShared).
type Shared struct {
	conns, bodies budget
}

// NewShared bounds conns connections and bodyBytes bytes of inspected
// bodies across the proxies that hold it.
func NewShared(conns int, bodyBytes int64) *Shared {
	return &Shared{conns: budget{limit: int64(conns)}, bodies: budget{limit: bodyBytes}}
}

// DefaultShared is the budget of the proxies given none, shared by all
// of them in the process.
var DefaultShared = NewShared(DefaultSharedConns, DefaultSharedBodyBytes)

// budget is a count of units (connections, bytes) that holders take and
// give back.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	freed chan struct{} // closed at the next give, while someone waits
}

// take takes n units if they fit; if not, it returns a channel closed
// once units are given back.
func (b *budget) take(n int64) (<-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n <= b.limit {
		b.used += n
		return nil, true
	}
	if b.freed == nil {
		b.freed = make(chan struct{})
	}
	return b.freed, false
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
}

// inUse is the units taken now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// takeAll takes n units from each of bs, waiting up to wait for them to
// fit in all; it reports whether it took them.
func takeAll(n int64, wait time.Duration, bs ...*budget) bool {
	var deadline <-chan time.Time
	for {
		var freed <-chan struct{}
		for i, b := range bs {
			ch, ok := b.take(n)
			if !ok {
				for _, t := range bs[:i] {
					t.give(n)
				}
				freed = ch
				break
			}
		}
		if freed == nil {
			return true
		}
		if wait <= 0 {
			return false
		}
		if deadline == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-freed:
		case <-deadline:
			return false
		}
	}
}

func giveAll(n int64, bs ...*budget) {
	for _, b := range bs {
		b.give(n)
	}
}

// Rules of the refusals for a limit.
const (
	ruleTooManyConns = "too-many-connections"
	ruleBusy         = "busy"
	ruleTimeout      = "timeout"
)

func (p *Proxy) tooManyConns() string {
	return fmt.Sprintf("this socket has as many connections open as it may (%d), or sockrelay as many in all (%d); try again later",
		p.limits.Conns, p.shared.conns.limit)
}

func (p *Proxy) busy() string {
	return fmt.Sprintf("the request bodies the policy inspects hold all the memory they may (%s on this socket, %s in all); try again later",
		sizeText(p.limits.BodyBytes), sizeText(p.shared.bodies.limit))
}
