package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/checkpoint"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/volume"
)

// constraints are the create constraints: what a create-like request may
// ask for. The zero value allows nothing.
type constraints struct {
	privileged   bool // privileged containers and execs, plugin services, any volume driver
	devices      bool // Devices, DeviceCgroupRules, DeviceRequests beyond --gpus
	hostNS       bool // host network, pid, ipc, uts, cgroupns, userns
	unconfined   bool // security options beyond the defaults, MaskedPaths/ReadonlyPaths
	sysctls      bool
	volumesFrom  bool
	cgroupParent bool // HostConfig.CgroupParent, the build's cgroupparent
	swarmCAs     bool // a swarm's signing CA or external CAs
	annotations  bool
	capAdd       []string // normalised ("CAP_SYS_PTRACE"); "ALL" allows any
	binds        []string // cleaned absolute host paths; a bind source must lie at or below one
	volumeTypes  []string // local-driver mount types allowed besides bind ("tmpfs", "nfs")
	// volumeDrivers are the volume plugins allowed besides the built-in
	// local driver.
	volumeDrivers driverList
	// logDrivers are the log drivers allowed besides json-file, local and
	// none: built-in ones by name, or plugins.
	logDrivers driverList
}

// violation is why an inspected request is refused.
type violation struct {
	status int
	rule   string
	reason string
}

// inspection is an endpoint whose body or query the policy checks.
type inspection struct {
	endpoint
	body  bool // BodyNeeded
	check func(c *checker, r Request, path, query string) *violation
}

// inspections follow dockerd's handlers: which body type each decodes and
// which query parameters it reads.
var inspections = []inspection{
	{epContainerCreate, true, (*checker).containerCreate},
	{epContainerUpdate, true, (*checker).containerUpdate},
	{epExecCreate, true, (*checker).execCreate},
	{epServiceCreate, true, (*checker).service},
	{epServiceUpdate, true, (*checker).service},
	{epVolumeCreate, true, (*checker).volumeCreate},
	{epContainerStart, true, (*checker).containerStart},
	{epCheckpointCreate, true, (*checker).checkpointCreate},
	{epCheckpointList, false, (*checker).checkpointDir},
	{epCheckpointDelete, false, (*checker).checkpointDir},
	{epBuild, false, (*checker).build},
	{epNetworkConnect, true, (*checker).networkConnect},
	{epAttach, false, (*checker).attach},
	{epAttachWS, false, (*checker).attachWS},
	{epArchive, false, (*checker).archive},
	{epExecStart, false, (*checker).execStart},
	{epImageCreate, false, (*checker).imageCreate},
	{epSwarmInit, true, (*checker).swarmInit},
	{epSwarmUpdate, true, (*checker).swarmUpdate},
}

func inspectionFor(m methodSet, path string) *inspection {
	for i := range inspections {
		if inspections[i].match(m, path) {
			return &inspections[i]
		}
	}
	return nil
}

// run checks r. Besides a violation it returns the request-target and
// the body to forward when the check resolved references in them ("" and
// nil: as sent).
func (ins *inspection) run(p *Policy, r Request, path, query string) (string, []byte, *violation) {
	c := checker{constraints: p.cons, policy: p.name, daemon: r.Daemon, buildkit: p.allowsBuildKit()}
	if v := ins.check(&c, r, path, query); v != nil {
		return "", nil, v
	}
	var body []byte
	if len(c.rewrites) > 0 && r.Body != nil {
		b, err := rewriteJSON(r.Body, c.rewrites)
		if err != nil {
			return "", nil, badBody("request", err)
		}
		body = b
	}
	return c.target, body, nil
}

// checker applies one policy's constraints and names it in reasons.
type checker struct {
	*constraints
	policy   string
	daemon   Daemon // nil: references that need the daemon are refused
	buildkit bool   // the policy allows BuildKit's API (POST /grpc)

	// What the checks resolved: the body's references (rewrites) and the
	// request-target (target, "" when unchanged) to forward instead.
	rewrites []rewrite
	target   string

	// learn, when set, records what the allowlists are asked for and
	// allows it (learn.go).
	learn *learning
}

func (c *checker) deny(rule, field, flag, what string) *violation {
	var b strings.Builder
	b.WriteString(field)
	if flag != "" {
		b.WriteString(" (" + flag + ")")
	}
	if what != "" {
		b.WriteString(": " + what)
	}
	b.WriteString(" is not allowed by policy " + c.policy)
	return &violation{status: StatusForbidden, rule: rule, reason: b.String()}
}

func badBody(what string, err error) *violation {
	reason := "the " + what + " body is not valid JSON"
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		reason += " (syntax error at byte " + strconv.FormatInt(se.Offset, 10) + ")"
	case errors.As(err, &te) && fieldPath(te.Field):
		// The field name is the body's structure, not its content.
		reason += " (" + te.Field + " has the wrong type)"
	case errors.Is(err, errTrailing):
		reason += " (content after the JSON value)"
	}
	return &violation{status: StatusBadRequest, rule: RuleBadBody, reason: reason}
}

var errTrailing = errors.New("unexpected content after JSON")

// fieldPath reports whether s looks like a path of Go struct fields
// ("HostConfig.Privileged"), not a map key from the body.
func fieldPath(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || part[0] < 'A' || part[0] > 'Z' {
			return false
		}
		for i := 0; i < len(part); i++ {
			if c := part[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				return false
			}
		}
	}
	return true
}

// decodeJSON decodes body as dockerd does (encoding/json: keys match
// without regard to case, the last duplicate wins), and, stricter than
// dockerd, refuses anything but white space after the value. An empty body
// leaves out as it is: dockerd does the same, or refuses it.
func decodeJSON(body []byte, out any) error {
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(out); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailing
	}
	return nil
}

// legacyCreateRequest is the create body as Docker 26 and older decode it
// (runconfig.ContainerConfigWrapper before moby 2954b05b): HostConfig fields
// at the top level were honoured when the "HostConfig" key was absent, and
// partly merged when present.
type legacyCreateRequest struct {
	*container.Config
	InnerHostConfig  *container.HostConfig     `json:"HostConfig,omitempty"`
	Cpuset           string                    `json:",omitempty"`
	NetworkingConfig *network.NetworkingConfig `json:"NetworkingConfig,omitempty"`
	*container.HostConfig
}

// removedHostFields are host settings that older daemons honoured and
// today's types no longer carry. HostConfig.Capabilities (API 1.40) set the
// whole capability set.
type removedHostFields struct {
	Capabilities []string
}

type removedCreateFields struct {
	removedHostFields
	HostConfig *removedHostFields
}

func (c *checker) containerCreate(r Request, _, _ string) *violation {
	var req container.CreateRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return badBody("container create", err)
	}
	var legacy legacyCreateRequest
	if err := decodeJSON(r.Body, &legacy); err != nil {
		return badBody("container create", err)
	}
	var removed removedCreateFields
	if err := decodeJSON(r.Body, &removed); err != nil {
		return badBody("container create", err)
	}
	if req.HostConfig != nil {
		if v := c.hostConfig("HostConfig.", req.HostConfig); v != nil {
			return v
		}
	}
	if legacy.HostConfig != nil {
		if v := c.hostConfig("", legacy.HostConfig); v != nil {
			return v
		}
	}
	if v := c.capList("Capabilities", "", removed.Capabilities); v != nil {
		return v
	}
	if removed.HostConfig != nil {
		if v := c.capList("HostConfig.Capabilities", "", removed.HostConfig.Capabilities); v != nil {
			return v
		}
	}
	if req.NetworkingConfig != nil {
		return c.endpoints("NetworkingConfig.EndpointsConfig", req.NetworkingConfig.EndpointsConfig)
	}
	return nil
}

// endpointSysctls is the endpoint driver option that sets per-interface
// sysctls (docker run --network name=x,driver-opt=...).
const endpointSysctls = "com.docker.network.endpoint.sysctls"

// endpoints checks NetworkingConfig.EndpointsConfig: the networks a
// container joins, each with its endpoint's settings.
func (c *checker) endpoints(field string, eps map[string]*network.EndpointSettings) *violation {
	for _, name := range slices.Sorted(maps.Keys(eps)) {
		if v := c.networkName(field, "--network host", name); v != nil {
			return v
		}
		if v := c.endpointSettings(field, eps[name]); v != nil {
			return v
		}
	}
	return nil
}

// networkName checks a network a container or task joins, as the request
// names it.
func (c *checker) networkName(field, flag, name string) *violation {
	return c.networkRef(field, flag, name)
}

// endpointSettings checks one endpoint's settings, which dockerd applies
// when the container joins the network (daemon/network.go
// buildCreateEndpointOptions and buildJoinOptions pass DriverOpts to the
// driver; daemon/container_operations.go reads the sysctls). The other
// settings (addresses, aliases, links, a MAC address, a gateway priority)
// stay within the network.
func (c *checker) endpointSettings(field string, es *network.EndpointSettings) *violation {
	if es == nil {
		return nil
	}
	return c.driverOpts(field+".DriverOpts", "--network driver-opt", es.DriverOpts)
}

// driverOpts checks an endpoint's driver options.
func (c *checker) driverOpts(field, flag string, opts map[string]string) *violation {
	if _, ok := opts[endpointSysctls]; ok && !c.sysctls {
		return c.deny(RuleSysctls, field, flag, "endpoint sysctls")
	}
	return nil
}

// networkAttachments checks a service's networks, which become its tasks'
// endpoints (daemon/cluster/executor/container/container.go passes
// DriverOpts on as the endpoint's).
func (c *checker) networkAttachments(field string, nets []swarm.NetworkAttachmentConfig) *violation {
	for i, n := range nets {
		f := fmt.Sprintf("%s[%d]", field, i)
		if v := c.networkName(f, "--network host", n.Target); v != nil {
			return v
		}
		if v := c.driverOpts(f+".DriverOpts", "--network driver-opt", n.DriverOpts); v != nil {
			return v
		}
	}
	return nil
}

// networkConnect checks POST /networks/{id}/connect
// (daemon/server/router/network/network_routes.go postNetworkConnect). dockerd
// refuses to connect a container to the host network unless it was created
// there; the policy refuses the host network by name anyway.
func (c *checker) networkConnect(r Request, path, _ string) *violation {
	var req network.ConnectRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return badBody("network connect", err)
	}
	id := decode(strings.TrimSuffix(strings.TrimPrefix(path, "/networks/"), "/connect"))
	if v := c.networkName("POST /networks/{id}/connect", "docker network connect host", id); v != nil {
		return v
	}
	return c.endpointSettings("EndpointConfig", req.EndpointConfig)
}

// hostConfig checks a HostConfig, one family of fields at a time; pre
// prefixes field names.
func (c *checker) hostConfig(pre string, hc *container.HostConfig) *violation {
	if v := c.privileges(pre, hc); v != nil {
		return v
	}
	if v := c.resources(pre, &hc.Resources); v != nil {
		return v
	}
	if v := c.namespaces(pre, hc); v != nil {
		return v
	}
	if v := c.confinement(pre, hc); v != nil {
		return v
	}
	if v := c.kernelSettings(pre, hc); v != nil {
		return v
	}
	if v := c.volumes(pre, hc); v != nil {
		return v
	}
	return c.logDriver(pre+"LogConfig", "--log-driver", hc.LogConfig.Type, hc.LogConfig.Config)
}

// privileges checks Privileged and CapAdd.
func (c *checker) privileges(pre string, hc *container.HostConfig) *violation {
	if hc.Privileged && !c.privileged {
		return c.deny(RulePrivileged, pre+"Privileged", "--privileged", "")
	}
	return c.capList(pre+"CapAdd", "--cap-add", hc.CapAdd)
}

// resources checks the Resources that reach the host beyond a share of
// it: host devices and the cgroup tree. Container create and update carry
// them.
func (c *checker) resources(pre string, r *container.Resources) *violation {
	if !c.devices {
		if len(r.Devices) > 0 {
			return c.deny(RuleDevices, pre+"Devices", "--device", "")
		}
		if len(r.DeviceCgroupRules) > 0 {
			return c.deny(RuleDevices, pre+"DeviceCgroupRules", "--device-cgroup-rule", "")
		}
		for i, dr := range r.DeviceRequests {
			if what := gpuRequestProblem(dr); what != "" {
				return c.deny(RuleDevices, fmt.Sprintf("%sDeviceRequests[%d]", pre, i), "--gpus", what)
			}
		}
	}
	// dockerd puts the container's cgroup under this path of the host's
	// cgroup tree (or systemd slice) instead of the daemon's own, with
	// whatever limits and delegation that place has.
	if r.CgroupParent != "" && !c.cgroupParent {
		return c.deny(RuleCgroupParent, pre+"CgroupParent", "--cgroup-parent", "")
	}
	return nil
}

// gpuCapabilities are the capabilities of dockerd's GPU device drivers
// (daemon/devices_nvidia_linux.go, daemon/devices_amd_linux.go).
var gpuCapabilities = []string{"gpu", "nvidia", "amd", "compute", "compat32", "graphics", "utility", "video", "display"}

// gpuRequestProblem says what makes a device request other than one of
// docker run --gpus, or "". dockerd hands a request to the driver it names,
// whatever its capabilities, or, when it names none, to a driver whose
// capability set holds one of the request's sets (daemon/devices.go
// handleDevice, daemon/internal/capabilities Match: an empty set matches
// any driver). The cdi driver injects whatever host devices its specs name
// (daemon/cdi.go), and the GPU drivers pass a device ID holding "=" to it
// unchanged, as a CDI device name (daemon/devices_nvidia_linux.go
// normalizeDeviceID). So the driver is "" or nvidia, every capability set
// holds "gpu" and GPU capabilities only, and device IDs are plain GPU
// indexes or UUIDs.
func gpuRequestProblem(dr container.DeviceRequest) string {
	if dr.Driver != "" && dr.Driver != "nvidia" {
		return "a device driver other than nvidia"
	}
	if len(dr.Capabilities) == 0 {
		return "a device request without the gpu capability"
	}
	for _, set := range dr.Capabilities {
		if !slices.Contains(set, "gpu") {
			return "a device request without the gpu capability"
		}
		for _, cp := range set {
			if !slices.Contains(gpuCapabilities, cp) {
				return "a device capability that is not a GPU's"
			}
		}
	}
	for _, id := range dr.DeviceIDs {
		if !gpuID(id) {
			return "a device ID that is not a GPU index or UUID"
		}
	}
	if len(dr.Options) > 0 {
		return "device driver options"
	}
	return ""
}

// gpuID reports whether id is a GPU index, UUID or MIG device name: no
// "=" (a CDI device name) and no "," (a list).
func gpuID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.:/", c) >= 0) {
			return false
		}
	}
	return true
}

// namespaces checks the namespace modes.
func (c *checker) namespaces(pre string, hc *container.HostConfig) *violation {
	if c.hostNS {
		return nil
	}
	for _, ns := range []struct{ field, flag, mode string }{
		{"NetworkMode", "--network host", string(hc.NetworkMode)},
		{"PidMode", "--pid host", string(hc.PidMode)},
		{"IpcMode", "--ipc host", string(hc.IpcMode)},
		{"UTSMode", "--uts host", string(hc.UTSMode)},
		{"CgroupnsMode", "--cgroupns host", string(hc.CgroupnsMode)},
		{"UsernsMode", "--userns host", string(hc.UsernsMode)},
	} {
		if strings.EqualFold(ns.mode, "host") {
			return c.deny(RuleHostNamespace, pre+ns.field, ns.flag, "")
		}
	}
	if v := c.networkRef(pre+"NetworkMode", "--network", string(hc.NetworkMode)); v != nil {
		return v
	}
	for _, ns := range []struct{ kind, field, flag, mode string }{
		{"pid", "PidMode", "--pid container:", string(hc.PidMode)},
		{"ipc", "IpcMode", "--ipc container:", string(hc.IpcMode)},
	} {
		if ref, ok := strings.CutPrefix(ns.mode, "container:"); ok {
			if v := c.joinContainer(pre+ns.field, ns.flag, ns.kind, ref, 0); v != nil {
				return v
			}
		}
	}
	return nil
}

// confinement checks SecurityOpt, MaskedPaths and ReadonlyPaths.
func (c *checker) confinement(pre string, hc *container.HostConfig) *violation {
	if c.unconfined {
		return nil
	}
	for i, opt := range hc.SecurityOpt {
		if what := securityOptProblem(opt); what != "" {
			return c.deny(RuleUnconfined, fmt.Sprintf("%sSecurityOpt[%d]", pre, i), "--security-opt", what)
		}
	}
	if hc.MaskedPaths != nil {
		return c.deny(RuleUnconfined, pre+"MaskedPaths", "--security-opt systempaths=unconfined", "")
	}
	if hc.ReadonlyPaths != nil {
		return c.deny(RuleUnconfined, pre+"ReadonlyPaths", "--security-opt systempaths=unconfined", "")
	}
	return nil
}

// kernelSettings checks Sysctls and Annotations.
func (c *checker) kernelSettings(pre string, hc *container.HostConfig) *violation {
	if len(hc.Sysctls) > 0 && !c.sysctls {
		return c.deny(RuleSysctls, pre+"Sysctls", "--sysctl", "")
	}
	if len(hc.Annotations) > 0 && !c.annotations {
		return c.deny(RuleAnnotations, pre+"Annotations", "--annotation", "")
	}
	return nil
}

// volumes checks VolumeDriver, Binds, Mounts and VolumesFrom.
func (c *checker) volumes(pre string, hc *container.HostConfig) *violation {
	if v := c.volumeDriver(pre+"VolumeDriver", "--volume-driver", hc.VolumeDriver); v != nil {
		return v
	}
	// As dockerd's Linux mount parser: "dst" alone is an anonymous
	// volume; in "src:dst[:mode]" an absolute source is a bind, anything
	// else a volume name. Binds first: they need no lookup.
	for i, b := range hc.Binds {
		src, _, found := strings.Cut(b, ":")
		if found && path.IsAbs(src) && !c.bindAllowed(src) {
			return c.deny(RuleBind, fmt.Sprintf("%sBinds[%d]", pre, i), "-v /host/path:/path", c.bindWhat())
		}
	}
	for i, b := range hc.Binds {
		src, _, found := strings.Cut(b, ":")
		if found && !path.IsAbs(src) {
			if v := c.namedVolume(fmt.Sprintf("%sBinds[%d]", pre, i), "-v name:/path", src); v != nil {
				return v
			}
		}
	}
	for i, m := range hc.Mounts {
		if v := c.mount(fmt.Sprintf("%sMounts[%d]", pre, i), m); v != nil {
			return v
		}
	}
	if len(hc.VolumesFrom) > 0 && !c.volumesFrom {
		return c.deny(RuleVolumesFrom, pre+"VolumesFrom", "--volumes-from", "it copies another container's mounts, binds included")
	}
	return nil
}

func (c *checker) bindWhat() string {
	if len(c.binds) == 0 {
		return "a bind mount of a host path"
	}
	return "a bind mount of a host path outside the policy's bind allowlist"
}

// capList checks capabilities to add against the allowlist, normalised as
// dockerd does (upper case, "CAP_" prefix optional).
func (c *checker) capList(field, flag string, caps []string) *violation {
	for i, cp := range caps {
		n := normCap(cp)
		if slices.Contains(c.capAdd, "ALL") || slices.Contains(c.capAdd, n) || c.learnCap(n) {
			continue
		}
		what := "capability not in the policy's allowlist"
		if plainToken(n) {
			what = n
		}
		return c.deny(RuleCapAdd, fmt.Sprintf("%s[%d]", field, i), flag, what)
	}
	return nil
}

func normCap(s string) string {
	s = strings.ToUpper(s)
	if s != "ALL" && !strings.HasPrefix(s, "CAP_") {
		s = "CAP_" + s
	}
	return s
}

// plainToken reports whether s is short and made of A-Z, 0-9 and _, so safe
// to repeat to the user.
func plainToken(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// securityOptProblem parses one security option as dockerd does
// (daemon_unix.go parseSecurityOpt) and says what is wrong with it, or ""
// for the options that do not loosen confinement.
func securityOptProblem(opt string) string {
	switch opt {
	case "no-new-privileges":
		return ""
	case "writable-cgroups":
		return "writable-cgroups"
	case "disable":
		return "label=disable"
	}
	var k, v string
	switch {
	case strings.Contains(opt, "="):
		k, v, _ = strings.Cut(opt, "=")
	case strings.Contains(opt, ":"):
		k, v, _ = strings.Cut(opt, ":")
	default:
		return "an unknown security option"
	}
	switch k {
	case "no-new-privileges":
		return ""
	case "writable-cgroups":
		if b, err := strconv.ParseBool(v); err == nil && !b {
			return ""
		}
		return "writable-cgroups"
	case "seccomp":
		switch v {
		case "", "builtin":
			return ""
		case "unconfined":
			return "seccomp=unconfined"
		}
		return "a custom seccomp profile"
	case "apparmor":
		switch v {
		case "", "docker-default":
			return ""
		case "unconfined":
			return "apparmor=unconfined"
		}
		return "an AppArmor profile other than docker-default"
	case "label":
		if v == "disable" {
			return "label=disable"
		}
		return "an SELinux label option"
	case "systempaths":
		return "systempaths=unconfined"
	}
	return "an unknown security option"
}

// mount checks one HostConfig.Mounts or ContainerSpec.Mounts entry.
func (c *checker) mount(field string, m mount.Mount) *violation {
	switch strings.ToLower(string(m.Type)) {
	case string(mount.TypeBind), string(mount.TypeNamedPipe):
		if !c.bindAllowed(m.Source) {
			return c.deny(RuleBind, field, "--mount type=bind", c.bindWhat())
		}
	case string(mount.TypeVolume):
		if m.Source != "" {
			if v := c.namedVolume(field+".Source", "--mount source", m.Source); v != nil {
				return v
			}
		}
		if vo := m.VolumeOptions; vo != nil && vo.DriverConfig != nil {
			dc := vo.DriverConfig
			if v := c.volumeDriver(field+".VolumeOptions.DriverConfig.Name", "--mount volume-driver", dc.Name); v != nil {
				return v
			}
			if isLocal(dc.Name) {
				return c.localOpts(field+".VolumeOptions.DriverConfig.Options", "--mount volume-opt", dc.Options)
			}
		}
	case string(mount.TypeTmpfs), string(mount.TypeImage), string(mount.TypeCluster):
	default:
		return c.deny(RuleMountType, field+".Type", "--mount type", "an unknown mount type")
	}
	return nil
}

// isLocal reports whether a volume driver is the built-in local driver:
// dockerd finds it by this exact name (daemon/volume/drivers/extpoint.go
// lookup), and uses it when none is named. Any other spelling, "local:latest"
// included, goes to the plugin store.
func isLocal(driver string) bool { return driver == "" || driver == "local" }

// volumeDriver allows the local driver and the policy's allowlist. A plugin
// may hand a container anything as a volume, a Docker socket without a
// policy included, and dockerd finds a plugin by name, alias, full ID or
// any unique ID prefix; so this is an allowlist, not a list of names to
// refuse. A privileged container is the host's root already, so a policy
// that allows those allows every driver.
func (c *checker) volumeDriver(field, flag, driver string) *violation {
	if isLocal(driver) || c.privileged || c.allowsVolumeDriver(driver) {
		return nil
	}
	what := "a volume driver other than local"
	if len(c.volumeDrivers) > 0 {
		what = "a volume driver other than local and those of the policy's allowlist"
	}
	return c.deny(RuleVolumeDriver, field, flag, what)
}

// logDriversBuiltIn are the log drivers every inspecting policy allows:
// they write the container's output to files in its own directory, or
// nowhere.
var logDriversBuiltIn = []string{"json-file", "local", "none"}

// defaultLogOpts are the log options allowed with the daemon's default
// driver, whichever the administrator chose: those of json-file and local
// (daemon/logger/jsonfilelog, daemon/logger/local), the options of every
// driver (daemon/logger/factory.go ValidateLogOpts) and of the local cache
// beside a remote driver (daemon/logger/loggerutils/cache), less "tag",
// which names the source of the lines in a host log. None names a place.
var defaultLogOpts = []string{"max-size", "max-file", "compress", "mode", "max-buffer-size",
	"labels", "labels-regex", "env", "env-regex",
	"cache-disabled", "cache-max-size", "cache-max-file", "cache-compress"}

// logDriver checks a log driver and its options. dockerd itself runs the
// driver, as root in the host's namespaces: syslog, fluentd and gelf
// connect to the socket or address their options name, the daemon's own
// included; splunk reads a CA file of the host; awslogs and gcplogs send
// with the host's cloud credentials to any endpoint; journald writes to the
// host's journal under any name. So drivers are allowed by a list. dockerd
// looks a driver up by exact name among its own, then as a plugin by name,
// full ID or ID prefix (daemon/logger/factory.go get, plugin.go). An empty
// driver is the daemon's default (daemon/logs.go mergeAndVerifyLogConfig),
// which takes the request's options too; so those are limited to options
// that name no place.
func (c *checker) logDriver(field, flag, driver string, opts map[string]string) *violation {
	switch {
	case driver == "":
		for _, k := range slices.Sorted(maps.Keys(opts)) {
			if !slices.Contains(defaultLogOpts, k) {
				return c.deny(RuleLogDriver, field, "--log-opt", "a log option, with the daemon's default driver, beyond those of json-file and local")
			}
		}
		return nil
	case slices.Contains(logDriversBuiltIn, driver), c.allowsLogDriver(driver):
		return nil
	}
	what := "a log driver other than json-file, local and none"
	if len(c.logDrivers) > 0 {
		what = "a log driver other than json-file, local, none and those of the policy's allowlist"
	}
	return c.deny(RuleLogDriver, field, flag, what)
}

// swarmLogDriver checks a swarm.Driver naming a log driver.
func (c *checker) swarmLogDriver(field, flag string, d *swarm.Driver) *violation {
	if d == nil {
		return nil
	}
	return c.logDriver(field, flag, d.Name, d.Options)
}

// localOpts checks the options of a volume of the local driver, which
// mounts with mount(2): o=bind or type=none binds the device, a host path;
// other types mount a device, host disk or network share.
func (c *checker) localOpts(field, flag string, opts map[string]string) *violation {
	if len(opts) == 0 {
		return nil
	}
	typ, o, dev := opts["type"], opts["o"], opts["device"]
	if strings.EqualFold(typ, "none") || hasBindOption(o) {
		if !c.bindAllowed(dev) {
			return c.deny(RuleBind, field, flag, "a local volume with o=bind or type=none is a bind mount of a host path")
		}
		return nil
	}
	if typ == "" && dev == "" && o == "" {
		return nil // size only
	}
	if !c.allowsVolumeType(typ) {
		what := "a local volume mount type not in the policy's allowlist"
		if len(c.volumeTypes) > 0 {
			what += " (" + strings.Join(c.volumeTypes, ", ") + ")"
		}
		return c.deny(RuleVolumeType, field, flag, what)
	}
	return nil
}

func hasBindOption(o string) bool {
	for f := range strings.SplitSeq(o, ",") {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "bind", "rbind":
			return true
		}
	}
	return false
}

// bindAllowed reports whether the host path src lies at or below an
// allowlisted path. dockerd cleans the source the same way.
func (c *checker) bindAllowed(src string) bool {
	if !path.IsAbs(src) {
		return false
	}
	src = path.Clean(src)
	if c.learn != nil {
		return c.learnBind(src)
	}
	for _, a := range c.binds {
		if a == "/" || src == a || strings.HasPrefix(src, a+"/") {
			return true
		}
	}
	return false
}

func (c *checker) containerUpdate(r Request, _, _ string) *violation {
	var uc container.UpdateConfig
	if err := decodeJSON(r.Body, &uc); err != nil {
		return badBody("container update", err)
	}
	// Today's dockerd applies neither devices nor a cgroup parent on
	// update, but the body carries them; they are checked as on create.
	return c.resources("", &uc.Resources)
}

func (c *checker) execCreate(r Request, path, _ string) *violation {
	var ec container.ExecCreateRequest
	if err := decodeJSON(r.Body, &ec); err != nil {
		return badBody("exec create", err)
	}
	if ec.Privileged && !c.privileged {
		return c.deny(RulePrivileged, "Privileged", "docker exec --privileged", "")
	}
	return c.inContainer(r, path, "/exec", "an exec in")
}

// inContainer checks the container named by path, /containers/{name}
// followed by suffix, as existingContainer does, and forwards the request
// with its full ID.
func (c *checker) inContainer(r Request, path, suffix, what string) *violation {
	name := decode(strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), suffix))
	id, v := c.existingContainer(what, name)
	if v != nil || id == "" {
		return v
	}
	c.target = withContainerID(r.Target, suffix, id)
	return nil
}

// withContainerID rewrites a request-target /…/containers/{name}SUFFIX?query
// (with its version prefix, if any) to name the container by id.
func withContainerID(target, suffix, id string) string {
	rawPath, rawQuery, hasQuery := strings.Cut(target, "?")
	const seg = "/containers/"
	i := strings.Index(rawPath, seg)
	if i < 0 || !strings.HasSuffix(rawPath, suffix) {
		return target // not reached: the endpoint's pattern matched
	}
	t := rawPath[:i] + seg + id + suffix
	if hasQuery {
		t += "?" + rawQuery
	}
	return t
}

// attach checks docker attach (and docker start -a, docker run's
// attach): its input goes to the container's main process.
func (c *checker) attach(r Request, path, _ string) *violation {
	return c.inContainer(r, path, "/attach", "attaching to")
}

func (c *checker) attachWS(r Request, path, _ string) *violation {
	return c.inContainer(r, path, "/attach/ws", "attaching to")
}

// archive checks docker cp, in and out: through a container's binds it
// reads and writes the host's files.
func (c *checker) archive(r Request, path, _ string) *violation {
	return c.inContainer(r, path, "/archive", "copying files in or out of")
}

// execStart checks POST /exec/{id}/start: an exec made through this
// policy was checked at its create, but one made by anyone else may be
// started by its ID (docker inspect lists them).
func (c *checker) execStart(_ Request, path, _ string) *violation {
	id := decode(strings.TrimSuffix(strings.TrimPrefix(path, "/exec/"), "/start"))
	if c.daemon == nil {
		return c.lookupFailed("exec instance", errNoDaemon)
	}
	ex, err := c.daemon.Exec(id)
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return nil
	case err != nil:
		return c.lookupFailed("exec instance", err)
	}
	if pc := ex.ProcessConfig; pc != nil && pc.Privileged != nil && *pc.Privileged && !c.privileged {
		return c.deny(RulePrivileged, "the exec instance's Privileged", "docker exec --privileged", "")
	}
	// An exec's container is fixed: its ID, as dockerd reports it.
	_, v := c.existingContainer("an exec in", ex.ContainerID)
	return v
}

// legacyServiceSpec holds ServiceSpec.Networks, which older daemons honour
// and today's types no longer carry.
type legacyServiceSpec struct {
	Networks []swarm.NetworkAttachmentConfig
}

func (c *checker) service(r Request, _, _ string) *violation {
	var spec swarm.ServiceSpec
	if err := decodeJSON(r.Body, &spec); err != nil {
		return badBody("service", err)
	}
	var legacy legacyServiceSpec
	if err := decodeJSON(r.Body, &legacy); err != nil {
		return badBody("service", err)
	}
	ts := spec.TaskTemplate
	if (ts.PluginSpec != nil || strings.EqualFold(string(ts.Runtime), string(swarm.RuntimePlugin))) && !c.privileged {
		return c.deny(RulePlugin, "TaskTemplate.PluginSpec", "", "a plugin service installs a plugin, with its privileges, on every node")
	}
	if v := c.networkAttachments("TaskTemplate.Networks", ts.Networks); v != nil {
		return v
	}
	if v := c.networkAttachments("Networks", legacy.Networks); v != nil {
		return v
	}
	if v := c.swarmLogDriver("TaskTemplate.LogDriver", "docker service create --log-driver", ts.LogDriver); v != nil {
		return v
	}
	cs := ts.ContainerSpec
	if cs == nil {
		return nil
	}
	const pre = "TaskTemplate.ContainerSpec."
	if pv := cs.Privileges; pv != nil && !c.unconfined {
		if s := pv.Seccomp; s != nil && (s.Mode != "" && s.Mode != swarm.SeccompModeDefault || len(s.Profile) > 0) {
			return c.deny(RuleUnconfined, pre+"Privileges.Seccomp", "--security-opt", "seccomp unconfined or a custom profile")
		}
		if a := pv.AppArmor; a != nil && a.Mode != "" && a.Mode != swarm.AppArmorModeDefault {
			return c.deny(RuleUnconfined, pre+"Privileges.AppArmor", "--security-opt", "AppArmor disabled")
		}
		if se := pv.SELinuxContext; se != nil && (se.Disable || se.Type != "" || se.User != "" || se.Role != "" || se.Level != "") {
			return c.deny(RuleUnconfined, pre+"Privileges.SELinuxContext", "--security-opt", "an SELinux label option")
		}
	}
	if v := c.capList(pre+"CapabilityAdd", "--cap-add", cs.CapabilityAdd); v != nil {
		return v
	}
	if len(cs.Sysctls) > 0 && !c.sysctls {
		return c.deny(RuleSysctls, pre+"Sysctls", "--sysctl", "")
	}
	for i, m := range cs.Mounts {
		if v := c.mount(fmt.Sprintf("%sMounts[%d]", pre, i), m); v != nil {
			return v
		}
	}
	return nil
}

// swarmInit checks POST /swarm/init, whose body is swarm.InitRequest
// (daemon/server/router/swarm/cluster_routes.go initCluster).
func (c *checker) swarmInit(r Request, _, _ string) *violation {
	var req swarm.InitRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return badBody("swarm init", err)
	}
	return c.swarmSpec("Spec.", &req.Spec)
}

// swarmUpdate checks POST /swarm/update, whose body is swarm.Spec
// (cluster_routes.go updateCluster).
func (c *checker) swarmUpdate(r Request, _, _ string) *violation {
	var spec swarm.Spec
	if err := decodeJSON(r.Body, &spec); err != nil {
		return badBody("swarm update", err)
	}
	return c.swarmSpec("", &spec)
}

// swarmSpec checks a swarm's settings; pre prefixes field names.
// ForceNewCluster is allowed: it makes this node the only manager of the
// swarm it is in, which gives the client nothing that /swarm/leave and
// /swarm/init do not.
func (c *checker) swarmSpec(pre string, spec *swarm.Spec) *violation {
	if v := c.swarmCA(pre+"CAConfig", &spec.CAConfig); v != nil {
		return v
	}
	// The task defaults' log driver is every task's that names none
	// (daemon/cluster/executor/container/container.go hostConfig).
	return c.swarmLogDriver(pre+"TaskDefaults.LogDriver", "", spec.TaskDefaults.LogDriver)
}

// swarmCA checks a swarm's CA settings. A signing CA the client chose, or
// an external CA of its own, lets it sign node certificates: a manager's
// among them, and a swarm's managers run any service on this host. The
// expiry of node certificates and a rotation to a CA the swarm makes
// itself are allowed.
func (c *checker) swarmCA(field string, ca *swarm.CAConfig) *violation {
	if c.swarmCAs {
		return nil
	}
	if ca.SigningCACert != "" || ca.SigningCAKey != "" {
		return c.deny(RuleSwarm, field+".SigningCACert", "docker swarm ca --ca-cert --ca-key", "a signing CA chosen by the client")
	}
	if len(ca.ExternalCAs) > 0 {
		return c.deny(RuleSwarm, field+".ExternalCAs", "--external-ca", "an external CA chosen by the client")
	}
	return nil
}

func (c *checker) volumeCreate(r Request, _, _ string) *violation {
	var req volume.CreateRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return badBody("volume create", err)
	}
	if v := c.volumeDriver("Driver", "docker volume create --driver", req.Driver); v != nil {
		return v
	}
	if isLocal(req.Driver) {
		return c.localOpts("DriverOpts", "docker volume create --opt", req.DriverOpts)
	}
	return nil
}

// buildKitImage is the image of the BuildKit container that buildx starts
// when the daemon's own BuildKit cannot be reached.
const buildKitImage = "moby/buildkit"

// imageCreate checks a pull. One pull is refused, for the user's sake:
// when the policy refuses BuildKit's API, docker buildx build concludes
// that the daemon has no BuildKit and starts one in a container of its
// own, which needs privileges the policy refuses too. Its first step is
// to pull moby/buildkit; refusing that says what happened and what to do,
// where the pull or the container's refusal would not.
func (c *checker) imageCreate(_ Request, _, query string) *violation {
	if c.buildkit {
		return nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return badQuery()
	}
	for _, from := range q["fromImage"] {
		if ref, err := reference.ParseNormalizedNamed(from); err == nil && reference.FamiliarName(ref) == buildKitImage {
			return &violation{status: StatusForbidden, rule: RuleBuildKit, reason: "docker buildx build needs BuildKit's API (POST /grpc and /session), " +
				"which policy " + c.policy + " does not allow; buildx then starts a BuildKit container of its own (moby/buildkit), " +
				"which needs privileges the policy refuses. Build with the classic builder (DOCKER_BUILDKIT=0 docker build), " +
				"or through a volume whose policy allows BuildKit (policy=full)"}
		}
	}
	return nil
}

// containerStart checks what a start may carry. Daemons before API 1.24
// applied a HostConfig body; checkpoint-dir names a host directory.
func (c *checker) containerStart(r Request, _, query string) *violation {
	var hc container.HostConfig
	if err := decodeJSON(r.Body, &hc); err != nil {
		return badBody("container start", err)
	}
	if v := c.hostConfig("HostConfig.", &hc); v != nil {
		return v
	}
	return c.queryDir(query, "checkpoint-dir", "docker start --checkpoint-dir")
}

func (c *checker) checkpointCreate(r Request, _, _ string) *violation {
	var req checkpoint.CreateRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		return badBody("checkpoint create", err)
	}
	if req.CheckpointDir != "" && !c.bindAllowed(req.CheckpointDir) {
		return c.deny(RuleBind, "CheckpointDir", "--checkpoint-dir", "a host directory outside the policy's bind allowlist")
	}
	return nil
}

func (c *checker) checkpointDir(_ Request, _, query string) *violation {
	return c.queryDir(query, "dir", "--checkpoint-dir")
}

func (c *checker) queryDir(query, key, flag string) *violation {
	q, err := url.ParseQuery(query)
	if err != nil {
		return badQuery()
	}
	for _, d := range q[key] {
		if d != "" && !c.bindAllowed(d) {
			return c.deny(RuleBind, "query parameter "+key, flag, "a host directory outside the policy's bind allowlist")
		}
	}
	return nil
}

// build checks the classic builder's query parameters that reach the
// build containers' HostConfig beyond a share of the host
// (daemon/server/router/build/build_routes.go newImageBuildOptions,
// daemon/builder/dockerfile/internals.go hostConfigFromOptions):
// networkmode, cgroupparent and securityopt. BuildKit reads networkmode=host
// too, as the network.host entitlement. The build context is streamed,
// never buffered.
func (c *checker) build(r Request, _, query string) *violation {
	q, err := url.ParseQuery(query)
	if err != nil {
		return badQuery()
	}
	for _, nm := range q["networkmode"] {
		if v := c.networkRef("query parameter networkmode", "docker build --network", nm); v != nil {
			return v
		}
	}
	if len(c.rewrites) > 0 {
		// container:X, forwarded as the container checked.
		for i, nm := range q["networkmode"] {
			for _, rw := range c.rewrites {
				if nm == rw.from {
					q["networkmode"][i] = rw.to
				}
			}
		}
		rawPath, _, _ := strings.Cut(r.Target, "?")
		c.target, c.rewrites = rawPath+"?"+q.Encode(), nil
	}
	if !c.cgroupParent {
		for _, cp := range q["cgroupparent"] {
			if cp != "" {
				return c.deny(RuleCgroupParent, "query parameter cgroupparent", "docker build --cgroup-parent", "")
			}
		}
	}
	if !c.unconfined {
		for _, opt := range q["securityopt"] {
			if what := securityOptProblem(opt); what != "" {
				return c.deny(RuleUnconfined, "query parameter securityopt", "docker build --security-opt", what)
			}
		}
	}
	return nil
}

func badQuery() *violation {
	return &violation{status: StatusBadRequest, rule: RuleBadQuery, reason: "the query string is malformed"}
}

// Form media types: net/http reads parameters from a body of these types
// (Request.ParseForm, ParseMultipartForm).
const (
	typeURLEncoded = "application/x-www-form-urlencoded"
	typeMultipart  = "multipart/form-data"
)

// formBody refuses a request whose body net/http could read as a form.
// Every dockerd handler calls httputils.ParseForm
// (daemon/server/httputils/httputils.go), whose r.ParseForm takes the
// parameters of a form-encoded POST, PUT or PATCH body before the query's;
// and r.FormValue, which the build router calls, also reads a multipart
// body, of any method, for parameters the query lacks. So a parameter the
// policy checks in the query could come from the body instead. The Docker
// API never sends either type, so they are refused on every endpoint.
//
// Every Content-Type header counts, whatever the case of its name, though
// net/http reads the first only. A value is parsed as net/http parses it,
// with mime.ParseMediaType, and, as net/http does, a media type is taken
// even when its parameters are invalid. A value that does not parse at all
// but names a form type is refused too.
func formBody(h http.Header) *violation {
	for k, vs := range h {
		if !strings.EqualFold(k, "Content-Type") {
			continue
		}
		for _, v := range vs {
			if formType(v) {
				return &violation{status: StatusBadRequest, rule: RuleFormBody,
					reason: "a form body (Content-Type " + typeURLEncoded + " or " + typeMultipart + ") is not allowed: dockerd would read request parameters from it"}
			}
		}
	}
	return nil
}

func formType(v string) bool {
	switch mt, _, err := mime.ParseMediaType(v); {
	case mt == typeURLEncoded || mt == typeMultipart:
		return true
	case mt == "" && err != nil:
		l := strings.ToLower(v)
		return strings.Contains(l, typeURLEncoded) || strings.Contains(l, typeMultipart)
	}
	return false
}
