package policy

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// A scope confines a policy volume to the objects made through it, and
// through the other volumes of the same scope: every object such a
// volume creates carries the label ScopeLabel=NAME, every reference a
// request makes must name an object that carries it, and every list is
// filtered on it by dockerd itself.
//
// What an object carries is asked of dockerd (Daemon.Resolve), which
// resolves a reference as it does for the request: by full ID, name or
// unique ID prefix. The request is then forwarded naming the object's
// full ID, so the object checked is the object dockerd acts on. An object
// outside the scope is answered with the very 404 dockerd gives for a
// missing one: another scope's objects cannot even be probed.

// ScopeLabel is the label that puts an object in a scope.
const ScopeLabel = "sockrelay.scope"

// Rule ids of a scoped volume.
const (
	// RuleOutOfScope is a reference to an object outside the scope (or
	// to none): the client gets dockerd's own 404 for a missing object.
	RuleOutOfScope = "not-in-scope"
	// RuleScope is what a scoped volume refuses outright: host-wide
	// operations, changing a shared image, mounting a volume of another
	// scope.
	RuleScope = "scope"
)

// StatusNotFound is the status of a RuleOutOfScope answer.
const StatusNotFound = http.StatusNotFound

// MaxScope bounds a scope's name.
const MaxScope = 63

var scopeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckScope checks a scope's name: it is a label's value, and named in
// filters and logs.
func CheckScope(name string) error {
	if len(name) > MaxScope || !scopeRE.MatchString(name) {
		return fmt.Errorf("%w: scope %s: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d characters",
			ErrInvalid, quoteShort(name), MaxScope)
	}
	return nil
}

// Scope is the policy's scope; "" when it has none.
func (p *Policy) Scope() string { return p.scope }

// WithScope returns p confined to scope ("": unconfined). p itself is
// not changed.
func (p *Policy) WithScope(scope string) *Policy {
	if scope == p.scope {
		return p
	}
	q := *p
	q.scope = scope
	return &q
}

// Kind is a kind of object a scope covers.
type Kind uint8

const (
	KindContainer Kind = iota + 1
	KindExec           // an exec instance: in its container's scope
	KindNetwork
	KindVolume
	KindService
	KindTask // in its service's scope
	KindSecret
	KindConfig
	KindImage
)

var kindNames = [...]string{KindContainer: "container", KindExec: "exec instance", KindNetwork: "network",
	KindVolume: "volume", KindService: "service", KindTask: "task", KindSecret: "secret", KindConfig: "config", KindImage: "image"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "object"
}

// Object is what a scope check needs of an object dockerd resolved.
type Object struct {
	ID     string // full ID; a volume's name
	Scope  string // its ScopeLabel, "" without
	Parent string // an exec's container, a task's service: its full ID
	Names  []string
}

// notFoundMessage is dockerd's message for a missing object of kind k
// named ref (daemon/errors.go objNotFoundError, libnetwork
// ErrNoSuchNetwork, volume/service OpErr, daemon/cluster's errors).
func notFoundMessage(k Kind, ref string) string {
	switch k {
	case KindContainer:
		return "No such container: " + ref
	case KindExec:
		return "No such exec instance: " + ref
	case KindNetwork:
		return "network " + ref + " not found"
	case KindVolume:
		return "get " + ref + ": no such volume"
	case KindImage:
		return "No such image: " + ref
	}
	return k.String() + " " + ref + " not found"
}

// scopeViolation is a scoped refusal: a 404 as dockerd's (message set),
// or a RuleScope 403.
type scopeViolation struct {
	status  int
	rule    string
	reason  string
	message string // the whole message, as dockerd's, for a 404
}

func (v *scopeViolation) decision(path string) Decision {
	d := refuse(v.status, v.rule, path, v.reason)
	d.Message = v.message
	return d
}

func outOfScope(k Kind, ref string) *scopeViolation {
	return &scopeViolation{status: StatusNotFound, rule: RuleOutOfScope,
		reason:  "the " + k.String() + " is not in the volume's scope",
		message: notFoundMessage(k, ref)}
}

func scopeDenied(reason string) *scopeViolation {
	return &scopeViolation{status: StatusForbidden, rule: RuleScope, reason: reason}
}

func scopeLookupFailed(k Kind, err error) *scopeViolation {
	return &scopeViolation{status: StatusLookup, rule: RuleLookup,
		reason: "could not ask the daemon which " + k.String() + " the request names (" + errorText(err) + "); try again"}
}

var errNoResolve = errors.New("the proxy has no daemon to ask")

// scoper checks one request of a scoped policy.
type scoper struct {
	scope  string
	daemon Daemon
}

// resolve asks which object ref names and checks it is in the scope.
// It returns the object's full ID.
func (s *scoper) resolve(k Kind, ref string) (string, *scopeViolation) {
	if s.daemon == nil {
		return "", scopeLookupFailed(k, errNoResolve)
	}
	if ref == "" {
		return "", outOfScope(k, ref)
	}
	obj, err := s.daemon.Resolve(k, ref)
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return "", outOfScope(k, ref)
	case errors.Is(err, ErrAmbiguous):
		return s.inScope(k, ref)
	case err != nil:
		return "", scopeLookupFailed(k, err)
	case obj.ID == "":
		return "", scopeLookupFailed(k, errors.New("the daemon's answer has no ID"))
	}
	scope := obj.Scope
	switch k {
	case KindExec, KindTask:
		parent := KindContainer
		if k == KindTask {
			parent = KindService
		}
		if obj.Parent == "" {
			return "", outOfScope(k, ref)
		}
		p, err := s.daemon.Resolve(parent, obj.Parent)
		switch {
		case errors.Is(err, ErrNoSuchObject):
			return "", outOfScope(k, ref)
		case err != nil:
			return "", scopeLookupFailed(k, err)
		}
		scope = p.Scope
	}
	if scope != s.scope {
		if obj.ID == ref {
			return "", outOfScope(k, ref)
		}
		return s.inScope(k, ref)
	}
	return obj.ID, nil
}

// listable are the kinds whose references dockerd resolves by name or ID
// prefix, and whose objects the daemon lists by label.
var listable = []Kind{KindContainer, KindNetwork, KindService, KindSecret, KindConfig}

// inScope resolves ref among the scope's own objects, as dockerd would
// if they were all there is: by name, then by unique ID prefix. It is
// asked when dockerd's own answer names an object outside the scope, or
// a prefix that several objects share: had the scope's answer been
// "none" then, a name or an ID prefix of another scope's object would
// show, by hiding one of the scope's own.
func (s *scoper) inScope(k Kind, ref string) (string, *scopeViolation) {
	if !slices.Contains(listable, k) {
		return "", outOfScope(k, ref)
	}
	objs, err := s.daemon.List(k, s.scope)
	if err != nil {
		return "", scopeLookupFailed(k, err)
	}
	var prefixed []string
	for _, o := range objs {
		if o.Scope != s.scope || o.ID == "" {
			continue
		}
		for _, n := range o.Names {
			if n == ref || k == KindContainer && n == "/"+ref {
				return o.ID, nil
			}
		}
		if strings.HasPrefix(o.ID, ref) {
			prefixed = append(prefixed, o.ID)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0], nil
	}
	return "", outOfScope(k, ref)
}

// exists reports what ref names: its object, or none (a zero Object).
func (s *scoper) exists(k Kind, ref string) (Object, *scopeViolation) {
	if s.daemon == nil {
		return Object{}, scopeLookupFailed(k, errNoResolve)
	}
	obj, err := s.daemon.Resolve(k, ref)
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return Object{}, nil
	case errors.Is(err, ErrAmbiguous):
		return Object{}, outOfScope(k, ref)
	case err != nil:
		return Object{}, scopeLookupFailed(k, err)
	}
	return obj, nil
}
