package policy

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// rawRequest is one request as bytes on the wire. Its head lists header
// lines as sent; Content-Length is added.
type rawRequest struct {
	name    string
	method  string
	target  string
	headers []string
	body    string
	chunked bool
}

func (rr rawRequest) bytes() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: docker\r\n", rr.method, rr.target)
	for _, h := range rr.headers {
		b.WriteString(h + "\r\n")
	}
	if rr.chunked {
		fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(rr.body), rr.body)
		return b.String()
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(rr.body), rr.body)
	return b.String()
}

// rawHeader is the header as sent, names in the case the client wrote
// them; the proxy passes http.ReadRequest's canonical one, but the policy
// must not depend on that.
func (rr rawRequest) rawHeader() http.Header {
	h := http.Header{}
	for _, line := range rr.headers {
		k, v, _ := strings.Cut(line, ":")
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h
}

// goBuildView reads a request as dockerd's build router does
// (daemon/server/router/build/build_routes.go newImageBuildOptions: FormValue
// and r.Form, which net/http fills from the query and from a form body) and
// says which refused setting it would see, or "".
func goBuildView(t *testing.T, raw string) string {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("http.ReadRequest: %v", err)
	}
	if strings.EqualFold(req.FormValue("networkmode"), "host") {
		return "networkmode=host"
	}
	if req.FormValue("cgroupparent") != "" {
		return "cgroupparent"
	}
	for _, opt := range req.Form["securityopt"] {
		if opt != "no-new-privileges" {
			return "securityopt"
		}
	}
	return ""
}

func multipart(fields ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, "--B\r\nContent-Disposition: form-data; name=%q\r\n\r\n%s\r\n", fields[i], fields[i+1])
	}
	b.WriteString("--B--\r\n")
	return b.String()
}

const (
	ctMultipart = "Content-Type: multipart/form-data; boundary=B"
	ctForm      = "Content-Type: application/x-www-form-urlencoded"
)

// hostileBuilds are build requests that carry parameters in a form body,
// spelled every way net/http accepts, and a few that do not.
var hostileBuilds = []rawRequest{
	{name: "multipart body, no query", method: "POST", target: "/v1.41/build", headers: []string{ctMultipart}, body: multipart("networkmode", "host")},
	{name: "multipart body, the query says bridge", method: "POST", target: "/v1.41/build?networkmode=bridge", headers: []string{ctMultipart}, body: multipart("networkmode", "host")},
	{name: "multipart securityopt beside the query's", method: "POST", target: "/v1.41/build?securityopt=no-new-privileges", headers: []string{ctMultipart}, body: multipart("securityopt", "seccomp=unconfined")},
	{name: "multipart cgroupparent", method: "POST", target: "/v1.41/build", headers: []string{ctMultipart}, body: multipart("cgroupparent", "/")},
	{name: "form body over the query", method: "POST", target: "/v1.41/build?networkmode=bridge", headers: []string{ctForm}, body: "networkmode=host"},
	{name: "lower-case header name", method: "POST", target: "/v1.41/build", headers: []string{"content-type: application/x-www-form-urlencoded"}, body: "networkmode=host"},
	{name: "upper-case header name and type", method: "POST", target: "/v1.41/build", headers: []string{"CONTENT-TYPE: Multipart/Form-Data; boundary=B"}, body: multipart("networkmode", "host")},
	{name: "space before the parameters", method: "POST", target: "/v1.41/build", headers: []string{"Content-Type: multipart/form-data ; boundary=B"}, body: multipart("networkmode", "host")},
	{name: "no space before the boundary", method: "POST", target: "/v1.41/build", headers: []string{"Content-Type: multipart/form-data;boundary=B"}, body: multipart("networkmode", "host")},
	{name: "a charset", method: "POST", target: "/v1.41/build", headers: []string{ctForm + "; charset=utf-8"}, body: "networkmode=host"},
	{name: "an invalid parameter, which net/http ignores", method: "POST", target: "/v1.41/build", headers: []string{ctForm + "; =x"}, body: "networkmode=host"},
	{name: "an empty parameter", method: "POST", target: "/v1.41/build", headers: []string{ctForm + ";;"}, body: "networkmode=host"},
	{name: "a duplicate parameter", method: "POST", target: "/v1.41/build", headers: []string{ctForm + "; charset=a; charset=b"}, body: "networkmode=host"},
	{name: "two Content-Types, the form first", method: "POST", target: "/v1.41/build", headers: []string{ctForm, "Content-Type: application/x-tar"}, body: "networkmode=host"},
	{name: "two Content-Types, the form second", method: "POST", target: "/v1.41/build", headers: []string{"Content-Type: application/x-tar", ctForm}, body: "networkmode=host"},
	{name: "two Content-Types in two cases", method: "POST", target: "/v1.41/build", headers: []string{"content-type: application/x-tar", "Content-type: " + strings.TrimPrefix(ctMultipart, "Content-Type: ")}, body: multipart("networkmode", "host")},
	{name: "a list of types", method: "POST", target: "/v1.41/build", headers: []string{"Content-Type: application/x-tar, application/x-www-form-urlencoded"}, body: "networkmode=host"},
	{name: "chunked multipart", method: "POST", target: "/v1.41/build", headers: []string{ctMultipart}, body: multipart("networkmode", "host"), chunked: true},
	{name: "PUT with a form body", method: "PUT", target: "/v1.41/build", headers: []string{ctForm}, body: "networkmode=host"},
	{name: "PATCH with a form body", method: "PATCH", target: "/v1.41/build", headers: []string{ctForm}, body: "networkmode=host"},
	{name: "GET with a multipart body", method: "GET", target: "/v1.41/build", headers: []string{ctMultipart}, body: multipart("networkmode", "host")},
	{name: "a version prefix", method: "POST", target: "/v1.47/build?t=x", headers: []string{ctMultipart}, body: multipart("networkmode", "HOST")},
	{name: "query host", method: "POST", target: "/v1.41/build?networkmode=host", headers: []string{"Content-Type: application/x-tar"}, body: "tar"},
	{name: "query host, second value", method: "POST", target: "/v1.41/build?networkmode=bridge&networkmode=host", headers: []string{"Content-Type: application/x-tar"}, body: "tar"},
	{name: "query cgroupparent", method: "POST", target: "/v1.41/build?cgroupparent=%2F", headers: []string{"Content-Type: application/x-tar"}, body: "tar"},
	{name: "query securityopt", method: "POST", target: "/v1.41/build?securityopt=apparmor%3Dunconfined", headers: []string{"Content-Type: application/x-tar"}, body: "tar"},
}

// TestFormBodyDifferential reads each hostile request twice: once as
// dockerd would (net/http's ReadRequest and FormValue), once through the
// policy. Whenever dockerd would see a refused build setting, the policy
// must refuse; and it must refuse every form body, whatever dockerd sees.
func TestFormBodyDifferential(t *testing.T) {
	file, err := Parse("build", []byte("allow: [{method: \"*\", path: \"/*\"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Policy{preset(t, "no-escalation"), file} {
		for _, rr := range hostileBuilds {
			t.Run(p.Name()+"/"+rr.name, func(t *testing.T) {
				raw := rr.bytes()
				sees := goBuildView(t, raw)
				req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
				if err != nil {
					t.Fatal(err)
				}
				form := false
				for _, h := range rr.headers {
					if k, _, _ := strings.Cut(h, ":"); strings.EqualFold(k, "Content-Type") && strings.Contains(strings.ToLower(h), "form") {
						form = true
					}
				}
				for _, h := range []http.Header{req.Header, rr.rawHeader()} {
					d := p.Decide(Request{Method: rr.method, Target: rr.target, Header: h})
					if sees != "" && d.Allow {
						t.Fatalf("net/http reads %s from this request, and the policy allowed it", sees)
					}
					if form && (d.Allow || d.Status != 400 || d.Rule != "form-body-not-allowed") {
						t.Fatalf("a form body: got %+v, want 400 form-body-not-allowed", d)
					}
				}
			})
		}
	}
}

// TestFormBodyEveryEndpoint: dockerd's handlers call ParseForm
// (daemon/server/httputils/httputils.go), which reads a form-encoded body
// on every endpoint; so every inspecting policy refuses one everywhere.
func TestFormBodyEveryEndpoint(t *testing.T) {
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	multi := http.Header{"Content-Type": {"multipart/form-data; boundary=B"}}
	lower := http.Header{"content-type": {"Application/X-WWW-Form-Urlencoded; charset=utf-8"}}
	refused := func(method, target string, h http.Header) reqCase {
		return reqCase{name: method + " " + target + " " + fmt.Sprint(h), method: method, target: target, header: h, status: 400, rule: "form-body-not-allowed"}
	}
	for _, p := range []*Policy{preset(t, "no-escalation"), mustParse(t, "all", "allow: [{method: \"*\", path: \"/*\"}]\n")} {
		t.Run(p.Name(), func(t *testing.T) {
			runCases(t, p, []reqCase{
				refused("POST", "/v1.41/containers/3f2a/kill", form),
				refused("POST", "/v1.41/containers/3f2a/kill", lower),
				refused("POST", "/v1.41/images/create?fromImage=alpine", form),
				refused("POST", "/v1.41/containers/3f2a/start", multi),
				refused("POST", "/v1.41/containers/3f2a/checkpoints", form),
				refused("DELETE", "/v1.41/containers/3f2a", form),
				refused("PUT", "/v1.41/containers/3f2a/archive?path=/tmp", multi),
				refused("GET", "/v1.41/containers/json", multi),
				refused("POST", "/v1.41/networks/create", form),
				refused("POST", "/v1.41/containers/create", lower),
				{name: "json body", method: "POST", target: "/v1.41/containers/3f2a/kill", header: http.Header{"Content-Type": {"application/json"}}},
				{name: "tar body", method: "PUT", target: "/v1.41/containers/3f2a/archive?path=/tmp", header: http.Header{"Content-Type": {"application/x-tar"}}},
			})
		})
	}
	// Presets that do not inspect leave bodies alone.
	runCases(t, preset(t, "full"), []reqCase{{name: "full", method: "POST", target: "/v1.41/build?networkmode=host", header: form}})
	runCases(t, preset(t, "read-only"), []reqCase{{name: "read-only", method: "GET", target: "/v1.41/containers/json", header: multi}})
}

func mustParse(t *testing.T, name, data string) *Policy {
	t.Helper()
	p, err := Parse(name, []byte(data))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return p
}
