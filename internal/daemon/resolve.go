package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// Resolve is one GET of the object ref names, which dockerd resolves as
// it resolves the request itself: by full ID, name or unique ID prefix
// (a volume by name, an exec instance by ID).
func (l Lookup) Resolve(kind policy.Kind, ref string) (policy.Object, error) {
	return resolve(l.Ctx, l.Client, kind, ref)
}

// objectPaths are the inspect paths of each kind.
var objectPaths = [...]string{
	policy.KindContainer: "/containers/%s/json",
	policy.KindExec:      "/exec/%s/json",
	policy.KindNetwork:   "/networks/%s",
	policy.KindVolume:    "/volumes/%s",
	policy.KindService:   "/services/%s",
	policy.KindTask:      "/tasks/%s",
	policy.KindSecret:    "/secrets/%s",
	policy.KindConfig:    "/configs/%s",
	policy.KindImage:     "/images/%s/json",
}

// inspected holds what Resolve reads of every kind's inspect answer.
type inspected struct {
	ID     string `json:"Id"` // containers, networks, images ("Id"); services, tasks, secrets, configs ("ID"), exec instances ("ID")
	Name   string // volumes
	Labels map[string]string
	Config *struct{ Labels map[string]string }
	Spec   *struct{ Labels map[string]string }
	// ContainerID is an exec instance's container, ServiceID a task's
	// service.
	ContainerID string
	ServiceID   string
}

func resolve(ctx context.Context, c Client, kind policy.Kind, ref string) (policy.Object, error) {
	obj, _, err := resolveHeader(ctx, c, kind, ref)
	return obj, err
}

// resolveHeader is resolve, and the header of the daemon's answer.
func resolveHeader(ctx context.Context, c Client, kind policy.Kind, ref string) (policy.Object, http.Header, error) {
	if int(kind) >= len(objectPaths) || objectPaths[kind] == "" {
		return policy.Object{}, nil, policy.ErrNoSuchObject
	}
	var in inspected
	path := sprintfPath(objectPaths[kind], ref)
	var q url.Values
	if kind == policy.KindNetwork {
		q = url.Values{"verbose": {"false"}}
	}
	h, err := c.objectHeader(ctx, path, q, &in)
	if err != nil {
		return policy.Object{}, h, err
	}
	obj := policy.Object{ID: in.ID}
	switch kind {
	case policy.KindContainer, policy.KindImage:
		if in.Config != nil {
			obj.Scope = in.Config.Labels[policy.ScopeLabel]
		}
	case policy.KindNetwork:
		obj.Scope = in.Labels[policy.ScopeLabel]
	case policy.KindVolume:
		obj.ID = in.Name
		obj.Scope = in.Labels[policy.ScopeLabel]
	case policy.KindService, policy.KindSecret, policy.KindConfig:
		if in.Spec != nil {
			obj.Scope = in.Spec.Labels[policy.ScopeLabel]
		}
	case policy.KindExec:
		obj.Parent = in.ContainerID
	case policy.KindTask:
		obj.Parent = in.ServiceID
	}
	return obj, h, nil
}

func sprintfPath(format, ref string) string {
	// format holds one %s; the reference is one escaped path segment.
	for i := 0; i+1 < len(format); i++ {
		if format[i] == '%' && format[i+1] == 's' {
			return format[:i] + url.PathEscape(ref) + format[i+2:]
		}
	}
	return format
}

// ScopeCounts counts the containers, networks and volumes of a scope,
// each with one GET that dockerd filters by label.
func (c Client) ScopeCounts(ctx context.Context, scope string) (map[string]int, error) {
	filters, err := json.Marshal(map[string][]string{"label": {policy.ScopeLabel + "=" + scope}})
	if err != nil {
		return nil, err
	}
	f := string(filters)
	counts := map[string]int{}
	var cs []json.RawMessage
	if err := c.get(ctx, "/containers/json", url.Values{"all": {"1"}, "filters": {f}}, &cs); err != nil {
		return nil, err
	}
	counts["containers"] = len(cs)
	var ns []json.RawMessage
	if err := c.get(ctx, "/networks", url.Values{"filters": {f}}, &ns); err != nil {
		return nil, err
	}
	counts["networks"] = len(ns)
	var vs struct{ Volumes []json.RawMessage }
	if err := c.get(ctx, "/volumes", url.Values{"filters": {f}}, &vs); err != nil {
		return nil, err
	}
	counts["volumes"] = len(vs.Volumes)
	return counts, nil
}

// listPaths are the list routes of the kinds a scope lists.
var listPaths = map[policy.Kind]string{
	policy.KindContainer: "/containers/json",
	policy.KindNetwork:   "/networks",
	policy.KindService:   "/services",
	policy.KindSecret:    "/secrets",
	policy.KindConfig:    "/configs",
}

// List is one GET of the objects of kind that carry the scope's label,
// filtered by dockerd.
func (l Lookup) List(kind policy.Kind, scope string) ([]policy.Object, error) {
	return list(l.Ctx, l.Client, kind, scope)
}

func list(ctx context.Context, c Client, kind policy.Kind, scope string) ([]policy.Object, error) {
	path, ok := listPaths[kind]
	if !ok {
		return nil, nil
	}
	filters, err := json.Marshal(map[string][]string{"label": {policy.ScopeLabel + "=" + scope}})
	if err != nil {
		return nil, err
	}
	q := url.Values{"filters": {string(filters)}}
	if kind == policy.KindContainer {
		q.Set("all", "1")
	}
	var items []struct {
		ID     string `json:"Id"`
		Name   string
		Names  []string
		Labels map[string]string
		Spec   *struct {
			Name   string
			Labels map[string]string
		}
	}
	if err := c.get(ctx, path, q, &items); err != nil {
		return nil, err
	}
	out := make([]policy.Object, 0, len(items))
	for _, it := range items {
		o := policy.Object{ID: it.ID, Scope: it.Labels[policy.ScopeLabel], Names: it.Names}
		if it.Name != "" {
			o.Names = append(o.Names, it.Name)
		}
		if it.Spec != nil {
			o.Scope = it.Spec.Labels[policy.ScopeLabel]
			o.Names = append(o.Names, it.Spec.Name)
		}
		out = append(out, o)
	}
	return out, nil
}
