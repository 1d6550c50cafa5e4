package apiproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// fakeControl is BuildKit's control API as far as these tests need it:
// every Solve succeeds, saying how many entitlements it got.
type fakeControl struct {
	controlapi.UnimplementedControlServer
}

func (fakeControl) Solve(_ context.Context, r *controlapi.SolveRequest) (*controlapi.SolveResponse, error) {
	return &controlapi.SolveResponse{ExporterResponse: map[string]string{"entitlements": strings.Join(r.Entitlements, ",")}}, nil
}

// serveGRPC is dockerd's POST /grpc (daemon/server/router/grpc): 101,
// then an HTTP/2 server with prior knowledge and a gRPC server behind it.
func serveGRPC(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "h2c" {
		http.Error(w, "no upgrade", 400)
		return
	}
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
	s := grpc.NewServer()
	controlapi.RegisterControlServer(s, fakeControl{})
	(&http2.Server{}).ServeConn(c, &http2.ServeConnOpts{Handler: s})
}

// grpcClient dials BuildKit's API through the proxy as buildx's docker
// driver does: POST /grpc with Upgrade: h2c, then gRPC over the
// connection.
func grpcClient(t *testing.T, f *fixture) *grpc.ClientConn {
	t.Helper()
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", f.sock)
		if err != nil {
			return nil, err
		}
		io.WriteString(c, "POST /v1.51/grpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		// Read the head byte by byte: what follows is HTTP/2.
		var head []byte
		b := make([]byte, 1)
		for !strings.HasSuffix(string(head), "\r\n\r\n") {
			if _, err := c.Read(b); err != nil {
				return nil, err
			}
			head = append(head, b[0])
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(head))), nil)
		if err != nil || resp.StatusCode != 101 {
			c.Close()
			return nil, status.Errorf(codes.Unavailable, "POST /grpc: %q", head)
		}
		return c, nil
	}
	cc, err := grpc.NewClient("passthrough:///buildkit", grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Through no-escalation, a real gRPC client and server: a build that asks
// for nothing passes, one that asks for security.insecure gets a gRPC
// error naming the rule, the connection goes on with the next call, a
// method buildx never calls is refused, and each call has its audit line.
func TestBuildKitCallsDecided(t *testing.T) {
	f := start(t, "no-escalation")
	cc := grpcClient(t, f)
	ctl := controlapi.NewControlClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := ctl.Solve(ctx, &controlapi.SolveRequest{Ref: "a", Frontend: "dockerfile.v0"}); err != nil {
		t.Fatalf("a plain Solve: %v", err)
	}
	_, err := ctl.Solve(ctx, &controlapi.SolveRequest{Ref: "b", Entitlements: []string{"security.insecure"}})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "sockrelay: no-privileged: ") {
		t.Fatalf("a Solve with security.insecure: got %v, want PermissionDenied naming no-privileged", err)
	}
	_, err = gatewayapi.NewLLBBridgeClient(cc).NewContainer(ctx, &gatewayapi.NewContainerRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "grpc-method-not-allowed") {
		t.Fatalf("NewContainer: got %v, want refused by grpc-method-not-allowed", err)
	}
	// Large enough to need many DATA frames, and still one connection.
	attrs := map[string]string{"build-arg:BIG": strings.Repeat("x", 200<<10)}
	resp, err := ctl.Solve(ctx, &controlapi.SolveRequest{Ref: "c", FrontendAttrs: attrs})
	if err != nil || resp.ExporterResponse["entitlements"] != "" {
		t.Fatalf("a large plain Solve after the refusals: got %v, %v", resp, err)
	}
	cc.Close()

	want := []string{
		"allow /moby.buildkit.v1.Control/Solve ",
		"deny /moby.buildkit.v1.Control/Solve no-privileged",
		"deny /moby.buildkit.v1.frontend.LLBBridge/NewContainer grpc-method-not-allowed",
		"allow /moby.buildkit.v1.Control/Solve ",
	}
	eventually(t, func() bool {
		var got []string
		for _, l := range f.audit.lines(t) {
			if l["msg"] == "grpc" {
				got = append(got, l["decision"].(string)+" "+l["grpc_method"].(string)+" "+l["rule"].(string))
			}
		}
		return strings.Join(got, "\n") == strings.Join(want, "\n")
	}, "the audit lines of the calls")
}

// full passes BuildKit's API through undecided.
func TestBuildKitFullNotDecided(t *testing.T) {
	f := start(t, "full")
	ctl := controlapi.NewControlClient(grpcClient(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ctl.Solve(ctx, &controlapi.SolveRequest{Entitlements: []string{"security.insecure"}})
	if err != nil || resp.ExporterResponse["entitlements"] != "security.insecure" {
		t.Fatalf("full: got %v, %v, want the Solve passed on", resp, err)
	}
}

func eventually(t *testing.T, ok func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Engine 29 also serves gRPC over HTTP/2 with prior knowledge on its
// socket. Through a policy volume that is not HTTP/1.1, and is refused
// before the daemon sees it.
func TestPriorKnowledgeHTTP2Refused(t *testing.T) {
	for _, preset := range []string{"no-escalation", "read-only"} {
		f := start(t, preset)
		c := f.dial(t)
		io.WriteString(c, http2.ClientPreface)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("%s: the HTTP/2 preface: got %v %v, want 400", preset, resp, err)
		}
	}
}
