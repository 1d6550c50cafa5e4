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
// relay, idmap and policy=full volumes build with the daemon's BuildKit.
// A no-escalation volume refuses BuildKit's API (its h2c tunnel is not
// inspected yet), and the build fails saying so and what to do; the
// classic builder, whose requests the policy reads, builds.
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
	for _, tc := range []struct{ name, opt string }{{"relay", ""}, {"idmap", "mode=idmap"}, {"full", "policy=full"}} {
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
	t.Run("no-escalation", func(t *testing.T) {
		vol := newVolume(t, "policy=no-escalation")
		for _, args := range [][]string{{"docker", "buildx", "build", "/ctx"}, {"docker", "build", "/ctx"}} {
			r := build(t, vol, nil, args...)
			msg := r.stdout + r.stderr
			if r.err == nil || !strings.Contains(msg, "sockrelay: buildkit-not-allowed") || !strings.Contains(msg, "DOCKER_BUILDKIT=0") {
				t.Errorf("%s through a no-escalation volume: got\n%s\nwant refused, naming sockrelay's rule and what to do", strings.Join(args, " "), r)
			}
			if strings.Contains(msg, "registry-1.docker.io") {
				t.Errorf("%s: the misleading registry error is back:\n%s", strings.Join(args, " "), r)
			}
		}
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
