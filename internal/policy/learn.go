package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Learning mode (policy=learn:NAME) serves like full and records, for
// each request, what a policy file would have to allow for it: its
// endpoint, and what of the create constraints it uses (Decision.Uses).
// A Learned gathers those records and writes the tightest policy file
// that allows them all (learnfile.go); `sockrelay policy suggest` reads
// the same records back from the audit log.
//
// What a request uses is found by the checks of no-escalation
// themselves, not by a second reading of the request: the request is
// checked against constraints that allow nothing, with the allowlists
// (capabilities, bind paths, volume types, volume and log drivers)
// recording what they are asked for and allowing it; a refusal by a
// switch (privileged, devices, host namespaces, …) turns that switch on
// and checks again. So what is recorded is exactly what the policy file
// must allow, by the same code that will decide under it.

// learnPrefix names a learning policy: learn:NAME.
const learnPrefix = "learn:"

// Uses entries. A switch of the create section is its key
// ("privileged"); an allowlist entry is the key, "=", and the value
// ("binds=/srv/cache"); a refusal that no policy file can lift (an
// unknown mount type, a body that is not JSON, a plugin named by an ID
// prefix) is "refused=" and the rule.
const (
	useRefused = "refused"
	useCapAdd  = "cap_add"
	useBinds   = "binds"
	useVolType = "volume_types"
	useVolDrv  = "volume_drivers"
	useLogDrv  = "log_drivers"
)

// switchRules maps the rule a switch lifts to its key in a policy
// file's create section.
var switchRules = map[string]string{
	RulePrivileged:    "privileged",
	RulePlugin:        "privileged", // a plugin service
	RuleDevices:       "devices",
	RuleHostNamespace: "host_namespaces",
	RuleUnconfined:    "unconfined",
	RuleSysctls:       "sysctls",
	RuleAnnotations:   "annotations",
	RuleVolumesFrom:   "volumes_from",
	RuleCgroupParent:  "cgroup_parent",
	RuleSwarm:         "swarm_ca",
}

// switchKeys are the switches of a create section, in the file's order.
var switchKeys = []string{"privileged", "devices", "host_namespaces", "unconfined", "sysctls",
	"annotations", "volumes_from", "cgroup_parent", "swarm_ca"}

func (c *constraints) setSwitch(key string) bool {
	var b *bool
	switch key {
	case "privileged":
		b = &c.privileged
	case "devices":
		b = &c.devices
	case "host_namespaces":
		b = &c.hostNS
	case "unconfined":
		b = &c.unconfined
	case "sysctls":
		b = &c.sysctls
	case "annotations":
		b = &c.annotations
	case "volumes_from":
		b = &c.volumesFrom
	case "cgroup_parent":
		b = &c.cgroupParent
	case "swarm_ca":
		b = &c.swarmCAs
	default:
		return false
	}
	if *b {
		return false
	}
	*b = true
	return true
}

// Learn returns the learning policy named learn:NAME.
func Learn(name string) (*Policy, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return &Policy{
		name:         learnPrefix + name,
		defaultAllow: true,
		cons:         &constraints{}, // so that BodyNeeded asks for what is checked
		upgrade:      full.upgrade,
		learn:        true,
	}, nil
}

// LearnName is the NAME of a learning policy's reference ("learn:NAME"),
// and whether ref is one.
func LearnName(ref string) (string, bool) {
	return strings.CutPrefix(ref, learnPrefix)
}

// Learning reports whether p is a learning policy.
func (p *Policy) Learning() bool { return p.learn }

// maxLearnRounds bounds the checks of one request: each round turns one
// switch on, and there are fewer switches than this.
const maxLearnRounds = 16

// decideLearn decides a request under a learning policy: as full does,
// with what the request uses recorded.
func (p *Policy) decideLearn(r Request, m methodSet, path, query string) Decision {
	d := Decision{Allow: true, Path: path}
	if ins := inspectionFor(m, path); ins != nil {
		d.Uses = learnUses(ins, p.name, r, path, query)
	}
	for _, h := range hijackEndpoints {
		if h.match(m, path) {
			d.Upgrade = true
			return d
		}
	}
	if asksUpgrade(r.Header) {
		return refuse(StatusForbidden, RuleUpgrade, path,
			fmt.Sprintf("switching protocols on %s is not allowed by policy %s", describe(r.Method, m, path), p.name))
	}
	return d
}

// learnUses checks r against constraints that allow nothing, and says
// what they had to allow (see the top of this file).
func learnUses(ins *inspection, policy string, r Request, path, query string) []string {
	cons := &constraints{}
	l := &learning{}
	for range maxLearnRounds {
		c := checker{constraints: cons, policy: policy, daemon: r.Daemon, learn: l}
		v := ins.check(&c, r, path, query)
		if v == nil {
			break
		}
		key, ok := switchRules[v.rule]
		if !ok || !cons.setSwitch(key) {
			l.add(useRefused + "=" + v.rule)
			break
		}
		l.add(key)
	}
	slices.Sort(l.uses)
	return slices.Compact(l.uses)
}

// learning collects what one request uses.
type learning struct {
	uses []string
}

func (l *learning) add(u string) { l.uses = append(l.uses, u) }

// maxLearnValue bounds a value that an allowlist records.
const maxLearnValue = 200

// learnValue records an allowlist entry, if the learning checker asks
// and a policy file can hold it.
func (c *checker) learnValue(key, v string, ok bool) bool {
	if c.learn == nil || !ok || len(v) > maxLearnValue {
		return false
	}
	c.learn.add(key + "=" + v)
	return true
}

// learnCap allows a capability (normalised) while learning.
func (c *checker) learnCap(n string) bool {
	return c.learnValue(useCapAdd, n, plainToken(n))
}

// learnBind allows a bind of a host path (absolute, clean) while
// learning.
func (c *checker) learnBind(src string) bool {
	return c.learnValue(useBinds, src, !strings.ContainsRune(src, 0))
}

// allowsVolumeDriver reports whether a volume plugin is on the policy's
// list, or records it while learning.
func (c *checker) allowsVolumeDriver(driver string) bool {
	return c.volumeDrivers.allows(driver) || c.learnValue(useVolDrv, driver, learnableDriver(driver, "local"))
}

// allowsLogDriver is allowsVolumeDriver's counterpart for log drivers.
func (c *checker) allowsLogDriver(driver string) bool {
	return c.logDrivers.allows(driver) || c.learnValue(useLogDrv, driver, learnableDriver(driver, logDriversBuiltIn...))
}

// allowsVolumeType reports whether a local volume's mount type is on the
// policy's list, or records it while learning.
func (c *checker) allowsVolumeType(typ string) bool {
	t := strings.ToLower(typ)
	return slices.Contains(c.volumeTypes, t) ||
		c.learnValue(useVolType, t, fsType(t) && t != "none" && t != "bind")
}

// learnableDriver reports whether a policy file's driver list can hold
// driver: not built in, and a plugin name dockerd resolves as such.
func learnableDriver(driver string, builtIn ...string) bool {
	if slices.Contains(builtIn, driver) {
		return false
	}
	_, err := pluginRef(driver)
	return err == nil
}
