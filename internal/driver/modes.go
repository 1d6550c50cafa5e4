package driver

import (
	"log/slog"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/idmap"
	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// ModeDeps are what the modes need of the process that serves them.
type ModeDeps struct {
	Log      *slog.Logger
	Userns   *idmap.Namespaces // idmap's user namespaces
	Audit    *audit.Log        // policy's audit log
	Policies policy.Source     // where policy=file:NAME is read
	Metrics  *metrics.Metrics  // nil: none
	// Identify places policy volumes' clients in their containers for
	// the audit log (nil: pid and uid only).
	Identify *peer.Resolver
	Learn    LearnDir // where policy=learn writes
}

// Modes are the modes of this build: the one list a mode is added to.
func Modes(deps ModeDeps) []Mode {
	return []Mode{
		&RelayMode{Log: deps.Log, Metrics: deps.Metrics},
		&IdmapMode{Log: deps.Log, Userns: deps.Userns},
		&PolicyMode{Log: deps.Log, Audit: deps.Audit, Policies: deps.Policies, Metrics: deps.Metrics, Identify: deps.Identify, Learn: deps.Learn},
	}
}
