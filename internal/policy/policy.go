// Package policy decides, request by request, what a client of a policy
// volume may ask of dockerd. A decision (Decide) is a function of the
// policy, the request, and what dockerd answers about the objects the
// request names (Request.Daemon, which the proxy supplies): it does no
// I/O of its own and reads no clock. Loading and watching policy files
// (Load, Live) is this package's only I/O; it imports nothing of the rest
// of sockrelay.
//
// The proxy normalises nothing itself. It calls BodyNeeded with the raw
// method and request-target, buffers the body (at most MaxBody bytes) only
// when told to, then calls Decide, and answers a refusal with
// Decision.Status and {"message":"sockrelay: <Rule>: <Reason>"}.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// MaxBody is the limit on bodies the policy inspects; the proxy answers a
// larger one with 413.
const MaxBody = 1 << 20

// Decision statuses.
const (
	StatusBadRequest = http.StatusBadRequest            // malformed or ambiguous request
	StatusForbidden  = http.StatusForbidden             // denied by policy
	StatusTooLarge   = http.StatusRequestEntityTooLarge // inspected body over MaxBody
)

// Rule ids, as Decision.Rule carries them. docs/policy.md says which
// preset uses which; a test checks that it names every Rule constant and
// no other rule.
const (
	// 400: the request cannot be read one way only.
	RuleNotCanonical = "path-not-canonical"
	RuleBadMethod    = "bad-method"
	RuleBadBody      = "bad-body"
	RuleBadQuery     = "bad-query"
	RuleFormBody     = "form-body-not-allowed"
	// 413.
	RuleBodyTooLarge = "body-too-large"
	// 403: endpoints.
	RuleReadOnly   = "read-only"
	RuleNotAllowed = "endpoint-not-allowed"
	RuleDenied     = "endpoint-denied"
	RuleUpgrade    = "upgrade-not-allowed"
	RulePlugin     = "plugin-not-allowed"
	RuleSwarm      = "swarm-not-allowed"
	RuleDebug      = "debug-not-allowed"
	RuleBuildKit   = "buildkit-not-allowed"
	// 403: create constraints.
	RulePrivileged    = "no-privileged"
	RuleCapAdd        = "cap-add-not-allowed"
	RuleDevices       = "devices-not-allowed"
	RuleHostNamespace = "host-namespace-not-allowed"
	RuleUnconfined    = "unconfined-not-allowed"
	RuleSysctls       = "sysctls-not-allowed"
	RuleAnnotations   = "annotations-not-allowed"
	RuleBind          = "bind-not-allowed"
	RuleVolumesFrom   = "volumes-from-not-allowed"
	RuleMountType     = "mount-type-not-allowed"
	RuleVolumeType    = "volume-type-not-allowed"
	RuleVolumeDriver  = "volume-driver-not-allowed"
	RuleCgroupParent  = "cgroup-parent-not-allowed"
	RuleLogDriver     = "log-driver-not-allowed"
)

const (
	presetReadOnly      = "read-only"
	presetNoEscalation  = "no-escalation"
	presetFull          = "full"
	filePrefix          = "file:"
	readOnlyExplanation = "only GET and HEAD requests that read state are"
)

// PresetNames lists the presets.
func PresetNames() []string {
	return []string{presetReadOnly, presetNoEscalation, presetFull}
}

// Policy is a compiled policy. It is immutable and safe for concurrent use.
type Policy struct {
	name   string
	digest string

	deny         []rule // checked first
	allow        []rule // consulted when !defaultAllow
	defaultAllow bool
	defaultRule  string
	defaultWhy   string // follows the request's description in a reason

	// cons holds the create constraints; nil means bodies and queries are
	// not inspected (full).
	cons *constraints
	// upgrade lists the hijack endpoints that may switch protocols; an
	// allowed hijack endpoint not in it is denied.
	upgrade []pattern
	// scope, when set, confines the policy to the objects that carry
	// ScopeLabel=scope (scope.go).
	scope string
	// learn: a learning policy, which serves as full does and records
	// what each request uses (learn.go).
	learn bool
}

// rule is one method set and path pattern, with what to say when it denies.
type rule struct {
	endpoint
	id  string
	why string // follows the request's description in a reason
}

// Request is one HTTP request as the proxy read it off the wire.
type Request struct {
	Method string
	Target string      // the raw request-target as sent, e.g. "/v1.41/containers/create?name=x"
	Header http.Header // as received
	Body   []byte      // the whole body when BodyNeeded said so, else nil
	// Daemon answers what the policy must ask dockerd about the objects
	// the request names; without it such requests are refused.
	Daemon Daemon
}

// Decision is the policy's answer for one request.
type Decision struct {
	Allow   bool
	Status  int    // when !Allow: 400, 403 or 413
	Rule    string // short rule id, e.g. "no-privileged"
	Reason  string // why, for the user: "sockrelay: <Rule>: <Reason>"
	Path    string // normalised path (version prefix stripped); "" if the path was refused
	Upgrade bool   // this endpoint may switch protocols (101) or hijack the connection
	// Calls says the proxy must follow the HTTP/2 stream that follows the
	// switch (BuildKit's API, POST /grpc) and ask DecideCall about each
	// gRPC call; without it an allowed switch is passed on as a raw
	// stream.
	Calls bool
	// Target and Body, when set, are what to forward instead of the
	// request's own: the references the policy resolved, spelled as the
	// full IDs of the objects it checked.
	Target string
	Body   []byte
	// Message, when set, is a refusal's whole message, to answer as
	// dockerd answers an error ({"message": Message}, without the
	// "sockrelay:" prefix): a scoped volume's 404 for an object outside
	// its scope is dockerd's own for a missing object.
	Message string
	// Uses, under a learning policy, is what of a policy file's create
	// section the request needs (learn.go), sorted.
	Uses []string
}

// Name is the policy's name: a preset's name or "file:NAME".
func (p *Policy) Name() string { return p.name }

// Digest is the SHA-256 (hex) of a custom policy's file as loaded, so that
// a caller can tell whether the file changed; "" for presets.
func (p *Policy) Digest() string { return p.digest }

// Preset returns a built-in policy: "read-only", "no-escalation" or "full".
func Preset(name string) (*Policy, error) {
	switch name {
	case presetReadOnly:
		return readOnly, nil
	case presetNoEscalation:
		return noEscalation, nil
	case presetFull:
		return full, nil
	}
	return nil, fmt.Errorf("%w: unknown preset %s; presets are %s, or file:NAME for a policy file",
		ErrInvalid, quoteShort(name), strings.Join(PresetNames(), ", "))
}

// FromSpec resolves a volume's policy option: a preset's name, or
// "file:NAME" for dir/NAME.yaml (.yml, .json).
func FromSpec(spec, dir string) (*Policy, error) {
	if name, ok := strings.CutPrefix(spec, filePrefix); ok {
		return Load(dir, name)
	}
	if name, ok := LearnName(spec); ok {
		return Learn(name)
	}
	return Preset(spec)
}

// BodyNeeded reports whether Decide needs the body of this request: a
// create-like request that the policy allows and inspects. It never asks
// for streamed bodies (/build, image load, archive uploads).
func (p *Policy) BodyNeeded(method, target string) bool {
	if p.cons == nil && p.scope == "" || !validMethod(method) {
		return false
	}
	path, _, err := NormalizePath(target)
	if err != nil {
		return false
	}
	m := methodBit(method)
	ins := inspectionFor(m, path)
	if !(p.cons != nil && ins != nil && ins.body) && !(p.scope != "" && scopeBodyNeeded(m, path)) {
		return false
	}
	allowed, _, _ := p.byRules(method, m, path)
	return allowed
}

// Decide decides one request.
func (p *Policy) Decide(r Request) Decision {
	if !validMethod(r.Method) {
		return refuse(StatusBadRequest, RuleBadMethod, "", "the request method is not a valid HTTP token")
	}
	path, query, err := NormalizePath(r.Target)
	if err != nil {
		reason := err.Error()
		if pe, ok := err.(*PathError); ok {
			reason = pe.Reason
		}
		return refuse(StatusBadRequest, RuleNotCanonical, "", reason)
	}
	m := methodBit(r.Method)
	allowed, id, why := p.byRules(r.Method, m, path)
	if !allowed {
		return refuse(StatusForbidden, id, path, why)
	}
	if p.learn && p.scope == "" {
		// A learning policy is never scoped (the driver refuses the
		// pair); were it, the scope's checks would still apply below.
		return p.decideLearn(r, m, path, query)
	}
	if p.cons != nil || p.scope != "" {
		if v := formBody(r.Header); v != nil {
			return refuse(v.status, v.rule, path, v.reason)
		}
	}
	if len(r.Body) > MaxBody {
		return refuse(StatusTooLarge, RuleBodyTooLarge, path, fmt.Sprintf("the request body is larger than %d bytes", MaxBody))
	}
	d := Decision{Allow: true, Path: path}
	if p.scope != "" {
		// First: a refusal of the policy's own must not tell whether an
		// object outside the scope exists.
		target, body, v := p.scoped(r, m, path, query)
		if v != nil {
			return v.decision(path)
		}
		if target != "" {
			r.Target, d.Target = target, target
			if path, query, err = NormalizePath(target); err != nil {
				return refuse(StatusBadRequest, RuleNotCanonical, d.Path, "the request path could not be scoped")
			}
		}
		if body != nil {
			r.Body, d.Body = body, body
		}
	}
	if p.cons != nil {
		if ins := inspectionFor(m, path); ins != nil {
			target, body, v := ins.run(p, r, path, query)
			if v != nil {
				return refuse(v.status, v.rule, d.Path, v.reason)
			}
			if target != "" {
				d.Target = target
			}
			if body != nil {
				d.Body = body
			}
		}
	}
	for _, h := range hijackEndpoints {
		if !h.match(m, path) {
			continue
		}
		for _, u := range p.upgrade {
			if u.match(path) {
				d.Upgrade = true
				d.Calls = p.cons != nil && epGRPC.match(m, path)
				return d
			}
		}
		return refuse(StatusForbidden, RuleUpgrade, d.Path,
			fmt.Sprintf("%s switches the connection to a raw stream, which policy %s does not allow", describe(r.Method, m, path), p.name))
	}
	if asksUpgrade(r.Header) {
		return refuse(StatusForbidden, RuleUpgrade, d.Path,
			fmt.Sprintf("switching protocols on %s is not allowed by policy %s", describe(r.Method, m, path), p.name))
	}
	return d
}

// asksUpgrade reports whether a request asks to switch protocols: an
// Upgrade header, or the upgrade token in Connection (any case).
func asksUpgrade(h http.Header) bool {
	for k, vs := range h {
		switch {
		case strings.EqualFold(k, "Upgrade"):
			for _, v := range vs {
				if strings.TrimSpace(v) != "" {
					return true
				}
			}
		case strings.EqualFold(k, "Connection"):
			for _, v := range vs {
				for t := range strings.SplitSeq(v, ",") {
					if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
						return true
					}
				}
			}
		}
	}
	return false
}

// allowsBuildKit reports whether the policy lets BuildKit's API through:
// POST /grpc, and its switch to HTTP/2.
func (p *Policy) allowsBuildKit() bool {
	allowed, _, _ := p.byRules("POST", mPOST, "/grpc")
	return allowed && slices.ContainsFunc(p.upgrade, func(u pattern) bool { return u.match("/grpc") })
}

// byRules applies the deny rules, then the allow rules or the default.
func (p *Policy) byRules(method string, m methodSet, path string) (bool, string, string) {
	for _, r := range p.deny {
		if r.match(m, path) {
			return false, r.id, describe(method, m, path) + " " + r.why
		}
	}
	if p.defaultAllow {
		return true, "", ""
	}
	for _, r := range p.allow {
		if r.match(m, path) {
			return true, "", ""
		}
	}
	return false, p.defaultRule, describe(method, m, path) + " " + p.defaultWhy
}

func refuse(status int, rule, path, reason string) Decision {
	return Decision{Status: status, Rule: rule, Reason: reason, Path: path}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
