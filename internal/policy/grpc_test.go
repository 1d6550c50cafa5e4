package policy

import (
	"strings"
	"testing"

	controlapi "github.com/moby/buildkit/api/services/control"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/pb"
)

func solveMsg(t *testing.T, req *controlapi.SolveRequest) []byte {
	t.Helper()
	b, err := req.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func defWith(t *testing.T, exec *pb.ExecOp) *pb.Definition {
	t.Helper()
	src, err := (&pb.Op{Op: &pb.Op_Source{Source: &pb.SourceOp{Identifier: "docker-image://docker.io/library/x:latest"}}}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	ex, err := (&pb.Op{Op: &pb.Op_Exec{Exec: exec}}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Definition{Def: [][]byte{src, ex}}
}

func TestDecideCallSolve(t *testing.T) {
	meta := &pb.Meta{Args: []string{"true"}}
	for _, tc := range []struct {
		name string
		req  *controlapi.SolveRequest
		rule string // "" for allowed
	}{
		{"plain build", &controlapi.SolveRequest{Ref: "r", Frontend: "dockerfile.v0", FrontendAttrs: map[string]string{"filename": "Dockerfile", "build-arg:A": "b"}}, ""},
		{"buildx's gateway build", &controlapi.SolveRequest{Ref: "r", Session: "s", Exporters: []*controlapi.Exporter{{Type: "moby", Attrs: map[string]string{"name": "x"}}}}, ""},
		{"network none", &controlapi.SolveRequest{FrontendAttrs: map[string]string{"force-network-mode": "none"}}, ""},
		{"exec with the default network", &controlapi.SolveRequest{Definition: defWith(t, &pb.ExecOp{Meta: meta})}, ""},
		{"network.host", &controlapi.SolveRequest{Entitlements: []string{"network.host"}}, RuleHostNamespace},
		{"security.insecure", &controlapi.SolveRequest{Entitlements: []string{"security.insecure"}}, RulePrivileged},
		{"device", &controlapi.SolveRequest{Entitlements: []string{"device=nvidia.com/gpu=all"}}, RuleDevices},
		{"an unknown entitlement", &controlapi.SolveRequest{Entitlements: []string{"fs.write"}}, RuleEntitlement},
		{"a harmless one then an escalating one", &controlapi.SolveRequest{Entitlements: []string{"", "security.insecure"}}, RuleEntitlement},
		{"force-network-mode=host", &controlapi.SolveRequest{FrontendAttrs: map[string]string{"force-network-mode": "host"}}, RuleHostNamespace},
		{"force-network-mode unknown", &controlapi.SolveRequest{FrontendAttrs: map[string]string{"force-network-mode": "HOST"}}, RuleHostNamespace},
		{"cgroup-parent", &controlapi.SolveRequest{FrontendAttrs: map[string]string{"cgroup-parent": "/"}}, RuleCgroupParent},
		{"device attribute", &controlapi.SolveRequest{FrontendAttrs: map[string]string{"device": "x"}}, RuleDevices},
		{"LLB exec, host network", &controlapi.SolveRequest{Definition: defWith(t, &pb.ExecOp{Meta: meta, Network: pb.NetMode_HOST})}, RuleHostNamespace},
		{"LLB exec, insecure", &controlapi.SolveRequest{Definition: defWith(t, &pb.ExecOp{Meta: meta, Security: pb.SecurityMode_INSECURE})}, RulePrivileged},
		{"LLB exec, cgroup parent", &controlapi.SolveRequest{Definition: defWith(t, &pb.ExecOp{Meta: &pb.Meta{CgroupParent: "x"}})}, RuleCgroupParent},
		{"LLB exec, devices", &controlapi.SolveRequest{Definition: defWith(t, &pb.ExecOp{Meta: meta, CdiDevices: []*pb.CDIDevice{{Name: "x"}}})}, RuleDevices},
		{"frontend input, host network", &controlapi.SolveRequest{FrontendInputs: map[string]*pb.Definition{"context": defWith(t, &pb.ExecOp{Meta: meta, Network: pb.NetMode_HOST})}}, RuleHostNamespace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := noEscalation.DecideCall(Call{Method: controlapi.Control_Solve_FullMethodName, Message: solveMsg(t, tc.req)})
			if tc.rule == "" {
				if !d.Allow {
					t.Fatalf("got %+v, want allowed", d)
				}
				return
			}
			if d.Allow || d.Rule != tc.rule || d.Status != StatusForbidden || !strings.Contains(d.Reason, "no-escalation") {
				t.Fatalf("got %+v, want 403 %s", d, tc.rule)
			}
		})
	}
}

func TestDecideCallGatewaySolve(t *testing.T) {
	msg := func(req *gatewayapi.SolveRequest) []byte {
		b, err := req.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m := gatewayapi.LLBBridge_Solve_FullMethodName
	if d := noEscalation.DecideCall(Call{Method: m, Message: msg(&gatewayapi.SolveRequest{Frontend: "dockerfile.v0", FrontendOpt: map[string]string{"target": "x"}})}); !d.Allow {
		t.Errorf("a gateway solve: got %+v, want allowed", d)
	}
	if d := noEscalation.DecideCall(Call{Method: m, Message: msg(&gatewayapi.SolveRequest{FrontendOpt: map[string]string{"force-network-mode": "host"}})}); d.Rule != RuleHostNamespace {
		t.Errorf("a gateway solve with force-network-mode=host: got %+v, want %s", d, RuleHostNamespace)
	}
	def := defWith(t, &pb.ExecOp{Meta: &pb.Meta{Args: []string{"x"}}, Security: pb.SecurityMode_INSECURE})
	if d := noEscalation.DecideCall(Call{Method: m, Message: msg(&gatewayapi.SolveRequest{Definition: def})}); d.Rule != RulePrivileged {
		t.Errorf("a gateway solve of an insecure exec: got %+v, want %s", d, RulePrivileged)
	}
}

func TestDecideCallMethods(t *testing.T) {
	for _, tc := range []struct {
		method string
		allow  bool
	}{
		{controlapi.Control_Status_FullMethodName, true},
		{controlapi.Control_DiskUsage_FullMethodName, true},
		{controlapi.Control_Prune_FullMethodName, true},
		{gatewayapi.LLBBridge_ReadFile_FullMethodName, true},
		{"/opentelemetry.proto.collector.trace.v1.TraceService/Export", true},
		{gatewayapi.LLBBridge_Inputs_FullMethodName, false},
		{gatewayapi.LLBBridge_NewContainer_FullMethodName, false},
		{gatewayapi.LLBBridge_ExecProcess_FullMethodName, false},
		{controlapi.Control_Session_FullMethodName, false},
		{"/moby.buildkit.v1.Control/%53olve", false},
		{"/moby.buildkit.v1.Control/Status?x", false},
		{"/moby.buildkit.v1.control/Status", false},
		{"", false},
	} {
		d := noEscalation.DecideCall(Call{Method: tc.method})
		if d.Allow != tc.allow || (!tc.allow && d.Rule != RuleGRPCMethod) {
			t.Errorf("%q: got %+v, want allow=%v", tc.method, d, tc.allow)
		}
	}
	if !noEscalation.CallNeedsMessage(controlapi.Control_Solve_FullMethodName) || noEscalation.CallNeedsMessage(controlapi.Control_Status_FullMethodName) {
		t.Error("CallNeedsMessage: want Solve only")
	}
	// A Solve must bring its message, one that decodes.
	if d := noEscalation.DecideCall(Call{Method: controlapi.Control_Solve_FullMethodName}); d.Allow || d.Rule != RuleBadBody {
		t.Errorf("Solve without its message: got %+v, want %s", d, RuleBadBody)
	}
	if d := noEscalation.DecideCall(Call{Method: controlapi.Control_Solve_FullMethodName, Message: []byte{0xff, 0xff}}); d.Allow || d.Rule != RuleBadBody {
		t.Errorf("Solve with a broken message: got %+v, want %s", d, RuleBadBody)
	}
	// read-only and full do not follow the calls: their Decide says so.
	for _, p := range []*Policy{readOnly, full} {
		if d := p.Decide(Request{Method: "POST", Target: "/grpc"}); d.Calls {
			t.Errorf("%s: POST /grpc: got %+v, want the calls not followed", p.Name(), d)
		}
	}
	if d := noEscalation.Decide(Request{Method: "POST", Target: "/grpc"}); !d.Allow || !d.Calls {
		t.Errorf("no-escalation: POST /grpc: got %+v, want the calls followed", d)
	}
	if d := noEscalation.Decide(Request{Method: "POST", Target: "/session"}); !d.Allow || d.Calls {
		t.Errorf("no-escalation: POST /session: got %+v, want a raw stream", d)
	}
}

// A policy file's create switches allow what they name in builds too.
func TestDecideCallFile(t *testing.T) {
	p, err := Parse("bk", []byte("allow: [{method: POST, path: /grpc}]\nupgrade: [/grpc]\ncreate: {host_namespaces: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	msg := solveMsg(t, &controlapi.SolveRequest{Entitlements: []string{"network.host"}})
	if d := p.DecideCall(Call{Method: controlapi.Control_Solve_FullMethodName, Message: msg}); !d.Allow {
		t.Errorf("network.host with host_namespaces: got %+v, want allowed", d)
	}
	msg = solveMsg(t, &controlapi.SolveRequest{Entitlements: []string{"security.insecure"}})
	if d := p.DecideCall(Call{Method: controlapi.Control_Solve_FullMethodName, Message: msg}); d.Rule != RulePrivileged {
		t.Errorf("security.insecure without privileged: got %+v, want %s", d, RulePrivileged)
	}
}
