//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// learnedDir is where the installed plugin writes learned policies: the
// logdir mount's default source, /var/log, and its sockrelay/learned.
const learnedDir = "/var/log/sockrelay/learned"

// learnSession is the recorded run: docker ps, run (one of them with a
// bind of the host directory bind), exec, logs, and compose up and down,
// each a docker CLI in a remapped container whose socket is the volume's.
// It fails the test on the first command that fails.
func learnSession(t *testing.T, vol, bind string) {
	t.Helper()
	step := func(what string, r result) {
		t.Helper()
		if r.err != nil {
			t.Fatalf("%s through %s: %s", what, vol, r)
		}
	}
	step("docker ps", runClient(t, vol, "docker", "ps"))
	r := runClient(t, vol, "docker", "run", "--rm", "--label", label, image, "srclient", "echo", "run-ok")
	step("docker run", r)
	if strings.TrimSpace(r.stdout) != "run-ok" {
		t.Fatalf("docker run through %s: got %q, want run-ok", vol, r.stdout)
	}
	step("docker run -v HOSTDIR", runClient(t, vol, "docker", "run", "--rm", "--label", label, "-v", bind+":/data:ro", image, "srclient", "echo"))
	sib := uniqueName(t)
	t.Cleanup(func() { dockerOut("rm", "-f", sib) })
	step("docker run -d", runClient(t, vol, "docker", "run", "-d", "--name", sib, "--label", label, image, "srclient", "sleep", "3600"))
	r = runClient(t, vol, "docker", "exec", sib, "srclient", "echo", "exec-ok")
	step("docker exec", r)
	if strings.TrimSpace(r.stdout) != "exec-ok" {
		t.Fatalf("docker exec through %s: got %q, want exec-ok", vol, r.stdout)
	}
	step("docker logs", runClient(t, vol, "docker", "logs", sib))
	step("docker rm -f", runClient(t, vol, "docker", "rm", "-f", sib))

	// Compose v2, in the client container, from a file on its stdin.
	project := uniqueName(t)
	compose := fmt.Sprintf("services:\n  app:\n    image: %s\n    command: [srclient, sleep, \"3600\"]\n    labels: [%q]\n", image, label)
	t.Cleanup(func() {
		if ids, _ := dockerOut("ps", "-aq", "--filter", "label=com.docker.compose.project="+project); strings.TrimSpace(ids) != "" {
			dockerOut(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		dockerOut("network", "rm", project+"_default")
	})
	for _, args := range [][]string{{"up", "-d"}, {"down"}} {
		base := []string{"run", "--rm", "-i", "--label", label, "-v", vol + ":/var/run", image, "docker", "compose", "-p", project, "-f", "-"}
		step("docker compose "+args[0], dockerIn([]byte(compose), append(base, args...)...))
	}
}

// TestPolicyLearn: a learning volume serves a session as full does and
// writes the tightest policy that allows it; installed as file:NAME on a
// new volume, the same session replays with no denial, while a
// privileged run and a host bind, never seen, are refused. sockrelay
// policy suggest over the learning volume's audit lines gives the same
// file.
func TestPolicyLearn(t *testing.T) {
	vol := newVolume(t, "policy=learn")
	learned := filepath.Join(learnedDir, vol+".yaml")
	t.Cleanup(func() {
		os.Remove(learned)
		os.Remove(filepath.Join(learnedDir, vol+".records"))
	})
	// A container that holds the volume keeps it served, so that its
	// Status shows the live figures.
	startUser(t, vol)
	bind := t.TempDir()
	learnSession(t, vol, bind)
	st := status(t, vol)
	if st["policy"] != "learn:"+vol || st["denied"] != 0.0 || st["learned_file"] != learned {
		t.Fatalf("status of the learning volume: got %v, want policy learn:%s, no denial, learned_file %s", st, vol, learned)
	}

	// The file follows the requests within a few seconds; it is done
	// when it holds as many requests as the volume served.
	var file []byte
	eventually(t, 20*time.Second, func() error {
		st := status(t, vol)
		b, err := os.ReadFile(learned)
		if err != nil {
			return err
		}
		want := fmt.Sprintf("the %v requests seen", st["requests"])
		if !strings.Contains(string(b), want) || st["learned_requests"] != st["requests"] {
			return fmt.Errorf("learned file not yet up to date (want %q; status %v):\n%s", want, st, b)
		}
		file = b
		return nil
	})
	t.Logf("learned policy:\n%s", file)
	for _, want := range []string{`path: "/containers/create"`, `path: "/containers/{name}/exec"`, `path: "/containers/{name}/logs"`,
		`path: "/networks/create"`, "privileged: false", `- "` + bind + `"  # 2 requests: POST /containers/create, POST /containers/{name}/attach`,
		`- "/containers/{name}/attach"`} {
		if !strings.Contains(string(file), want) {
			t.Errorf("the learned file lacks %q", want)
		}
	}

	// sockrelay policy suggest over the daemon's log, where the plugin's
	// audit lines are: the same file.
	logFile := filepath.Join(daemonDir, "dockerd.log")
	eventually(t, 10*time.Second, func() error {
		out, err := exec.Command(filepath.Join(repoRoot(), "bin", "sockrelay"), "policy", "suggest", "-volume", vol, logFile).Output()
		if err != nil {
			return fmt.Errorf("policy suggest: %v", err)
		}
		if string(out) != string(file) {
			return fmt.Errorf("policy suggest gives\n%s\nwant the learned file", out)
		}
		return nil
	})

	// Installed as a policy file on a new volume.
	dir := "/etc/sockrelay/policies"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := "learned-" + vol
	installed := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(installed, file, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(installed) })
	enforced := newVolume(t, "policy=file:"+name)
	startUser(t, enforced)
	learnSession(t, enforced, bind)
	if st := status(t, enforced); st["denied"] != 0.0 || st["policy"] != "file:"+name {
		t.Fatalf("the session replayed under the learned file: got %v, want no denial", st)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"docker", "run", "--rm", "--privileged", image, "srclient", "echo"}, "sockrelay: no-privileged: HostConfig.Privileged (--privileged) is not allowed by policy file:" + name},
		{[]string{"docker", "run", "--rm", "-v", "/etc:/host-etc", image, "srclient", "echo"}, "sockrelay: bind-not-allowed"},
		{[]string{"docker", "run", "--rm", "-v", filepath.Dir(bind) + ":/data", image, "srclient", "echo"}, "sockrelay: bind-not-allowed"},
		{[]string{"docker", "system", "df"}, "sockrelay: endpoint-not-allowed: GET /system/df is not allowed by policy file:" + name},
	} {
		r := runClient(t, enforced, c.args...)
		if r.err == nil || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s under the learned file: got\n%s\nwant refused: %s", strings.Join(c.args, " "), r, c.want)
		}
	}
}
