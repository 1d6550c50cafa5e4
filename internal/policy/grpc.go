package policy

import (
	"fmt"
	"slices"
	"strings"

	controlapi "github.com/moby/buildkit/api/services/control"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/pb"
	tracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

// BuildKit's API (POST /grpc) is a stream of gRPC calls over HTTP/2. A
// policy that inspects requests (no-escalation, policy files) has the
// proxy follow that stream (Decision.Calls) and decide each call here:
// CallNeedsMessage says whether the call's first request message is
// needed, and DecideCall decides the call.
//
// A call is allowed only when its method is one of buildKitCalls: the
// calls docker buildx build, du and prune make of dockerd's BuildKit.
// Of those, the two that start builds (Control.Solve and the gateway's
// LLBBridge.Solve) are decoded with BuildKit's own types, as dockerd
// decodes them, and refused when the build asks for what the policy
// refuses a container: the host's network (the network.host entitlement,
// force-network-mode=host, an LLB exec with the host network), a
// privileged build container (security.insecure), devices (the device
// entitlement, CDI devices), a cgroup parent. BuildKit runs an exec that
// needs an entitlement only when the Solve request carries it, so the
// entitlements are the gate; the attributes and the LLB are checked too,
// so that the refusal names what asked for it.
//
// What a build can reach besides is not the host's: the build context,
// secrets, SSH agents and local exports go through the client's own
// session (POST /session); images come from registries and go to the
// image store; a gateway frontend (# syntax=) runs as a container without
// network, and what it asks for is checked by the same entitlements.

// Call is one gRPC call on BuildKit's API, as the proxy read it.
type Call struct {
	// Method is the call's :path as sent, "/package.Service/Method".
	Method string
	// Message is the call's first request message, without gRPC's
	// five-byte prefix, when CallNeedsMessage said so; else nil.
	Message []byte
}

// Rules of gRPC calls.
const (
	RuleGRPCMethod  = "grpc-method-not-allowed"
	RuleEntitlement = "entitlement-not-allowed"
)

// buildKitCall is a method of BuildKit's API that a policy which follows
// the gRPC stream allows, and how its message is checked (nil: not).
type buildKitCall struct {
	method string
	check  func(c *checker, msg []byte) *violation
}

// buildKitCalls are the calls docker buildx build, docker buildx du and
// docker buildx prune make through the docker driver (dockerd's own
// BuildKit): those seen on Engine 29 with buildx 0.38 (TestBuildKit-
// NoEscalation logs them), and those buildx's build makes on a build's
// own results in cases the test does not take (a remote Dockerfile, a
// source policy, an evaluated result) or that docker buildx inspect makes
// (Info). TraceService.Export carries buildx's own trace spans into the
// build's history. Left out on purpose: the gateway's containers
// (NewContainer, ExecProcess and the rest, for buildx's interactive
// debugging: an exec with its own network and security mode),
// Control.Session (the session over /grpc, which buildx sends over
// /session), build history updates, and the history's content store.
var buildKitCalls = []buildKitCall{
	{controlapi.Control_Solve_FullMethodName, (*checker).controlSolve},
	{controlapi.Control_Status_FullMethodName, nil},
	{controlapi.Control_ListWorkers_FullMethodName, nil},
	{controlapi.Control_Info_FullMethodName, nil},
	{controlapi.Control_DiskUsage_FullMethodName, nil},
	{controlapi.Control_Prune_FullMethodName, nil},
	{controlapi.Control_ListenBuildHistory_FullMethodName, nil},
	{gatewayapi.LLBBridge_Solve_FullMethodName, (*checker).gatewaySolve},
	{gatewayapi.LLBBridge_Ping_FullMethodName, nil},
	{gatewayapi.LLBBridge_Return_FullMethodName, nil},
	{gatewayapi.LLBBridge_ReadFile_FullMethodName, nil},
	{gatewayapi.LLBBridge_StatFile_FullMethodName, nil},
	{gatewayapi.LLBBridge_Evaluate_FullMethodName, nil},
	{gatewayapi.LLBBridge_ResolveSourceMeta_FullMethodName, nil},
	{"/" + tracev1.TraceService_ServiceDesc.ServiceName + "/Export", nil},
}

func findCall(method string) *buildKitCall {
	i := slices.IndexFunc(buildKitCalls, func(c buildKitCall) bool { return c.method == method })
	if i < 0 {
		return nil
	}
	return &buildKitCalls[i]
}

// CallNeedsMessage reports whether DecideCall needs the call's first
// request message.
func (p *Policy) CallNeedsMessage(method string) bool {
	c := findCall(method)
	return c != nil && c.check != nil && p.cons != nil
}

// MaxMessage bounds a request message the policy decodes; the proxy
// refuses a larger one.
const MaxMessage = MaxBody

// DecideCall decides one gRPC call on BuildKit's API. Decision.Path is
// the method, when it is one the policy knows.
func (p *Policy) DecideCall(call Call) Decision {
	c := findCall(call.Method)
	if c == nil || p.cons == nil {
		return refuse(StatusForbidden, RuleGRPCMethod, "",
			"this call of BuildKit's API is not one docker buildx build, du or prune makes, and policy "+p.name+" does not allow it")
	}
	d := Decision{Allow: true, Path: c.method}
	if c.check == nil {
		return d
	}
	if call.Message == nil {
		return refuse(StatusBadRequest, RuleBadBody, c.method, "the call's request message is missing")
	}
	if len(call.Message) > MaxMessage {
		return refuse(StatusTooLarge, RuleBodyTooLarge, c.method, fmt.Sprintf("the call's request message is larger than %d bytes", MaxMessage))
	}
	ck := checker{constraints: p.cons, policy: p.name}
	if v := c.check(&ck, call.Message); v != nil {
		return refuse(v.status, v.rule, c.method, v.reason)
	}
	return d
}

func badMessage(what string) *violation {
	return &violation{status: StatusBadRequest, rule: RuleBadBody, reason: "the " + what + " request is not a valid message"}
}

// controlSolve checks Control.Solve: the build's entitlements, its
// frontend's attributes, and the LLB it brings.
func (c *checker) controlSolve(msg []byte) *violation {
	var req controlapi.SolveRequest
	if err := req.UnmarshalVT(msg); err != nil {
		return badMessage("Solve")
	}
	for _, e := range req.Entitlements {
		if v := c.entitlement(e); v != nil {
			return v
		}
	}
	if v := c.frontendAttrs(req.FrontendAttrs, "frontend attribute"); v != nil {
		return v
	}
	if v := c.definition(req.Definition); v != nil {
		return v
	}
	return c.definitions(req.FrontendInputs)
}

// gatewaySolve checks LLBBridge.Solve, the solve a client-side frontend
// (buildx's) asks for within a build: its frontend's options and LLB.
// Its entitlements are the build's (Control.Solve).
func (c *checker) gatewaySolve(msg []byte) *violation {
	var req gatewayapi.SolveRequest
	if err := req.UnmarshalVT(msg); err != nil {
		return badMessage("Solve")
	}
	if v := c.frontendAttrs(req.FrontendOpt, "frontend option"); v != nil {
		return v
	}
	if v := c.definition(req.Definition); v != nil {
		return v
	}
	return c.definitions(req.FrontendInputs)
}

// entitlement checks one of a build's entitlements (BuildKit's
// util/entitlements: "network.host", "security.insecure", "device" or
// "device=NAME,…").
func (c *checker) entitlement(e string) *violation {
	name, _, _ := strings.Cut(e, "=")
	switch name {
	case "network.host":
		if c.hostNS {
			return nil
		}
		return c.deny(RuleHostNamespace, "the build's entitlement network.host", "docker buildx build --allow network.host, --network host", "")
	case "security.insecure":
		if c.privileged {
			return nil
		}
		return c.deny(RulePrivileged, "the build's entitlement security.insecure", "docker buildx build --allow security.insecure", "")
	case "device":
		if c.devices {
			return nil
		}
		return c.deny(RuleDevices, "the build's entitlement device", "docker buildx build --allow device", "")
	}
	return &violation{status: StatusForbidden, rule: RuleEntitlement,
		reason: "the build asks for an entitlement that policy " + c.policy + " does not know"}
}

// frontendAttrs checks the Dockerfile frontend's attributes that reach
// the host (frontend/dockerui: force-network-mode, cgroup-parent,
// device). A gateway frontend gets the same attributes.
func (c *checker) frontendAttrs(attrs map[string]string, what string) *violation {
	switch attrs["force-network-mode"] {
	case "", "none", "sandbox":
	default:
		if !c.hostNS {
			return c.deny(RuleHostNamespace, "the "+what+" force-network-mode", "docker buildx build --network", "only none and the default are allowed")
		}
	}
	if attrs["cgroup-parent"] != "" && !c.cgroupParent {
		return c.deny(RuleCgroupParent, "the "+what+" cgroup-parent", "docker buildx build --cgroup-parent", "")
	}
	if attrs["device"] != "" && !c.devices {
		return c.deny(RuleDevices, "the "+what+" device", "docker buildx build --device", "")
	}
	return nil
}

func (c *checker) definitions(defs map[string]*pb.Definition) *violation {
	for _, d := range defs {
		if v := c.definition(d); v != nil {
			return v
		}
	}
	return nil
}

// definition checks the exec operations of an LLB definition the client
// sends: their network, security mode, cgroup parent and devices.
func (c *checker) definition(def *pb.Definition) *violation {
	if def == nil {
		return nil
	}
	for _, raw := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(raw); err != nil {
			return badMessage("LLB definition in the Solve")
		}
		ex := op.GetExec()
		if ex == nil {
			continue
		}
		if ex.Network == pb.NetMode_HOST && !c.hostNS {
			return c.deny(RuleHostNamespace, "an LLB exec with the host network", "RUN --network=host", "")
		}
		if ex.Security == pb.SecurityMode_INSECURE && !c.privileged {
			return c.deny(RulePrivileged, "an LLB exec in insecure security mode", "RUN --security=insecure", "")
		}
		if ex.GetMeta().GetCgroupParent() != "" && !c.cgroupParent {
			return c.deny(RuleCgroupParent, "an LLB exec's cgroup parent", "", "")
		}
		if len(ex.CdiDevices) > 0 && !c.devices {
			return c.deny(RuleDevices, "an LLB exec's devices", "RUN --device", "")
		}
	}
	return nil
}
