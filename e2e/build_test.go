//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildContext is a build context on the host that remapped containers
// can read: a Dockerfile with a COPY and a RUN (a build container).
func buildContext(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sre2e-ctx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files := map[string]string{
		"Dockerfile": "FROM " + image + "\nCOPY hello.txt /hello.txt\nRUN [\"srclient\", \"echo\", \"built\"]\n",
		"hello.txt":  "hello\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// docker buildx build, and docker build (which is buildx once buildx is
// installed, as in every Docker CE client), from a remapped container:
// relay, idmap, policy=full and policy=no-escalation volumes build with
// the daemon's BuildKit, and the classic builder builds through
// no-escalation too. A read-only volume refuses builds.
func TestBuildx(t *testing.T) {
	ctx := buildContext(t)
	build := func(t *testing.T, vol string, env []string, args ...string) result {
		t.Helper()
		run := []string{"run", "--rm", "--label", label, "-v", vol + ":/var/run", "-v", ctx + ":/ctx:ro"}
		for _, e := range env {
			run = append(run, "-e", e)
		}
		return dockerIn(nil, append(append(run, image), args...)...)
	}
	built := func(t *testing.T, tag string) {
		t.Helper()
		t.Cleanup(func() { dockerOut("image", "rm", "-f", tag) })
		if r := dockerIn(nil, "image", "inspect", tag); r.err != nil {
			t.Fatalf("image %s was not built: %s", tag, r)
		}
	}
	for _, tc := range []struct{ name, opt string }{{"relay", ""}, {"idmap", "mode=idmap"}, {"full", "policy=full"}, {"no-escalation", "policy=no-escalation"}} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []string
			if tc.opt != "" {
				opts = append(opts, tc.opt)
			}
			vol := newVolume(t, opts...)
			tag := uniqueName(t)
			if r := build(t, vol, nil, "docker", "buildx", "build", "-t", tag, "/ctx"); r.err != nil {
				t.Fatalf("docker buildx build through a %s volume: %s", tc.name, r)
			}
			built(t, tag)
			tag2 := uniqueName(t)
			if r := build(t, vol, nil, "docker", "build", "-t", tag2, "/ctx"); r.err != nil {
				t.Fatalf("docker build through a %s volume: %s", tc.name, r)
			}
			built(t, tag2)
		})
	}
	t.Run("no-escalation classic", func(t *testing.T) {
		// The classic builder too: its /build query is what the policy reads.
		vol := newVolume(t, "policy=no-escalation")
		tag := uniqueName(t)
		if r := build(t, vol, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "-t", tag, "/ctx"); r.err != nil {
			t.Fatalf("the classic builder through a no-escalation volume: %s", r)
		}
		built(t, tag)
	})
	t.Run("read-only", func(t *testing.T) {
		vol := newVolume(t, "policy=read-only")
		r := build(t, vol, nil, "docker", "buildx", "build", "/ctx")
		if r.err == nil || !strings.Contains(r.stdout+r.stderr, "sockrelay: read-only") {
			t.Errorf("docker buildx build through a read-only volume: got\n%s\nwant the read-only refusal", r)
		}
	})
}

// TestBuildKitNoEscalation: through a no-escalation volume, from a
// remapped container, docker buildx build builds what asks for nothing of
// the host (a multi-stage Dockerfile, a secret, a cache mount), and du and
// prune work; builds that ask for the host's network or an insecure build
// container are refused with the rule's name. Every gRPC call is in the
// audit log, and none of the allowed builds met a method the policy does
// not know.
func TestBuildKitNoEscalation(t *testing.T) {
	dir, err := os.MkdirTemp("", "sre2e-bk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := "[\"srclient\", \"echo\", \"built\"]"
	files := map[string]string{
		"Dockerfile.multi":    "FROM " + image + " AS first\nRUN " + run + "\nFROM " + image + "\nCOPY --from=first /bin/srclient /bin/srclient2\nRUN [\"srclient2\", \"echo\", \"second\"]\n",
		"Dockerfile.secret":   "FROM " + image + "\nRUN --mount=type=secret,id=tok,required=true [\"srclient\", \"stat\", \"/run/secrets/tok\"]\n",
		"Dockerfile.cache":    "FROM " + image + "\nRUN --mount=type=cache,target=/cache [\"srclient\", \"stat\", \"/cache\"]\n",
		"Dockerfile.insecure": "FROM " + image + "\nRUN --security=insecure " + run + "\n",
		"tok":                 "not-a-real-secret\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vol := newVolume(t, "policy=no-escalation")
	buildx := func(args ...string) result {
		run := []string{"run", "--rm", "--label", label, "-v", vol + ":/var/run", "-v", dir + ":/ctx:ro", image, "docker", "buildx"}
		return dockerIn(nil, append(run, args...)...)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"multi-stage", []string{"-f", "/ctx/Dockerfile.multi"}},
		{"secret", []string{"--secret", "id=tok,src=/ctx/tok", "-f", "/ctx/Dockerfile.secret"}},
		{"cache mount", []string{"-f", "/ctx/Dockerfile.cache"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := uniqueName(t)
			t.Cleanup(func() { dockerOut("image", "rm", "-f", tag) })
			args := append([]string{"build", "-t", tag}, tc.args...)
			if r := buildx(append(args, "/ctx")...); r.err != nil {
				t.Fatalf("docker buildx %s through a no-escalation volume: %s", strings.Join(args, " "), r)
			}
			if r := dockerIn(nil, "image", "inspect", tag); r.err != nil {
				t.Fatalf("image %s was not built: %s", tag, r)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
		rule string
	}{
		{"network host", []string{"--network", "host", "-f", "/ctx/Dockerfile.multi"}, "host-namespace-not-allowed"},
		{"allow security.insecure", []string{"--allow", "security.insecure", "-f", "/ctx/Dockerfile.multi"}, "no-privileged"},
		{"RUN --security=insecure", []string{"--allow", "security.insecure", "-f", "/ctx/Dockerfile.insecure"}, "no-privileged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"build"}, tc.args...)
			r := buildx(append(args, "/ctx")...)
			if r.err == nil || !strings.Contains(r.stdout+r.stderr, "sockrelay: "+tc.rule+": ") {
				t.Fatalf("docker buildx %s through a no-escalation volume: got\n%s\nwant refused by sockrelay's %s", strings.Join(args, " "), r, tc.rule)
			}
			for _, l := range strings.Split(r.stdout+r.stderr, "\n") {
				if strings.Contains(l, "sockrelay: ") {
					t.Logf("the user sees: %s", l)
				}
			}
		})
	}
	t.Run("du and prune", func(t *testing.T) {
		for _, args := range [][]string{{"du"}, {"prune", "-f"}} {
			if r := buildx(args...); r.err != nil {
				t.Errorf("docker buildx %s through a no-escalation volume: %s", strings.Join(args, " "), r)
			}
		}
	})
	wantAudit(t, vol, `"msg":"grpc"`, `"grpc_method":"/moby.buildkit.v1.Control/Solve"`, `"decision":"allow"`)
	wantAudit(t, vol, `"msg":"grpc"`, `"grpc_method":"/moby.buildkit.v1.Control/Solve"`, `"decision":"deny"`, `"rule":"no-privileged"`)
	logs, err := daemonLog()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `\"msg\":\"grpc\"`) || !strings.Contains(line, `\"volume\":\"`+vol+`\"`) {
			continue
		}
		_, m, _ := strings.Cut(line, `\"grpc_method\":\"`)
		m, _, _ = strings.Cut(m, `\"`)
		_, d, _ := strings.Cut(line, `\"decision\":\"`)
		d, _, _ = strings.Cut(d, `\"`)
		seen[m+" "+d] = true
		if strings.Contains(line, "grpc-method-not-allowed") {
			t.Errorf("a call of buildx's was refused as unknown: %s", line)
		}
	}
	t.Logf("gRPC calls seen: %v", seen)
}
