package policy

import (
	"context"
	"sync/atomic"
	"time"
)

// WatchEvery is how often a policy file in use is read again.
const WatchEvery = 2 * time.Second

// Change is what Watch reports: a new policy in force (Reloaded), a
// changed file that is refused (Err, the policy in force stays), or
// neither: the file is back to the policy in force after a refusal.
type Change struct {
	Reloaded bool
	Err      error
}

// Watch reads the policy with load every interval until ctx ends. A valid
// policy that differs from the one in cur replaces it whole, between two
// requests; an invalid one is refused and cur keeps the policy in force:
// a policy never half-applies. report hears of each change of state
// once, not of every check: a file left broken is reported when it
// breaks, or when its error changes. A file must fail two checks in a
// row with the same error to be reported: one caught in the middle of a
// write that is not atomic (os.WriteFile, a shell's >, many editors:
// truncate, then write) is read whole at the next check.
func Watch(ctx context.Context, interval time.Duration, cur *atomic.Pointer[Policy], load func() (*Policy, error), report func(Change)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := "" // the error reported last
	seen := ""    // an error seen once, reported if the next check sees it again
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pol, err := load()
		if err != nil {
			switch msg := err.Error(); {
			case msg == lastErr:
			case msg != seen:
				seen = msg
			default:
				seen, lastErr = "", msg
				report(Change{Err: err})
			}
			continue
		}
		seen = ""
		switch {
		case pol.Digest() != cur.Load().Digest():
			cur.Store(pol)
			lastErr = ""
			report(Change{Reloaded: true})
		case lastErr != "":
			lastErr = ""
			report(Change{})
		}
	}
}
