package driver

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/metrics/metricstest"
)

// A relay volume's metrics count its connections and bytes across an
// Unmount and the next Mount (a new server), and go with its Remove.
func TestMetricsFollowVolume(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	m := metrics.New()
	e.modes = Modes(ModeDeps{Log: testLog(t), Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, Config{
		Log: testLog(t), Store: e.store, Owner: e.res, VolumeRoot: e.volRoot,
		HostSocketDir: "/var/run", SocketDirMount: e.sockDir, Modes: e.modes, Metrics: m,
	})
	if err != nil {
		cancel()
		t.Fatalf("New: got %v, want nil", err)
	}
	defer func() {
		d.Close()
		cancel()
	}()
	scrape := func() metricstest.Scrape {
		t.Helper()
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		s, err := metricstest.Parse(rec.Body)
		if err != nil {
			t.Fatalf("parse the scrape: %v", err)
		}
		return s
	}
	v := []string{"volume", "v", "mode", "relay"}
	want := func(s metricstest.Scrape, want float64, name string, labels ...string) {
		t.Helper()
		if got, ok := s.Value(name, append(v[:4:4], labels...)...); !ok || got != want {
			t.Errorf("%s%v: got %v (present %v; %v), want %v", name, labels, got, ok, s.Series(name), want)
		}
	}

	create(t, d, "v", map[string]string{"mode": "relay"})
	mount(t, d, "v", "id1")
	ping(t, e.sockPath("v"))
	ping(t, e.sockPath("v"))
	unmount(t, d, "v", "id1") // the server stops: its counts stay
	s := scrape()
	want(s, 2, "sockrelay_connections_total")
	want(s, 0, "sockrelay_connections_open")
	want(s, 8, "sockrelay_bytes_total", "direction", "in")
	want(s, 8, "sockrelay_bytes_total", "direction", "out")
	want(s, 1, "sockrelay_volume_info")

	mount(t, d, "v", "id2")
	ping(t, e.sockPath("v"))
	unmount(t, d, "v", "id2")
	s = scrape()
	want(s, 3, "sockrelay_connections_total")
	want(s, 12, "sockrelay_bytes_total", "direction", "in")

	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove: got %v, want nil", err)
	}
	s = scrape()
	for _, name := range []string{"sockrelay_volume_info", "sockrelay_connections_total", "sockrelay_bytes_total"} {
		if s.Has(name, "volume", "v") {
			t.Errorf("%s after Remove: got %v, want no series of v", name, s.Series(name))
		}
	}
}
