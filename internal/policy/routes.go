package policy

import "strings"

// Methods, as a bit set, so that a rule's methods test is one AND.
type methodSet uint16

const (
	mGET methodSet = 1 << iota
	mHEAD
	mPOST
	mPUT
	mDELETE
	mOPTIONS
	mPATCH
	mOther // any other token: matched only by "*"
	mAll   = 1<<iota - 1
)

var methodBits = map[string]methodSet{
	"GET": mGET, "HEAD": mHEAD, "POST": mPOST, "PUT": mPUT,
	"DELETE": mDELETE, "OPTIONS": mOPTIONS, "PATCH": mPATCH,
}

// methodBit maps a request method (any case) to its bit.
func methodBit(m string) methodSet {
	if b, ok := methodBits[m]; ok {
		return b
	}
	if b, ok := methodBits[strings.ToUpper(m)]; ok {
		return b
	}
	return mOther
}

// validMethod reports whether m is an HTTP token of sane length.
func validMethod(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// endpoint is one method and path pattern.
type endpoint struct {
	methods methodSet
	pat     pattern
}

func (e endpoint) match(m methodSet, path string) bool {
	return e.methods&m != 0 && e.pat.match(path)
}

func ep(methods methodSet, pat string) endpoint {
	return endpoint{methods: methods, pat: mustPattern(pat)}
}

// Endpoints the policy treats specially. Their patterns follow dockerd's
// routes (daemon/server/router/*): a placeholder spans segments as dockerd's
// "{name:.*}" does, so a name with a "/" cannot slip past.
var (
	epContainerCreate  = ep(mPOST, "/containers/create")
	epContainerUpdate  = ep(mPOST, "/containers/{name}/update")
	epExecCreate       = ep(mPOST, "/containers/{name}/exec")
	epContainerStart   = ep(mPOST, "/containers/{name}/start")
	epCheckpointCreate = ep(mPOST, "/containers/{name}/checkpoints")
	epCheckpointList   = ep(mGET|mHEAD, "/containers/{name}/checkpoints")
	epCheckpointDelete = ep(mDELETE, "/containers/{name}/checkpoints/{checkpoint}")
	epServiceCreate    = ep(mPOST, "/services/create")
	epServiceUpdate    = ep(mPOST, "/services/{id}/update")
	epVolumeCreate     = ep(mPOST, "/volumes/create")
	epBuild            = ep(mPOST, "/build")
	epImageCreate      = ep(mPOST, "/images/create")
	epNetworkConnect   = ep(mPOST, "/networks/{id}/connect")
	epSwarmInit        = ep(mPOST, "/swarm/init")
	epSwarmUpdate      = ep(mPOST, "/swarm/update")

	epArchive = ep(mGET|mHEAD|mPUT, "/containers/{name}/archive")

	epAttach    = ep(mPOST, "/containers/{name}/attach")
	epAttachWS  = ep(mGET, "/containers/{name}/attach/ws")
	epExecStart = ep(mPOST, "/exec/{name}/start")
	epSession   = ep(mPOST, "/session")
	epGRPC      = ep(mPOST, "/grpc")
)

// hijackEndpoints may switch protocols (101) or hijack the connection.
var hijackEndpoints = []endpoint{epAttach, epAttachWS, epExecStart, epSession, epGRPC}

// upgradeSamples are paths of the hijack endpoints, used to check that a
// custom policy's upgrade entries name one of them.
var upgradeSamples = []string{"/containers/x/attach", "/containers/x/attach/ws", "/exec/x/start", "/session", "/grpc"}

// route is one of dockerd's routes, for describing a request to the user.
type route struct {
	endpoint
	name string // e.g. "POST /containers/{name}/start"
}

// routes lists dockerd's API routes (moby daemon/server/router), more
// specific ones first.
var routes = func() []route {
	var rs []route
	add := func(m methodSet, p string) {
		var verb string
		for name, b := range methodBits {
			if b == m {
				verb = name
			}
		}
		rs = append(rs, route{endpoint: ep(m, p), name: verb + " " + p})
	}
	for _, p := range []string{"/_ping", "/events", "/info", "/version", "/system/df", "/containers/json",
		"/containers/{name}/export", "/containers/{name}/changes", "/containers/{name}/json",
		"/containers/{name}/top", "/containers/{name}/logs", "/containers/{name}/stats",
		"/containers/{name}/attach/ws", "/exec/{id}/json", "/containers/{name}/archive",
		"/containers/{name}/checkpoints", "/images/json", "/images/search", "/images/get",
		"/images/{name}/get", "/images/{name}/history", "/images/{name}/json",
		"/images/{name}/attestations", "/networks", "/networks/{id}", "/volumes", "/volumes/{name}",
		"/plugins", "/plugins/privileges", "/plugins/{name}/json", "/swarm", "/swarm/unlockkey",
		"/services", "/services/{id}/logs", "/services/{id}", "/nodes", "/nodes/{id}", "/tasks",
		"/tasks/{id}/logs", "/tasks/{id}", "/secrets", "/secrets/{id}", "/configs", "/configs/{id}",
		"/distribution/{name}/json"} {
		add(mGET, p)
	}
	add(mHEAD, "/_ping")
	add(mHEAD, "/containers/{name}/archive")
	for _, p := range []string{"/containers/create", "/containers/prune", "/containers/{name}/kill",
		"/containers/{name}/pause", "/containers/{name}/unpause", "/containers/{name}/restart",
		"/containers/{name}/start", "/containers/{name}/stop", "/containers/{name}/wait",
		"/containers/{name}/resize", "/containers/{name}/attach", "/containers/{name}/exec",
		"/containers/{name}/rename", "/containers/{name}/update", "/containers/{name}/checkpoints",
		"/exec/{id}/start", "/exec/{id}/resize", "/commit", "/images/load", "/images/create",
		"/images/prune", "/images/{name}/push", "/images/{name}/tag", "/networks/create",
		"/networks/prune", "/networks/{id}/connect", "/networks/{id}/disconnect", "/volumes/create",
		"/volumes/prune", "/plugins/pull", "/plugins/create", "/plugins/{name}/enable",
		"/plugins/{name}/disable", "/plugins/{name}/push", "/plugins/{name}/upgrade",
		"/plugins/{name}/set", "/swarm/init", "/swarm/join", "/swarm/leave", "/swarm/update",
		"/swarm/unlock", "/services/create", "/services/{id}/update", "/nodes/{id}/update",
		"/secrets/create", "/secrets/{id}/update", "/configs/create", "/configs/{id}/update",
		"/build/prune", "/build/cancel", "/build", "/session", "/grpc", "/auth"} {
		add(mPOST, p)
	}
	add(mPUT, "/containers/{name}/archive")
	add(mPUT, "/volumes/{name}")
	for _, p := range []string{"/containers/{name}/checkpoints/{checkpoint}", "/containers/{name}",
		"/images/{name}", "/networks/{id}", "/volumes/{name}", "/plugins/{name}", "/services/{id}",
		"/nodes/{id}", "/secrets/{id}", "/configs/{id}"} {
		add(mDELETE, p)
	}
	return rs
}()

// describe names a request for a user: dockerd's route when one matches,
// else the method and the (canonical, printable) path, shortened.
func describe(method string, m methodSet, path string) string {
	for _, r := range routes {
		if r.match(m, path) {
			return r.name
		}
	}
	const max = 80
	if len(path) > max {
		path = path[:max] + "…"
	}
	if len(method) > 20 {
		method = method[:20]
	}
	return method + " " + path
}
