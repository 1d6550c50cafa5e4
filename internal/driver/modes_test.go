package driver

import (
	"log/slog"
	"testing"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// Every dependency Modes is given reaches the modes that use it: a mode
// built without one loses a feature without a word (a policy mode without
// Learn refuses policy=learn as if the plugin had no logdir mount).
func TestModesPassEveryDependency(t *testing.T) {
	deps := ModeDeps{
		Log:      slog.New(slog.DiscardHandler),
		Userns:   &idmap.Namespaces{},
		Audit:    &audit.Log{},
		Policies: policy.Source{Dir: "/policies", Shown: "/etc/policies"},
		Metrics:  metrics.New(),
		Identify: &peer.Resolver{},
		Learn:    LearnDir{Dir: "/learned", Shown: "/var/log/sockrelay/learned"},
	}
	var relay, idm, pol bool
	for _, m := range Modes(deps) {
		switch m := m.(type) {
		case *RelayMode:
			relay = m.Log == deps.Log && m.Metrics == deps.Metrics
		case *IdmapMode:
			idm = m.Log == deps.Log && m.Userns == deps.Userns
		case *PolicyMode:
			pol = m.Log == deps.Log && m.Audit == deps.Audit && m.Policies == deps.Policies &&
				m.Metrics == deps.Metrics && m.Identify == deps.Identify && m.Learn == deps.Learn
		}
	}
	if !relay || !idm || !pol {
		t.Errorf("Modes dropped a dependency: relay %v, idmap %v, policy %v (want all true)", relay, idm, pol)
	}
}
