package policy

import "slices"

// The presets, built once. docs/policy.md lists their rules in tables
// that docs_test.go renders from these values; after a change, rewrite
// them with go test ./internal/policy -run TestDocs -update.

func denyRule(m methodSet, pat, id, why string) rule {
	return rule{endpoint: ep(m, pat), id: id, why: why}
}

func allowRule(m methodSet, pat string) rule {
	return rule{endpoint: ep(m, pat)}
}

// attachUpgrade are the hijack endpoints of docker attach, run and exec.
var attachUpgrade = []pattern{epAttach.pat, epAttachWS.pat, epExecStart.pat}

var readOnly = func() *Policy {
	const rd = mGET | mHEAD
	const files = "is not allowed by policy read-only: it reads a container's files"
	p := &Policy{
		name: presetReadOnly,
		deny: []rule{
			denyRule(rd, "/containers/{name}/export", RuleReadOnly, files),
			denyRule(rd, "/containers/{name}/archive", RuleReadOnly, files),
			denyRule(rd|mPOST, "/containers/{name}/attach", RuleReadOnly, "is not allowed by policy read-only: it attaches to a container's input and output"),
			denyRule(rd, "/containers/{name}/attach/ws", RuleReadOnly, "is not allowed by policy read-only: it attaches to a container's input and output"),
			denyRule(rd, "/images/get", RuleReadOnly, "is not allowed by policy read-only: it exports image contents"),
			denyRule(rd, "/images/{name}/get", RuleReadOnly, "is not allowed by policy read-only: it exports image contents"),
			denyRule(rd, "/swarm", RuleReadOnly, "is not allowed by policy read-only: it returns the swarm join tokens"),
			denyRule(rd, "/swarm/unlockkey", RuleReadOnly, "is not allowed by policy read-only: it returns the swarm unlock key"),
		},
		defaultRule: RuleReadOnly,
		defaultWhy:  "is not allowed by policy read-only (" + readOnlyExplanation + ")",
	}
	for _, pat := range []string{
		"/_ping", "/version", "/info", "/events", "/system/df",
		"/containers/json", "/containers/{name}/json", "/containers/{name}/top",
		"/containers/{name}/logs", "/containers/{name}/stats", "/containers/{name}/changes",
		"/exec/{id}/json",
		"/images/json", "/images/search", "/images/{name}/json", "/images/{name}/history",
		"/images/{name}/attestations", "/distribution/{name}/json",
		"/networks", "/networks/{id}", "/volumes", "/volumes/{name}",
		"/plugins", "/plugins/privileges", "/plugins/{name}/json",
		"/services", "/services/{id}", "/services/{id}/logs", "/nodes", "/nodes/{id}",
		"/tasks", "/tasks/{id}", "/tasks/{id}/logs",
		"/secrets", "/secrets/{id}", "/configs", "/configs/{id}",
	} {
		p.allow = append(p.allow, allowRule(rd, pat))
	}
	return p
}()

var noEscalation = &Policy{
	name: presetNoEscalation,
	deny: []rule{
		denyRule(mPOST, "/plugins/pull", RulePlugin, pluginWhy),
		denyRule(mPOST, "/plugins/create", RulePlugin, pluginWhy),
		denyRule(mPOST, "/plugins/{name}/upgrade", RulePlugin, pluginWhy),
		denyRule(mPOST, "/plugins/{name}/enable", RulePlugin, pluginWhy),
		denyRule(mPOST, "/plugins/{name}/set", RulePlugin, pluginWhy),
		denyRule(mPOST, "/plugins/{name}/disable", RulePlugin, pluginOffWhy),
		denyRule(mDELETE, "/plugins/{name}", RulePlugin, pluginOffWhy),
		denyRule(mPOST, "/swarm/join", RuleSwarm, "is not allowed by policy no-escalation: the swarm's managers could then run any container on this host"),
		denyRule(mGET|mHEAD, "/swarm", RuleSwarm, "is not allowed by policy no-escalation: it returns the swarm join tokens"),
		denyRule(mGET|mHEAD, "/swarm/unlockkey", RuleSwarm, "is not allowed by policy no-escalation: it returns the swarm unlock key"),
		// dockerd serves these whatever its settings
		// (daemon/server/router/debug/debug.go).
		denyRule(mAll, "/debug/*", RuleDebug, "is not allowed by policy no-escalation: it shows the daemon's memory, goroutines and command line"),
	},
	defaultAllow: true,
	cons: &constraints{
		volumeTypes: []string{"tmpfs", "nfs", "nfs4", "cifs", "smb3"},
	},
	// BuildKit's session and API: the proxy follows the API's calls
	// (Decision.Calls, grpc.go); the session carries only the client's
	// answers to the daemon's calls.
	upgrade: append(slices.Clip(attachUpgrade), epSession.pat, epGRPC.pat),
}

const pluginWhy = "is not allowed by policy no-escalation: a plugin runs with the privileges it asks for"

// pluginOffWhy: disabling sockrelay takes down every volume it serves, and
// disabling an authorization plugin lifts the checks it makes on the
// daemon's API. dockerd finds a plugin by name, alias, ID or ID prefix, so
// every plugin is refused rather than some by name.
const pluginOffWhy = "is not allowed by policy no-escalation: it takes down what the plugin serves, volumes or the daemon's authorization checks"

var full = &Policy{
	name:         presetFull,
	defaultAllow: true,
	upgrade:      []pattern{epAttach.pat, epAttachWS.pat, epExecStart.pat, epSession.pat, epGRPC.pat},
}
