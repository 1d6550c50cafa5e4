package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
)

// Endpoints a scope reads.
var (
	epNetworkCreate     = ep(mPOST, "/networks/create")
	epSecretCreate      = ep(mPOST, "/secrets/create")
	epSecretUpdate      = ep(mPOST, "/secrets/{id}/update")
	epConfigCreate      = ep(mPOST, "/configs/create")
	epConfigUpdate      = ep(mPOST, "/configs/{id}/update")
	epNetworkDisconnect = ep(mPOST, "/networks/{id}/disconnect")
	epCommit            = ep(mPOST, "/commit")
	epImageTag          = ep(mPOST, "/images/{name}/tag")
	epContainerRename   = ep(mPOST, "/containers/{name}/rename")
	epTasks             = ep(mGET|mHEAD, "/tasks")
)

// refPath is a route whose path names an object: prefix, the reference
// (which, like dockerd's "{name:.*}", may span segments), then suffix,
// then, when tail is set, one more segment.
type refPath struct {
	methods methodSet
	kind    Kind
	prefix  string
	suffix  string
	tail    bool
}

// refPaths follow dockerd's routes (daemon/server/router/*). An image
// route is checked but never rewritten: images are shared, and a tag
// and an ID name different things to DELETE /images/{name}.
var refPaths = []refPath{
	{mDELETE, KindContainer, "/containers/", "/checkpoints/", true},
	{mGET | mHEAD | mPOST | mPUT | mDELETE, KindContainer, "/containers/", "", false}, // any suffix: see containerRef
	{mGET, KindExec, "/exec/", "/json", false},
	{mPOST, KindExec, "/exec/", "/start", false},
	{mPOST, KindExec, "/exec/", "/resize", false},
	{mPOST, KindNetwork, "/networks/", "/connect", false},
	{mPOST, KindNetwork, "/networks/", "/disconnect", false},
	{mGET | mHEAD | mDELETE, KindNetwork, "/networks/", "", false},
	{mGET | mHEAD | mDELETE | mPUT, KindVolume, "/volumes/", "", false},
	{mPOST, KindService, "/services/", "/update", false},
	{mGET, KindService, "/services/", "/logs", false},
	{mGET | mHEAD | mDELETE, KindService, "/services/", "", false},
	{mGET, KindTask, "/tasks/", "/logs", false},
	{mGET | mHEAD, KindTask, "/tasks/", "", false},
	{mPOST, KindSecret, "/secrets/", "/update", false},
	{mGET | mHEAD | mDELETE, KindSecret, "/secrets/", "", false},
	{mPOST, KindConfig, "/configs/", "/update", false},
	{mGET | mHEAD | mDELETE, KindConfig, "/configs/", "", false},
	{mDELETE, KindImage, "/images/", "", false},
	{mPOST, KindImage, "/images/", "/tag", false},
}

// containerSuffixes are the routes under /containers/{name} (dockerd's
// container and checkpoint routers).
var containerSuffixes = []string{"/json", "/logs", "/top", "/changes", "/export", "/stats", "/attach/ws",
	"/attach", "/archive", "/checkpoints", "/kill", "/pause", "/unpause", "/restart", "/start", "/stop",
	"/wait", "/resize", "/exec", "/rename", "/update"}

// collections are the routes under an object prefix that name no object.
var collections = []endpoint{
	ep(mGET|mHEAD, "/containers/json"), epContainerCreate, ep(mPOST, "/containers/prune"),
	ep(mPOST, "/networks/create"), ep(mPOST, "/networks/prune"), epVolumeCreate, ep(mPOST, "/volumes/prune"),
	epServiceCreate, ep(mPOST, "/secrets/create"), ep(mPOST, "/configs/create"),
}

// objectPrefixes are the paths a scope covers object by object; a path
// under one that no route of refPaths matches is refused.
var objectPrefixes = []string{"/containers/", "/exec/", "/networks/", "/volumes/", "/services/", "/tasks/", "/secrets/", "/configs/"}

// match returns the reference in path (canonical, still escaped) and
// where it ends, or ok false.
func (rp refPath) match(m methodSet, path string) (ref string, end int, ok bool) {
	if rp.methods&m == 0 || !strings.HasPrefix(path, rp.prefix) {
		return "", 0, false
	}
	rest := path[len(rp.prefix):]
	switch {
	case rp.tail:
		i := strings.LastIndex(rest, rp.suffix)
		if i <= 0 {
			return "", 0, false
		}
		last := rest[i+len(rp.suffix):]
		if last == "" || strings.Contains(last, "/") {
			return "", 0, false
		}
		ref = rest[:i]
	case rp.kind == KindContainer && rp.suffix == "":
		// DELETE /containers/{name}, or {name} and one of the suffixes.
		ref = rest
		if m != mDELETE {
			ref = ""
			for _, s := range containerSuffixes {
				if r, found := strings.CutSuffix(rest, s); found && r != "" {
					ref = r
					break
				}
			}
		}
	case rp.suffix == "":
		ref = rest
	default:
		r, found := strings.CutSuffix(rest, rp.suffix)
		if !found {
			return "", 0, false
		}
		ref = r
	}
	if ref == "" {
		return "", 0, false
	}
	return ref, len(rp.prefix) + len(ref), true
}

// listPaths are lists and streams that dockerd filters by label: the
// scope's label is merged into their filters.
var listPaths = []endpoint{
	ep(mGET|mHEAD, "/containers/json"), ep(mGET|mHEAD, "/networks"), ep(mGET|mHEAD, "/volumes"),
	ep(mGET|mHEAD, "/services"), ep(mGET|mHEAD, "/secrets"), ep(mGET|mHEAD, "/configs"),
	ep(mGET, "/events"), ep(mPOST, "/containers/prune"), ep(mPOST, "/networks/prune"),
	ep(mPOST, "/volumes/prune"), ep(mPOST, "/images/prune"),
}

// hostWide are what a scoped volume refuses, and why.
var hostWide = []struct {
	endpoint
	why string
}{
	{ep(mGET|mHEAD, "/system/df"), "lists every container, image, volume and build cache of the host, and takes no filter"},
	{ep(mPOST, "/grpc"), "BuildKit's own API (docker buildx build) names no label the scope can add to what it builds; build with docker build (DOCKER_BUILDKIT=0, or 1 on Engine 20.10)"},
	{ep(mPOST, "/swarm/*"), "the swarm is the host's"},
	{ep(mGET|mHEAD, "/swarm/*"), "it returns the swarm's join tokens or unlock key, with which a node of the client's sees every scope"},
	{ep(mPOST|mDELETE, "/nodes/*"), "the swarm's nodes are the host's"},
	{ep(mPOST|mDELETE, "/plugins/*"), "plugins are the host's"},
	{ep(mPOST, "/images/load"), "an archive's images carry names of their own, which would move the shared images' tags of every scope; build or pull instead"},
}

// scopeBodies are the requests whose bodies a scope reads: creates to
// stamp, and bodies that name other objects.
var scopeBodies = []endpoint{
	epContainerCreate, epContainerStart, epNetworkCreate, epVolumeCreate, epServiceCreate, epServiceUpdate,
	epSecretCreate, epSecretUpdate, epConfigCreate, epConfigUpdate, epNetworkConnect, epNetworkDisconnect,
}

func scopeBodyNeeded(m methodSet, path string) bool {
	return slices.ContainsFunc(scopeBodies, func(e endpoint) bool { return e.match(m, path) })
}

// scoped checks a request of a scoped policy. It returns the target and
// body to forward ("" and nil: as sent).
func (p *Policy) scoped(r Request, m methodSet, path, query string) (string, []byte, *scopeViolation) {
	s := &scoper{scope: p.scope, daemon: r.Daemon}
	if epTasks.match(m, path) {
		q, v := s.tasksFilters(query)
		if v != nil {
			return "", nil, v
		}
		return rawPathOf(r.Target) + "?" + q, nil, nil
	}
	for _, h := range hostWide {
		if h.match(m, path) {
			return "", nil, scopeDenied(describe(r.Method, m, path) + " is not allowed on a scoped volume: " + h.why)
		}
	}
	for _, l := range listPaths {
		if l.match(m, path) {
			q, v := scopedFilters(query, p.scope)
			if v != nil {
				return "", nil, v
			}
			return rawPathOf(r.Target) + "?" + q, nil, nil
		}
	}
	target, v := s.pathRef(r, m, path)
	if v != nil {
		return "", nil, v
	}
	if v := idLikeName(m, path, query, r.Body); v != nil {
		return "", nil, v
	}
	switch {
	case epContainerCreate.match(m, path):
		body, v := s.containerCreate(r.Body)
		return target, body, v
	case epNetworkCreate.match(m, path), epVolumeCreate.match(m, path),
		epSecretCreate.match(m, path), epSecretUpdate.match(m, path),
		epConfigCreate.match(m, path), epConfigUpdate.match(m, path):
		if epVolumeCreate.match(m, path) {
			if v := s.volumeCreate(r.Body); v != nil {
				return "", nil, v
			}
		}
		if epNetworkCreate.match(m, path) {
			var req struct{ ConfigFrom *struct{ Network string } }
			if err := decodeJSON(r.Body, &req); err != nil {
				return "", nil, badBodyScope("network create", err)
			}
			if req.ConfigFrom != nil && req.ConfigFrom.Network != "" {
				if v := s.networkRef(req.ConfigFrom.Network); v != nil {
					return "", nil, v
				}
			}
		}
		body, v := stamp(r.Body, p.scope, false)
		return target, body, v
	case epContainerStart.match(m, path):
		// A start before API 1.24 applies a HostConfig body.
		body, v := s.startBody(r.Body)
		return target, body, v
	case epServiceCreate.match(m, path), epServiceUpdate.match(m, path):
		body, v := s.service(r.Body)
		return target, body, v
	case epNetworkConnect.match(m, path), epNetworkDisconnect.match(m, path):
		body, v := s.networkContainer(r.Body)
		return target, body, v
	case epCommit.match(m, path):
		t, v := s.commit(r.Target, query)
		return t, nil, v
	case epBuild.match(m, path):
		q, err := url.ParseQuery(query)
		if err != nil {
			return "", nil, badQueryScope("the query string is malformed")
		}
		if v := s.imageNames(q["t"], false); v != nil {
			return "", nil, v
		}
		for i, nm := range q["networkmode"] {
			if ref, ok := strings.CutPrefix(nm, "container:"); ok {
				id, v := s.resolve(KindContainer, ref)
				if v != nil {
					return "", nil, atCreate(v, StatusBadRequest, "")
				}
				q["networkmode"][i] = "container:" + id
			} else if nm != "" && !predefinedNetwork(nm) {
				if v := s.networkRef(nm); v != nil {
					return "", nil, atCreate(v, StatusBadRequest, "")
				}
			}
		}
		t, v := scopedBuild(rawPathOf(r.Target)+"?"+q.Encode(), q.Encode(), p.scope)
		return t, nil, v
	case epImageTag.match(m, path), epImageCreate.match(m, path):
		q, err := url.ParseQuery(query)
		if err != nil {
			return "", nil, badQueryScope("the query string is malformed")
		}
		pull := epImageCreate.match(m, path) && q.Get("fromImage") != ""
		repo, tag := q.Get("repo"), q.Get("tag")
		if pull {
			repo = q.Get("fromImage")
		}
		if repo != "" {
			name := repo
			if tag != "" && !strings.Contains(tag, ":") {
				name += ":" + tag
			}
			if v := s.imageNames([]string{name}, pull); v != nil {
				return "", nil, v
			}
		}
	}
	return target, nil, nil
}

// rawPathOf is the request-target's path, as sent.
func rawPathOf(target string) string {
	p, _, _ := strings.Cut(target, "?")
	return p
}

// pathRef checks the object the path names, if any, and returns the
// target naming it by full ID.
func (s *scoper) pathRef(r Request, m methodSet, path string) (string, *scopeViolation) {
	if slices.ContainsFunc(collections, func(e endpoint) bool { return e.match(m, path) }) {
		return "", nil
	}
	for _, rp := range refPaths {
		ref, end, ok := rp.match(m, path)
		if !ok {
			continue
		}
		id, v := s.resolve(rp.kind, decode(ref))
		if rp.kind == KindImage {
			if v != nil && v.status == StatusNotFound && v.message != "" {
				return "", scopeDenied("images are shared by every scope and read-only to each: " + describe(r.Method, m, path) +
					" is allowed only on an image built through this scope")
			}
			return "", v
		}
		if v != nil {
			return "", v
		}
		// The version prefix as sent, then the canonical path with the
		// full ID in place of the reference.
		canon, _ := canonical(rawPathOf(r.Target))
		version := canon[:len(canon)-len(stripVersion(canon))]
		t := version + rp.prefix + id + path[end:]
		if _, q, found := strings.Cut(r.Target, "?"); found {
			t += "?" + q
		}
		return t, nil
	}
	for _, pre := range objectPrefixes {
		if strings.HasPrefix(path, pre) || path+"/" == pre {
			if path+"/" == pre {
				break // the list itself
			}
			return "", scopeDenied(describe(r.Method, m, path) + " is not an endpoint a scoped volume knows how to confine")
		}
	}
	return "", nil
}

// scopedFilters merges the scope's label into the query's filters, as
// dockerd reads them (daemon/server/httputils, api/types/filters
// FromJSON: r.Form.Get("filters"), the map-of-sets shape or the older
// map-of-lists). A label filter with several values matches objects that
// carry all of them, so the client's own filters can only narrow the
// result. Anything dockerd might read another way is refused.
func scopedFilters(query, scope string) (string, *scopeViolation) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", badQueryScope("the query string is malformed")
	}
	f := map[string]map[string]bool{}
	switch vs := q["filters"]; len(vs) {
	case 0:
	case 1:
		if vs[0] != "" {
			if f, err = parseFilters(vs[0]); err != nil {
				return "", badQueryScope("the filters parameter is not valid JSON of filters")
			}
		}
	default:
		return "", badQueryScope("the filters parameter is given more than once")
	}
	if f == nil {
		f = map[string]map[string]bool{}
	}
	// dockerd reads a set's members, whatever their value: true says so
	// to any reader.
	for _, set := range f {
		for v := range set {
			set[v] = true
		}
	}
	if f["label"] == nil {
		f["label"] = map[string]bool{}
	}
	f["label"][ScopeLabel+"="+scope] = true
	enc, err := json.Marshal(f)
	if err != nil {
		return "", badQueryScope("the filters parameter is not valid JSON of filters")
	}
	q["filters"] = []string{string(enc)}
	return q.Encode(), nil
}

// tasksFilters confines GET /tasks (docker service ps) to the tasks of
// the scope's services: tasks carry no labels of their own, so the list
// must name its services (filter service), each of the scope, and goes
// to dockerd naming them by full ID. dockerd answers a service it cannot
// find with a 404 (daemon/cluster/tasks.go GetTasks).
func (s *scoper) tasksFilters(query string) (string, *scopeViolation) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", badQueryScope("the query string is malformed")
	}
	var f map[string]map[string]bool
	switch vs := q["filters"]; {
	case len(vs) > 1:
		return "", badQueryScope("the filters parameter is given more than once")
	case len(vs) == 1 && vs[0] != "":
		if f, err = parseFilters(vs[0]); err != nil {
			return "", badQueryScope("the filters parameter is not valid JSON of filters")
		}
	}
	if len(f["service"]) == 0 {
		return "", scopeDenied("GET /tasks lists the tasks of every service, and tasks carry no scope label of their own: on a scoped volume, name the services (docker service ps SERVICE)")
	}
	ids := map[string]bool{}
	for _, ref := range slices.Sorted(maps.Keys(f["service"])) {
		id, v := s.resolve(KindService, ref)
		if v != nil {
			return "", v
		}
		ids[id] = true
	}
	f["service"] = ids
	enc, err := json.Marshal(f)
	if err != nil {
		return "", badQueryScope("the filters parameter is not valid JSON of filters")
	}
	q["filters"] = []string{string(enc)}
	return q.Encode(), nil
}

// parseFilters reads filters as dockerd's filters.FromJSON does.
func parseFilters(s string) (map[string]map[string]bool, error) {
	var f map[string]map[string]bool
	if err := json.Unmarshal([]byte(s), &f); err == nil {
		return f, nil
	}
	var old map[string][]string
	if err := json.Unmarshal([]byte(s), &old); err != nil {
		return nil, err
	}
	f = make(map[string]map[string]bool, len(old))
	for k, vs := range old {
		f[k] = make(map[string]bool, len(vs))
		for _, v := range vs {
			f[k][v] = true
		}
	}
	return f, nil
}

func badQueryScope(reason string) *scopeViolation {
	return &scopeViolation{status: StatusBadRequest, rule: RuleBadQuery, reason: reason}
}

func badBodyScope(what string, err error) *scopeViolation {
	v := badBody(what, err)
	return &scopeViolation{status: v.status, rule: v.rule, reason: v.reason}
}

// stamp puts the scope's label on the object a body creates: a member
// "Labels" appended to the body's object, which encoding/json (dockerd's
// decoder) reads last, adding its keys to the labels read before and
// replacing the client's own value of ScopeLabel. With containerSpec, a
// service's containers are labelled too. The result is decoded again
// and checked.
func stamp(body []byte, scope string, containerSpec bool) ([]byte, *scopeViolation) {
	trimmed := bytes.Trim(body, jsonSpace) // not bytes.TrimSpace: JSON's white space only
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &scopeViolation{status: StatusBadRequest, rule: RuleBadBody, reason: "the request body must be a JSON object"}
	}
	var check stampCheck
	if err := decodeJSON(trimmed, &check); err != nil {
		return nil, badBodyScope("request", err)
	}
	labels, _ := json.Marshal(map[string]string{ScopeLabel: scope})
	var add bytes.Buffer
	add.WriteString(`"Labels":`)
	add.Write(labels)
	if containerSpec && check.TaskTemplate.ContainerSpec != nil {
		add.WriteString(`,"TaskTemplate":{"ContainerSpec":{"Labels":`)
		add.Write(labels)
		add.WriteString(`}}`)
	}
	inner := bytes.Trim(trimmed[1:len(trimmed)-1], jsonSpace)
	out := make([]byte, 0, len(trimmed)+add.Len()+2)
	out = append(out, trimmed[:len(trimmed)-1]...)
	if len(inner) > 0 {
		out = append(out, ',')
	}
	out = append(out, add.Bytes()...)
	out = append(out, '}')
	var got stampCheck
	if err := decodeJSON(out, &got); err != nil || got.Labels[ScopeLabel] != scope ||
		containerSpec && check.TaskTemplate.ContainerSpec != nil &&
			(got.TaskTemplate.ContainerSpec == nil || got.TaskTemplate.ContainerSpec.Labels[ScopeLabel] != scope) {
		return nil, &scopeViolation{status: StatusBadRequest, rule: RuleBadBody, reason: "the scope's label could not be added to the request body"}
	}
	return out, nil
}

// jsonSpace is the white space JSON allows between tokens.
const jsonSpace = " \t\r\n"

// stampCheck reads what stamp writes, as dockerd's types do: the
// object's labels, and a service's containers' labels.
type stampCheck struct {
	Labels       map[string]string
	TaskTemplate struct {
		ContainerSpec *struct {
			Labels map[string]string
		}
	}
}

// predefinedNetwork reports whether name is one of dockerd's predefined
// network modes, which belong to no scope.
func predefinedNetwork(name string) bool {
	switch strings.ToLower(name) {
	case "bridge", "host", "none", "default":
		return true
	}
	return false
}

// containerCreate checks what a create names (containers whose volumes
// or namespaces it takes, links, networks, named volumes), forwards the
// containers by full ID, and stamps the new container.
func (s *scoper) containerCreate(body []byte) ([]byte, *scopeViolation) {
	var req container.CreateRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, badBodyScope("container create", err)
	}
	var legacy legacyCreateRequest
	if err := decodeJSON(body, &legacy); err != nil {
		return nil, badBodyScope("container create", err)
	}
	var rws []rewrite
	for _, hc := range []*container.HostConfig{req.HostConfig, legacy.HostConfig} {
		if hc == nil {
			continue
		}
		r, v := s.hostConfigRefs(hc)
		if v != nil {
			return nil, v
		}
		rws = append(rws, r...)
	}
	if nc := req.NetworkingConfig; nc != nil {
		for _, name := range slices.Sorted(maps.Keys(nc.EndpointsConfig)) {
			if v := s.networkRef(name); v != nil {
				return nil, atCreate(v, StatusBadRequest, "")
			}
			if es := nc.EndpointsConfig[name]; es != nil {
				r, v := s.links(es.Links)
				if v != nil {
					return nil, v
				}
				rws = append(rws, r...)
			}
		}
	}
	out, err := rewriteJSON(body, rws)
	if err != nil {
		return nil, badBodyScope("container create", err)
	}
	return stamp(out, s.scope, false)
}

// startBody checks the HostConfig a start may carry, as a create's.
func (s *scoper) startBody(body []byte) ([]byte, *scopeViolation) {
	if len(bytes.Trim(body, jsonSpace)) == 0 {
		return nil, nil
	}
	var hc container.HostConfig
	if err := decodeJSON(body, &hc); err != nil {
		return nil, badBodyScope("container start", err)
	}
	rws, v := s.hostConfigRefs(&hc)
	if v != nil {
		return nil, v
	}
	out, err := rewriteJSON(body, rws)
	if err != nil {
		return nil, badBodyScope("container start", err)
	}
	return out, nil
}

// hostConfigRefs checks the references of a HostConfig and returns the
// rewrites that name its containers by full ID.
func (s *scoper) hostConfigRefs(hc *container.HostConfig) ([]rewrite, *scopeViolation) {
	var rws []rewrite
	for _, vf := range hc.VolumesFrom {
		ref, mode, hasMode := strings.Cut(vf, ":")
		id, v := s.resolve(KindContainer, ref)
		if v != nil {
			return nil, v
		}
		to := id
		if hasMode {
			to += ":" + mode
		}
		rws = append(rws, rewrite{"VolumesFrom", vf, to})
	}
	r, v := s.links(hc.Links)
	if v != nil {
		return nil, v
	}
	rws = append(rws, r...)
	modes := []struct{ key, mode string }{
		{"NetworkMode", string(hc.NetworkMode)}, {"PidMode", string(hc.PidMode)}, {"IpcMode", string(hc.IpcMode)},
		{"Cgroup", string(hc.Cgroup)},
	}
	for _, md := range modes {
		if ref, ok := strings.CutPrefix(md.mode, "container:"); ok {
			id, v := s.resolve(KindContainer, ref)
			if v != nil {
				return nil, atCreate(v, StatusBadRequest, "")
			}
			rws = append(rws, rewrite{md.key, md.mode, "container:" + id})
		}
	}
	if nm := string(hc.NetworkMode); nm != "" && !strings.HasPrefix(nm, "container:") {
		if v := s.networkRef(nm); v != nil {
			return nil, atCreate(v, StatusBadRequest, "")
		}
	}
	for _, b := range hc.Binds {
		src, _, _ := strings.Cut(b, ":")
		if src != "" && !strings.HasPrefix(src, "/") {
			if v := s.volumeRef("HostConfig.Binds", src); v != nil {
				return nil, v
			}
		}
	}
	for i, m := range hc.Mounts {
		if m.Type == mount.TypeVolume && m.Source != "" {
			if v := s.volumeRef(fmt.Sprintf("HostConfig.Mounts[%d]", i), m.Source); v != nil {
				return nil, v
			}
		}
	}
	return rws, nil
}

// links checks the containers of links (a HostConfig's, an endpoint's)
// and returns the rewrites that name them by full ID.
func (s *scoper) links(links []string) ([]rewrite, *scopeViolation) {
	var rws []rewrite
	for _, l := range links {
		name, alias, ok := parseLink(l)
		if !ok {
			continue // dockerd refuses it, naming no container
		}
		id, v := s.resolve(KindContainer, name)
		if v != nil {
			// daemon/container_operations.go registerLinks: an invalid
			// parameter, so that the client does not take it for a
			// missing image.
			return nil, atCreate(v, StatusBadRequest, "could not get container for "+name+": ")
		}
		rws = append(rws, rewrite{"Links", l, id + ":" + alias})
	}
	return rws, nil
}

// atCreate is a reference's 404 as a container create answers it. The
// docker CLI takes a 404 from a create for a missing image, and pulls it;
// so dockerd answers a missing reference that it resolves only at start
// (a container:X namespace, a network) at start, and one it resolves at
// create with the status and words of that step. Refused at create, the
// reference gets that status (not 404) and those words, and docker run
// prints what it prints for a missing one.
func atCreate(v *scopeViolation, status int, prefix string) *scopeViolation {
	if v.message == "" {
		return v
	}
	out := *v
	out.status, out.message = status, prefix+v.message
	return &out
}

// parseLink splits a link as dockerd does (opts.ParseLink): "name",
// "name:alias", or "/name:/parent/alias" as a container's own HostConfig
// holds it.
func parseLink(l string) (name, alias string, ok bool) {
	parts := strings.Split(l, ":")
	switch {
	case l == "" || len(parts) > 2:
		return "", "", false
	case len(parts) == 1:
		return l, l, true
	case strings.HasPrefix(parts[0], "/"):
		return parts[0][1:], path.Base(parts[1]), true
	}
	return parts[0], parts[1], true
}

// networkRef checks a network a container joins: a predefined one, or
// one of the scope.
func (s *scoper) networkRef(name string) *scopeViolation {
	if predefinedNetwork(name) {
		return nil
	}
	_, v := s.resolve(KindNetwork, name)
	return v
}

// volumeRef checks a named volume a container mounts. dockerd would make
// one that does not exist, without the scope's label; so it must exist,
// made through the scope.
func (s *scoper) volumeRef(field, name string) *scopeViolation {
	obj, v := s.exists(KindVolume, name)
	switch {
	case v != nil:
		return v
	case obj.ID == "":
		return scopeDenied(field + ": volume " + quoteShort(name) + " does not exist; on a scoped volume, create it first (docker volume create), so that it carries the scope's label")
	case obj.Scope != s.scope:
		return scopeDenied(field + ": volume " + quoteShort(name) + " is not in the volume's scope")
	}
	return nil
}

// volumeCreate refuses a name another scope's volume has: dockerd would
// answer with that volume.
func (s *scoper) volumeCreate(body []byte) *scopeViolation {
	var req struct{ Name string }
	if err := decodeJSON(body, &req); err != nil {
		return badBodyScope("volume create", err)
	}
	if req.Name == "" {
		return nil
	}
	obj, v := s.exists(KindVolume, req.Name)
	switch {
	case v != nil:
		return v
	case obj.ID != "" && obj.Scope != s.scope:
		return scopeDenied("a volume named " + quoteShort(req.Name) + " exists outside the volume's scope; choose another name")
	}
	return nil
}

// service checks a service's networks, secrets and configs, and stamps
// the service and its containers.
func (s *scoper) service(body []byte) ([]byte, *scopeViolation) {
	var spec swarm.ServiceSpec
	if err := decodeJSON(body, &spec); err != nil {
		return nil, badBodyScope("service", err)
	}
	var legacy legacyServiceSpec
	if err := decodeJSON(body, &legacy); err != nil {
		return nil, badBodyScope("service", err)
	}
	for _, n := range slices.Concat(spec.TaskTemplate.Networks, legacy.Networks) {
		if v := s.networkRef(n.Target); v != nil {
			return nil, v
		}
	}
	if cs := spec.TaskTemplate.ContainerSpec; cs != nil {
		for _, sr := range cs.Secrets {
			if sr != nil {
				if _, v := s.resolve(KindSecret, sr.SecretID); v != nil {
					return nil, v
				}
			}
		}
		for _, cr := range cs.Configs {
			if cr != nil {
				if _, v := s.resolve(KindConfig, cr.ConfigID); v != nil {
					return nil, v
				}
			}
		}
		for i, m := range cs.Mounts {
			if m.Type == mount.TypeVolume && m.Source != "" {
				if v := s.volumeRef(fmt.Sprintf("TaskTemplate.ContainerSpec.Mounts[%d]", i), m.Source); v != nil {
					return nil, v
				}
			}
		}
	}
	return stamp(body, s.scope, true)
}

// networkContainer checks the container of a network connect or
// disconnect, and forwards it by full ID.
func (s *scoper) networkContainer(body []byte) ([]byte, *scopeViolation) {
	var req network.DisconnectRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, badBodyScope("network connect", err)
	}
	id, v := s.resolve(KindContainer, req.Container)
	if v != nil {
		return nil, v
	}
	out, err := rewriteJSON(body, []rewrite{{"Container", req.Container, id}})
	if err != nil {
		return nil, badBodyScope("network connect", err)
	}
	return out, nil
}

// imageNames checks the names a request gives an image (a build's,
// a tag's, a commit's or an import's target; a pull's): a name that an
// image of another scope has is refused, since images are shared and
// read-only across scopes, and so is a name of a shared image that is
// not a pull's: a tenant's image under a name every scope uses would be
// every scope's next run.
func (s *scoper) imageNames(names []string, pull bool) *scopeViolation {
	for _, n := range names {
		if n == "" {
			continue
		}
		obj, v := s.exists(KindImage, n)
		switch {
		case v != nil && v.status == StatusNotFound:
			// An ambiguous ID prefix: dockerd refuses it as a name.
			continue
		case v != nil:
			return v
		case obj.ID == "" || obj.Scope == s.scope:
			continue
		case pull && obj.Scope == "":
			continue
		}
		return scopeDenied("the name " + quoteShort(n) + " is an image's that is not the scope's: images are shared and read-only across scopes; give your image a name of its own")
	}
	return nil
}

// commit checks the container POST /commit names (query parameter
// container, as dockerd reads it: the first) and forwards its full ID.
func (s *scoper) commit(target, query string) (string, *scopeViolation) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", badQueryScope("the query string is malformed")
	}
	if len(q["container"]) > 1 {
		return "", badQueryScope("the container parameter is given more than once")
	}
	id, v := s.resolve(KindContainer, q.Get("container"))
	if v != nil {
		return "", v
	}
	if repo := q.Get("repo"); repo != "" {
		name := repo
		if tag := q.Get("tag"); tag != "" {
			name += ":" + tag
		}
		if v := s.imageNames([]string{name}, false); v != nil {
			return "", v
		}
	}
	q["container"] = []string{id}
	return rawPathOf(target) + "?" + q.Encode(), nil
}

// scopedBuild labels the image a build makes: the labels parameter
// (r.FormValue("labels"), a JSON object), which the classic builder and
// BuildKit behind /build both apply.
func scopedBuild(target, query, scope string) (string, *scopeViolation) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", badQueryScope("the query string is malformed")
	}
	labels := map[string]string{}
	switch vs := q["labels"]; len(vs) {
	case 0:
	case 1:
		if vs[0] != "" {
			if err := json.Unmarshal([]byte(vs[0]), &labels); err != nil {
				return "", badQueryScope("the labels parameter is not a JSON object of strings")
			}
			if labels == nil {
				labels = map[string]string{}
			}
		}
	default:
		return "", badQueryScope("the labels parameter is given more than once")
	}
	labels[ScopeLabel] = scope
	enc, _ := json.Marshal(labels)
	q["labels"] = []string{string(enc)}
	return rawPathOf(target) + "?" + q.Encode(), nil
}

// idLikeName refuses a container or network name that is a full ID's
// spelling: dockerd resolves a full ID before a name, so a request
// forwarded by the full ID of an object that has since gone would reach
// an object named so. No scoped client may make such a name.
func idLikeName(m methodSet, path, query string, body []byte) *scopeViolation {
	var names []string
	switch {
	case epContainerCreate.match(m, path), epContainerRename.match(m, path):
		q, err := url.ParseQuery(query)
		if err != nil {
			return badQueryScope("the query string is malformed")
		}
		names = q["name"]
	case epNetworkCreate.match(m, path):
		var req struct{ Name string }
		if decodeJSON(body, &req) == nil {
			names = []string{req.Name}
		}
	}
	for _, n := range names {
		if fullID(strings.TrimPrefix(n, "/")) {
			return scopeDenied("a name of 64 hexadecimal digits is a full ID's spelling, which a scoped volume does not allow as a name")
		}
	}
	return nil
}

func fullID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
