package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/volume"
)

// Daemon is what a policy asks dockerd about the objects a request names.
// dockerd resolves a reference by full ID, by name, or by a unique ID
// prefix, and acts on the object it finds; a check that compared the
// reference as a string would be a check with a hole. So the policy asks
// dockerd, and decides on the object dockerd will act on.
//
// The proxy supplies a Daemon bound to the request. The policy stays a
// function of the policy, the request and these answers.
type Daemon interface {
	// HostNetworks lists the networks of the host driver: the host's own
	// and, on a swarm manager, the swarm's.
	HostNetworks() ([]Network, error)
	// Container inspects the container ref names, as dockerd resolves it.
	Container(ref string) (*container.InspectResponse, error)
	// Volume inspects the volume name names.
	Volume(name string) (*volume.Volume, error)
	// Exec inspects an exec instance by its ID.
	Exec(id string) (*container.ExecInspectResponse, error)
	// Resolve asks which object of kind ref names, as dockerd resolves
	// it, and what a scope needs of it; ErrNoSuchObject when none.
	Resolve(kind Kind, ref string) (Object, error)
	// List lists the objects of kind that carry ScopeLabel=scope, with
	// their names.
	List(kind Kind, scope string) ([]Object, error)
}

// Network is a network as dockerd lists it.
type Network struct {
	ID, Name string
}

// ErrNoSuchObject is the error a Daemon wraps when dockerd has no object
// by the reference: the request then fails in dockerd as it would anyway.
var ErrNoSuchObject = errors.New("no such object")

// ErrAmbiguous is the error a Daemon wraps when a reference is an ID
// prefix of more than one object. A scoped volume answers it as it
// answers a missing object: which objects share a prefix is no business
// of another scope.
var ErrAmbiguous = errors.New("ambiguous reference")

// RuleLookup refuses a request whose references could not be resolved:
// the daemon did not answer, or a reference is ambiguous.
const RuleLookup = "lookup-failed"

// StatusLookup is the status of a RuleLookup refusal.
const StatusLookup = 503

func (c *checker) lookupFailed(what string, err error) *violation {
	return &violation{status: StatusLookup, rule: RuleLookup,
		reason: "could not ask the daemon which " + what + " the request names (" + errorText(err) + "); try again"}
}

// errorText is an error's text cut short, for a reason: a daemon's error
// may quote the reference, never the body.
func errorText(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// maxJoinDepth bounds how far a chain of container:X namespaces is
// followed; dockerd itself refuses chains it cannot join.
const maxJoinDepth = 8

// networkRef checks a network reference that is not one of dockerd's
// predefined names: the host network may be named by its ID or an ID
// prefix too, and a swarm resolves a service's network by swarm ID, name
// and ID prefix, then locally (daemon/cluster/helpers.go getNetwork,
// daemon/network.go FindNetwork). So a reference is refused when it could
// name a host-driver network in any of those orders: its full ID, its
// name, or a prefix of its ID.
func (c *checker) networkRef(field, flag, ref string) *violation {
	if c.hostNS || ref == "" {
		return nil
	}
	if strings.EqualFold(ref, "host") {
		return c.deny(RuleHostNamespace, field, flag, "the host network")
	}
	switch ref {
	case "bridge", "none", "default":
		return nil
	}
	if strings.HasPrefix(ref, "container:") {
		return c.joinContainer(field, flag, "network", strings.TrimPrefix(ref, "container:"), 0)
	}
	if c.daemon == nil {
		return c.lookupFailed("network", errNoDaemon)
	}
	hosts, err := c.daemon.HostNetworks()
	if err != nil {
		return c.lookupFailed("network", err)
	}
	for _, n := range hosts {
		if ref == n.ID || ref == n.Name || strings.HasPrefix(n.ID, ref) {
			return c.deny(RuleHostNamespace, field, flag, "a reference that names the host network (by its name, ID or an ID prefix)")
		}
	}
	return nil
}

var errNoDaemon = errors.New("the proxy has no daemon to ask")

// container looks a container up; nil without a violation when there is
// no such container (dockerd will say so itself).
func (c *checker) container(ref string) (*container.InspectResponse, *violation) {
	if c.daemon == nil {
		return nil, c.lookupFailed("container", errNoDaemon)
	}
	info, err := c.daemon.Container(ref)
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return nil, nil
	case err != nil:
		return nil, c.lookupFailed("container", err)
	case info == nil || info.HostConfig == nil || info.ID == "":
		return nil, c.lookupFailed("container", errors.New("the daemon's answer has no ID or HostConfig"))
	}
	return info, nil
}

// joinContainer checks a container:X namespace mode (network, pid or
// ipc): joining X's namespace is joining the host's when X shares the
// host's, directly or through a chain of container:Y.
func (c *checker) joinContainer(field, flag, kind, ref string, depth int) *violation {
	if depth >= maxJoinDepth {
		return c.deny(RuleHostNamespace, field, flag, "a chain of container namespaces too long to follow")
	}
	info, v := c.container(ref)
	if v != nil || info == nil {
		return v
	}
	c.resolved(kind+"Mode", "container:"+ref, "container:"+info.ID)
	var mode string
	switch kind {
	case "network":
		mode = string(info.HostConfig.NetworkMode)
	case "pid":
		mode = string(info.HostConfig.PidMode)
	case "ipc":
		mode = string(info.HostConfig.IpcMode)
	}
	if strings.EqualFold(mode, "host") {
		return c.deny(RuleHostNamespace, field, flag, "the "+kind+" namespace of a container that shares the host's")
	}
	if next, ok := strings.CutPrefix(mode, "container:"); ok {
		return c.joinContainer(field, flag, kind, next, depth+1)
	}
	return nil
}

// namedVolume checks a volume a container mounts by name: a volume that
// exists is mounted whatever driver the request names, so its own driver
// must be allowed (a sockrelay volume someone else made is a Docker
// socket); one that does not exist is made with the driver the request
// names, which the caller checks.
func (c *checker) namedVolume(field, flag, name string) *violation {
	if c.daemon == nil {
		return c.lookupFailed("volume", errNoDaemon)
	}
	vol, err := c.daemon.Volume(name)
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return nil
	case err != nil:
		return c.lookupFailed("volume", err)
	}
	switch {
	case isLocal(vol.Driver):
		// A local volume someone made with o=bind (or type=none, or a
		// device of the host's) is that mount, whoever mounts it.
		if v := c.localOpts(field, flag, vol.Options); v != nil {
			v.reason = "an existing volume: " + v.reason
			return v
		}
		return nil
	case c.privileged || c.allowsVolumeDriver(vol.Driver):
		return nil
	}
	return c.deny(RuleVolumeDriver, field, flag, "an existing volume of a driver other than local"+c.driverListNote())
}

func (c *checker) driverListNote() string {
	if len(c.volumeDrivers) > 0 {
		return " and those of the policy's allowlist"
	}
	return ""
}

// existingContainer checks a container that a request acts inside (exec,
// attach, copying files in or out): the policy must be one that would
// have let the client create it. Otherwise an exec into a privileged
// container, a copy into a host bind, or an attach to a shell that holds
// an unfiltered Docker socket is the escalation the policy refuses at
// create. Its HostConfig is checked as a create's, and its mounts as
// dockerd lists them (binds of host paths, volumes of other drivers).
// It returns the container's full ID, to forward the request with: the
// container checked is the one dockerd acts on, even if names change
// meanwhile.
func (c *checker) existingContainer(what, ref string) (string, *violation) {
	info, v := c.container(ref)
	if v != nil || info == nil {
		return "", v
	}
	hc := *info.HostConfig
	// dockerd fills in the default masked and read-only paths; an empty
	// list is what --security-opt systempaths=unconfined leaves.
	if len(hc.MaskedPaths) > 0 {
		hc.MaskedPaths = nil
	}
	if len(hc.ReadonlyPaths) > 0 {
		hc.ReadonlyPaths = nil
	}
	// Mounts are checked as dockerd lists them below; the log driver and
	// the driver of volumes yet to be made do not matter once it exists.
	hc.Binds, hc.Mounts, hc.VolumeDriver = nil, nil, ""
	hc.LogConfig = container.LogConfig{}
	// The cgroup namespace mode the daemon chose: "host" is its default on
	// cgroup v1. A create that asks for it is refused; one that did not
	// ask gets it anyway, so here it says nothing of the client.
	hc.CgroupnsMode = ""
	v = c.hostConfig("HostConfig.", &hc)
	if v == nil {
		v = c.mountPoints(info.Mounts)
	}
	if v != nil {
		v.reason = what + " a container that policy " + c.policy + " would not create: " + v.reason
		return "", v
	}
	return info.ID, nil
}

// mountPoints checks the mounts of an existing container.
func (c *checker) mountPoints(mps []container.MountPoint) *violation {
	for i, m := range mps {
		field := fmt.Sprintf("Mounts[%d]", i)
		switch m.Type {
		case mount.TypeBind, mount.TypeNamedPipe:
			if !c.bindAllowed(m.Source) {
				return c.deny(RuleBind, field, "-v /host/path:/path", c.bindWhat())
			}
		case mount.TypeVolume:
			if !isLocal(m.Driver) && !c.privileged && !c.allowsVolumeDriver(m.Driver) {
				return c.deny(RuleVolumeDriver, field, "--volume-driver", "a volume of a driver other than local"+c.driverListNote())
			}
			if isLocal(m.Driver) && m.Name != "" {
				if v := c.namedVolume(field, "-v name:/path", m.Name); v != nil {
					return v
				}
			}
		}
	}
	return nil
}
