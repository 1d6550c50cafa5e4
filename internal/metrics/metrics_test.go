package metrics_test

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/sockrelay/sockrelay/internal/metrics"
	"github.com/sockrelay/sockrelay/internal/metrics/metricstest"
)

// scrape gets m's exposition through its handler and parses it.
func scrape(t *testing.T, m *metrics.Metrics) metricstest.Scrape {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	m.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("scrape: got status %d, want 200: %s", rec.Code, rec.Body)
	}
	s, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return s
}

func want(t *testing.T, s metricstest.Scrape, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := s.Value(name, labels...)
	if !ok {
		t.Errorf("%s%v: got no series (have %v), want %v", name, labels, s.Series(name), v)
		return
	}
	if got != v {
		t.Errorf("%s%v: got %v, want %v", name, labels, got, v)
	}
}

// A volume's live counters come from the server attached at the scrape,
// and the totals of the servers before it: they never go back when a
// volume is unmounted and mounted again.
func TestVolumeCountersOutliveServers(t *testing.T) {
	m := metrics.New()
	v := m.Volume("v1", "relay")
	first := metrics.Counts{Open: 2, Conns: 5, In: 100, Out: 1000, UpstreamFailures: 1}
	detach := v.Attach(metrics.Connections|metrics.UpstreamFailures, func() metrics.Counts { return first })
	s := scrape(t, m)
	want(t, s, 2, "sockrelay_connections_open", "volume", "v1", "mode", "relay")
	want(t, s, 5, "sockrelay_connections_total", "volume", "v1")
	want(t, s, 100, "sockrelay_bytes_total", "volume", "v1", "direction", "in")
	want(t, s, 1000, "sockrelay_bytes_total", "volume", "v1", "direction", "out")
	want(t, s, 1, "sockrelay_upstream_failures_total", "volume", "v1")
	if s.Has("sockrelay_policy_reloads_total", "volume", "v1") {
		t.Errorf("sockrelay_policy_reloads_total of a relay volume: got %v, want none", s.Series("sockrelay_policy_reloads_total"))
	}

	first.Open = 0
	detach()
	s = scrape(t, m)
	want(t, s, 0, "sockrelay_connections_open", "volume", "v1")
	want(t, s, 5, "sockrelay_connections_total", "volume", "v1")

	second := metrics.Counts{Open: 1, Conns: 3, In: 10, Out: 20}
	detach = m.Volume("v1", "relay").Attach(metrics.Connections|metrics.UpstreamFailures, func() metrics.Counts { return second })
	s = scrape(t, m)
	want(t, s, 1, "sockrelay_connections_open", "volume", "v1")
	want(t, s, 8, "sockrelay_connections_total", "volume", "v1")
	want(t, s, 110, "sockrelay_bytes_total", "volume", "v1", "direction", "in")
	want(t, s, 1020, "sockrelay_bytes_total", "volume", "v1", "direction", "out")
	detach()
}

// Requests are counted by decision and rule, with a latency histogram
// by decision; Forget drops every series of the volume, and only its.
func TestRequestsAndForget(t *testing.T) {
	m := metrics.New()
	p := m.Volume("p", "policy")
	p.Attach(metrics.Connections|metrics.Reloads, func() metrics.Counts { return metrics.Counts{Reloads: 2, ReloadRefusals: 1} })
	for range 3 {
		p.Request(true, "", 0, 10, time.Millisecond)
	}
	p.Request(false, "no-privileged", 100, 50, time.Millisecond)
	p.Request(false, "endpoint-not-allowed", 0, 50, 2*time.Second)
	p.Call(true, "")
	p.Call(false, "entitlement-not-allowed")
	other := m.Volume("q", "policy")
	other.Request(true, "", 0, 0, time.Millisecond)
	m.Volume("i", "idmap")

	s := scrape(t, m)
	want(t, s, 3, "sockrelay_requests_total", "volume", "p", "mode", "policy", "decision", "allow", "rule", "")
	want(t, s, 1, "sockrelay_requests_total", "volume", "p", "decision", "deny", "rule", "no-privileged")
	want(t, s, 1, "sockrelay_requests_total", "volume", "p", "decision", "deny", "rule", "endpoint-not-allowed")
	want(t, s, 3, "sockrelay_request_duration_seconds", "volume", "p", "decision", "allow")
	want(t, s, 2, "sockrelay_request_duration_seconds", "volume", "p", "decision", "deny")
	want(t, s, 1, "sockrelay_grpc_calls_total", "volume", "p", "decision", "allow")
	want(t, s, 1, "sockrelay_grpc_calls_total", "volume", "p", "decision", "deny", "rule", "entitlement-not-allowed")
	want(t, s, 2, "sockrelay_policy_reloads_total", "volume", "p")
	want(t, s, 1, "sockrelay_policy_reload_refusals_total", "volume", "p")
	want(t, s, 1, "sockrelay_volume_info", "volume", "i", "mode", "idmap")
	if s.Has("sockrelay_connections_total", "volume", "i") {
		t.Errorf("connections of an idmap volume: got %v, want none (nothing passes through the plugin)", s.Series("sockrelay_connections_total"))
	}

	m.Forget("p")
	s = scrape(t, m)
	for _, name := range []string{"sockrelay_requests_total", "sockrelay_request_duration_seconds", "sockrelay_grpc_calls_total",
		"sockrelay_volume_info", "sockrelay_connections_total", "sockrelay_policy_reloads_total"} {
		if s.Has(name, "volume", "p") {
			t.Errorf("%s after Forget: got %v, want no series of p", name, s.Series(name))
		}
	}
	want(t, s, 1, "sockrelay_requests_total", "volume", "q", "decision", "allow")

	// A volume made again under the same name starts from zero.
	m.Volume("p", "relay")
	s = scrape(t, m)
	if s.Has("sockrelay_requests_total", "volume", "p") {
		t.Errorf("requests of a volume made again: got %v, want none", s.Series("sockrelay_requests_total"))
	}
	want(t, s, 1, "sockrelay_volume_info", "volume", "p", "mode", "relay")
}

// Every VolumeDriver call is counted by method, its errors apart.
func TestDriverCalls(t *testing.T) {
	m := metrics.New()
	d := m.Driver(fakeDriver{})
	d.Create(&volume.CreateRequest{Name: "a"})
	d.Create(&volume.CreateRequest{Name: "bad"})
	d.Get(&volume.GetRequest{Name: "a"})
	d.Mount(&volume.MountRequest{Name: "a"})
	d.Unmount(&volume.UnmountRequest{Name: "a"})
	d.Capabilities()
	s := scrape(t, m)
	want(t, s, 2, "sockrelay_volumedriver_calls_total", "method", "Create")
	want(t, s, 1, "sockrelay_volumedriver_errors_total", "method", "Create")
	want(t, s, 2, "sockrelay_volumedriver_call_duration_seconds", "method", "Create")
	want(t, s, 1, "sockrelay_volumedriver_calls_total", "method", "Mount")
	want(t, s, 1, "sockrelay_volumedriver_calls_total", "method", "Capabilities")
	if s.Has("sockrelay_volumedriver_errors_total", "method", "Mount") {
		t.Errorf("errors of Mount: got %v, want none", s.Series("sockrelay_volumedriver_errors_total"))
	}
}

// A nil *Metrics (no METRICS_SOCKET) counts nothing and never fails.
func TestNil(t *testing.T) {
	var m *metrics.Metrics
	m.Call("Create", time.Second, nil)
	v := m.Volume("v", "relay")
	v.Attach(metrics.Connections, func() metrics.Counts { return metrics.Counts{} })()
	v.Request(true, "", 1, 1, time.Second)
	v.Call(true, "")
	m.Forget("v")
	if d := (fakeDriver{}); m.Driver(d) != volume.Driver(d) {
		t.Errorf("Driver of nil Metrics: got a wrapper, want the driver itself")
	}
}

type fakeDriver struct{}

func (fakeDriver) Create(r *volume.CreateRequest) error {
	if r.Name == "bad" {
		return errors.New("bad")
	}
	return nil
}
func (fakeDriver) List() (*volume.ListResponse, error) { return &volume.ListResponse{}, nil }
func (fakeDriver) Get(*volume.GetRequest) (*volume.GetResponse, error) {
	return &volume.GetResponse{}, nil
}
func (fakeDriver) Remove(*volume.RemoveRequest) error { return nil }
func (fakeDriver) Path(*volume.PathRequest) (*volume.PathResponse, error) {
	return &volume.PathResponse{}, nil
}
func (fakeDriver) Mount(*volume.MountRequest) (*volume.MountResponse, error) {
	return &volume.MountResponse{}, nil
}
func (fakeDriver) Unmount(*volume.UnmountRequest) error       { return nil }
func (fakeDriver) Capabilities() *volume.CapabilitiesResponse { return &volume.CapabilitiesResponse{} }

// BenchmarkRequest is what the policy proxy adds to each request when
// metrics are on.
func BenchmarkRequest(b *testing.B) {
	v := metrics.New().Volume("v", "policy")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v.Request(true, "", 0, 2, 100*time.Microsecond)
		}
	})
}
