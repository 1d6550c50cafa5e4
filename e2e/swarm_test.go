//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A single-node swarm on the remapped daemon: a service's task gets a
// working socket from a sockrelay volume made on first use.
func TestSwarmService(t *testing.T) {
	state := strings.TrimSpace(must(t, "info", "-f", "{{.Swarm.LocalNodeState}}"))
	if state != "active" {
		// Not 2377: the machine's own daemon may be in a swarm.
		must(t, "swarm", "init", "--advertise-addr", "127.0.0.1:2387", "--listen-addr", "127.0.0.1:2387", "--data-path-port", "4790")
		t.Cleanup(func() { dockerOut("swarm", "leave", "--force") })
	}
	svc := uniqueName(t)
	vol := uniqueName(t)
	t.Cleanup(func() {
		dockerOut("service", "rm", svc)
		eventually(t, 30*time.Second, func() error {
			if out, _ := dockerOut("ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+svc); strings.TrimSpace(out) != "" {
				return fmt.Errorf("task containers of %s still there", svc)
			}
			return nil
		})
		removeVolume(vol)
	})
	must(t, "service", "create", "--detach", "--name", svc, "--label", label, "--container-label", label,
		"--mount", "type=volume,source="+vol+",target=/var/run,volume-driver="+plugin,
		image, "srclient", "sleep", "3600")
	var task string
	eventually(t, 60*time.Second, func() error {
		out, err := dockerOut("ps", "-q", "--filter", "label=com.docker.swarm.service.name="+svc, "--filter", "status=running")
		if task = strings.TrimSpace(out); err != nil || task == "" {
			return fmt.Errorf("no running task of %s yet (%v)", svc, err)
		}
		return nil
	})
	wantPing(t, pingIn(t, task))
	r := dockerIn(nil, "exec", task, "docker", "service", "ls", "--format", "{{.Name}}")
	if r.err != nil || !strings.Contains(r.stdout, svc) {
		t.Fatalf("docker service ls inside the task: got\n%s", r)
	}
	if got := strings.TrimSpace(must(t, "volume", "inspect", "-f", "{{.Driver}}", vol)); got != plugin {
		t.Fatalf("driver of the task's volume: got %q, want %q", got, plugin)
	}
}
