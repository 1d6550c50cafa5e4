//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/metrics/metricstest"
)

// The installed plugin serves metrics on METRICS_SOCKET, a host socket
// below SOCKET_DIR: after known traffic through a policy volume and a
// relay volume, a scrape from the host counts it, and the series of a
// removed volume are gone. A METRICS_SOCKET the plugin cannot listen on
// is logged, and the plugin serves its volumes without metrics.
func TestMetrics(t *testing.T) {
	setAndEnable := func(kv ...string) {
		t.Helper()
		must(t, "plugin", "disable", "-f", plugin)
		must(t, append([]string{"plugin", "set", plugin}, kv...)...)
		must(t, "plugin", "enable", plugin)
	}
	t.Cleanup(func() { setAndEnable("METRICS_SOCKET=") })

	// A directory that does not exist: no metrics, volumes served.
	nodir := filepath.Join(daemonDir, "sre2e-nodir")
	logBefore, _ := daemonLog()
	setAndEnable("METRICS_SOCKET=" + filepath.Join(nodir, "m.sock"))
	wantPing(t, runClient(t, newVolume(t, "mode=relay"), "srclient", "ping", "/var/run/docker.sock"))
	eventually(t, 10*time.Second, func() error {
		logs, err := daemonLog()
		if err != nil {
			return err
		}
		if !strings.Contains(logs[min(len(logBefore), len(logs)):], "no metrics: cannot listen on METRICS_SOCKET") {
			return fmt.Errorf("no log line saying the plugin serves without metrics")
		}
		return nil
	})
	if _, err := os.Lstat(nodir); !os.IsNotExist(err) {
		t.Fatalf("%s after a METRICS_SOCKET in it: got %v, want nothing made", nodir, err)
	}

	sock := filepath.Join(daemonDir, "sre2e-metrics.sock")
	setAndEnable("METRICS_SOCKET=" + sock)
	var st syscall.Stat_t
	if err := syscall.Lstat(sock, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Uid != 0 || st.Gid != 0 || st.Mode&0o777 != 0o660 {
		t.Fatalf("metrics socket %s: got %+v, %v, want a socket root:root 0660", sock, st, err)
	}
	scrape := func() metricstest.Scrape {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := metricstest.Get(ctx, "unix:"+sock)
		if err != nil {
			t.Fatalf("scrape %s: %v", sock, err)
		}
		return s
	}
	val := func(s metricstest.Scrape, name string, labels ...string) float64 {
		v, _ := s.Value(name, labels...)
		return v
	}

	pol := newVolume(t, "policy=read-only")
	rel := newVolume(t, "mode=relay")
	if r := dockerIn(nil, "volume", "create", "-d", plugin, "-o", "mode=bogus", uniqueName(t)); r.err == nil {
		t.Fatalf("volume create with mode=bogus: got\n%s\nwant an error", r)
	}
	a := startUser(t, pol)
	b := startUser(t, rel)

	// One refusal by the CLI, then five pings: their counts are exact.
	if r := dockerIn(nil, "exec", a, "docker", "rm", "-f", "nothing"); r.err == nil || !strings.Contains(r.stderr, "sockrelay: read-only") {
		t.Fatalf("docker rm under read-only: got\n%s\nwant the refusal", r)
	}
	pv := []string{"volume", pol, "mode", "policy"}
	rv := []string{"volume", rel, "mode", "relay"}
	var before metricstest.Scrape
	eventually(t, 10*time.Second, func() error {
		before = scrape()
		if got := val(before, "sockrelay_requests_total", append(pv, "decision", "deny", "rule", "read-only")...); got != 1 {
			return fmt.Errorf("refusals by read-only: got %v (%v), want 1", got, before.Series("sockrelay_requests_total"))
		}
		if got := val(before, "sockrelay_connections_open", pv...); got != 0 {
			return fmt.Errorf("connections open on %s: got %v, want 0", pol, got)
		}
		return nil
	})
	const n = 5
	for range n {
		wantPing(t, pingIn(t, a))
		wantPing(t, pingIn(t, b))
	}
	var after metricstest.Scrape
	eventually(t, 10*time.Second, func() error {
		after = scrape()
		if got := val(after, "sockrelay_connections_open", rv...) + val(after, "sockrelay_connections_open", pv...); got != 0 {
			return fmt.Errorf("connections open: got %v, want 0", got)
		}
		return nil
	})
	delta := func(name string, labels ...string) float64 {
		return val(after, name, labels...) - val(before, name, labels...)
	}
	for _, c := range []struct {
		what string
		got  float64
		want float64
	}{
		{"policy: allowed requests", delta("sockrelay_requests_total", append(pv, "decision", "allow", "rule", "")...), n},
		{"policy: their latencies", delta("sockrelay_request_duration_seconds", append(pv, "decision", "allow")...), n},
		{"policy: refusals", delta("sockrelay_requests_total", append(pv, "decision", "deny", "rule", "read-only")...), 0},
		{"policy: connections", delta("sockrelay_connections_total", pv...), n},
		{"policy: body bytes to the daemon", delta("sockrelay_bytes_total", append(pv, "direction", "in")...), 0},
		{"policy: body bytes from the daemon (OK)", delta("sockrelay_bytes_total", append(pv, "direction", "out")...), 2 * n},
		{"relay: connections", delta("sockrelay_connections_total", rv...), n},
		{"relay: upstream failures", val(after, "sockrelay_upstream_failures_total", rv...), 0},
		{"driver: Create calls", val(after, "sockrelay_volumedriver_calls_total", "method", "Create"), 3},
		{"driver: Create errors", val(after, "sockrelay_volumedriver_errors_total", "method", "Create"), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	// A ping is one request each way: its head in, head and body out.
	if in, out := delta("sockrelay_bytes_total", append(rv, "direction", "in")...), delta("sockrelay_bytes_total", append(rv, "direction", "out")...); in < 50*n || out < 50*n {
		t.Errorf("relay bytes of %d pings: got in %v, out %v, want at least 50 each a ping", n, in, out)
	}
	if m, h := val(after, "sockrelay_volumedriver_calls_total", "method", "Mount"), val(after, "sockrelay_volumedriver_call_duration_seconds", "method", "Mount"); m < 2 || h != m {
		t.Errorf("Mount calls, their latencies: got %v, %v, want at least 2, as many", m, h)
	}

	// A removed volume's series are gone; the other's stay.
	removeVolume(rel)
	s := scrape()
	for _, name := range []string{"sockrelay_volume_info", "sockrelay_connections_total", "sockrelay_bytes_total"} {
		if s.Has(name, "volume", rel) {
			t.Errorf("%s after the volume's removal: got %v, want no series of %s", name, s.Series(name), rel)
		}
	}
	if !s.Has("sockrelay_requests_total", pv...) {
		t.Errorf("requests of %s after another volume's removal: got %v, want them kept", pol, s.Series("sockrelay_requests_total"))
	}
}
