// Package metrics exposes what the plugin and its volumes do in
// Prometheus' text format, through client_golang with a registry of its
// own (never the global one: a test, or a second proxy in one process,
// gets a clean set).
//
// It counts as little as it can on the paths that move bytes. The
// counters a proxy or relay already keeps for a volume's Status
// (apiproxy.Stats, relay.Stats, policy.Live's reloads) are read when a
// scrape comes, by a Collector, through the function a volume's server
// attaches (Volume.Attach): connections open and accepted, bytes each
// way, reloads. So the splice relay does no work of its own for metrics:
// its bytes are the two atomic adds per connection it made for Status
// (split by direction), counted when the connection ends, so a
// long-lived stream's bytes show when it ends. What Stats cannot say
// (requests by decision and rule, their latency, gRPC calls) is counted
// per request by the policy proxy through Volume.Request and Volume.Call,
// with the labelled children cached per volume so a request costs a map
// lookup, an atomic add and a histogram observation.
//
// Measured: BenchmarkRequest (here) puts that at about 150 ns a request,
// against tens of microseconds for a ping through the proxy. The relay's
// only change is a second atomic add when a connection ends;
// internal/relay's BenchmarkPipeConnect and BenchmarkPipeRoundTrip, run
// before and after the change in turn, three rounds each, on a busy
// 2-core machine, gave relay-to-direct ratios whose spread (0.9 to 2.0,
// even for the kept-alive round trip, whose path did not change) hid any
// difference: none that machine could resolve. With METRICS_SOCKET unset
// the plugin makes no registry, and counts nothing more than Status does.
//
// A volume's counters outlive its servers: a server stopped at the last
// Unmount adds its totals to the volume's, so the counters never go back
// at the next Mount. Forget, at the volume's Remove, drops every series
// of the volume.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the registry of one process, and the series it exports.
// A nil *Metrics counts nothing: every method is safe to call on it.
type Metrics struct {
	reg *prometheus.Registry

	calls     *prometheus.CounterVec
	callErrs  *prometheus.CounterVec
	callTime  *prometheus.HistogramVec
	requests  *prometheus.CounterVec
	reqTime   *prometheus.HistogramVec
	grpcCalls *prometheus.CounterVec

	mu   sync.Mutex
	vols map[string]*Volume
}

// The labels of a volume's series.
var volumeLabels = []string{"volume", "mode"}

// latencyBuckets span a ping through the proxy (well under a
// millisecond) to a long pull or a stream that lasts minutes.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 4, 10)

// New makes an empty registry with the process's Go runtime and process
// collectors, and the series of sockrelay.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockrelay_volumedriver_calls_total",
			Help: "VolumeDriver calls from dockerd, by method.",
		}, []string{"method"}),
		callErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockrelay_volumedriver_errors_total",
			Help: "VolumeDriver calls answered with an error, by method.",
		}, []string{"method"}),
		callTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockrelay_volumedriver_call_duration_seconds",
			Help:    "How long VolumeDriver calls took, by method.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockrelay_requests_total",
			Help: "API requests through a policy volume, by decision (allow or deny) and rule (empty when allowed).",
		}, append(volumeLabels, "decision", "rule")),
		reqTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sockrelay_request_duration_seconds",
			Help:    "How long API requests through a policy volume took, from the request's first byte to the answer's last (a stream's whole life), by decision.",
			Buckets: latencyBuckets,
		}, append(volumeLabels, "decision")),
		grpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockrelay_grpc_calls_total",
			Help: "BuildKit gRPC calls followed through a policy volume, by decision and rule.",
		}, append(volumeLabels, "decision", "rule")),
		vols: map[string]*Volume{},
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.calls, m.callErrs, m.callTime, m.requests, m.reqTime, m.grpcCalls,
		volumesCollector{m},
	)
	return m
}

// Registry is the registry, for tests that gather from it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus' exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// Call counts one VolumeDriver call: its method, how long it took, and
// whether it failed.
func (m *Metrics) Call(method string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(method).Inc()
	m.callTime.WithLabelValues(method).Observe(d.Seconds())
	if err != nil {
		m.callErrs.WithLabelValues(method).Inc()
	}
}

// Volume is the series of the volume name served in mode, made at its
// first use. A nil *Metrics gives a nil *Volume, which counts nothing.
func (m *Metrics) Volume(name, mode string) *Volume {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vols[name]
	if v == nil || v.mode != mode {
		if v != nil {
			m.deleteSeries(name)
		}
		v = &Volume{m: m, name: name, mode: mode}
		m.vols[name] = v
	}
	return v
}

// Forget drops every series of the volume name: it was removed.
func (m *Metrics) Forget(name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.vols, name)
	m.deleteSeries(name)
}

func (m *Metrics) deleteSeries(name string) {
	l := prometheus.Labels{"volume": name}
	m.requests.DeletePartialMatch(l)
	m.reqTime.DeletePartialMatch(l)
	m.grpcCalls.DeletePartialMatch(l)
}

// Counts are the live counters of a volume's server, as its Status
// keeps them. Open is a gauge; the others only grow while the server runs.
type Counts struct {
	Open             int64  // connections open now
	Conns            uint64 // connections accepted
	In, Out          uint64 // bytes to the upstream, and from it
	UpstreamFailures uint64 // connections closed because the upstream was down
	Reloads          uint64 // policy file changes put in force
	ReloadRefusals   uint64 // policy file changes refused
}

func (c Counts) plus(o Counts) Counts {
	return Counts{
		Open: c.Open + o.Open, Conns: c.Conns + o.Conns, In: c.In + o.In, Out: c.Out + o.Out,
		UpstreamFailures: c.UpstreamFailures + o.UpstreamFailures,
		Reloads:          c.Reloads + o.Reloads, ReloadRefusals: c.ReloadRefusals + o.ReloadRefusals,
	}
}

// Volume is one volume's series.
type Volume struct {
	m          *Metrics
	name, mode string

	mu   sync.Mutex
	kept Kept          // what its servers count; 0: never attached
	base Counts        // the totals of servers stopped
	live func() Counts // the server running; nil: none

	children sync.Map // outcome -> *requestSeries
}

type outcome struct {
	allow bool
	rule  string
	grpc  bool
}

type requestSeries struct {
	count prometheus.Counter
	time  prometheus.Observer // nil for a gRPC call
}

// Kept says which of Counts a server keeps.
type Kept uint8

const (
	// Connections: Open, Conns, In and Out.
	Connections Kept = 1 << iota
	// UpstreamFailures: UpstreamFailures.
	UpstreamFailures
	// Reloads: Reloads and ReloadRefusals.
	Reloads
)

// Attach makes live the source of the volume's live counters, those
// kept says, while its server runs. The detach it returns, called once
// the server has stopped, keeps the server's totals in the volume's.
func (v *Volume) Attach(kept Kept, live func() Counts) (detach func()) {
	if v == nil {
		return func() {}
	}
	v.mu.Lock()
	v.kept |= kept
	v.live = live
	v.mu.Unlock()
	return func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		c := live()
		c.Open = 0
		v.base = v.base.plus(c)
		v.live = nil
	}
}

func (v *Volume) counts() (Kept, Counts) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.live == nil {
		return v.kept, v.base
	}
	return v.kept, v.base.plus(v.live())
}

// Request counts one request through the volume's policy proxy.
func (v *Volume) Request(allow bool, rule string, in, out int64, d time.Duration) {
	if v == nil {
		return
	}
	s := v.series(outcome{allow: allow, rule: rule})
	s.count.Inc()
	s.time.Observe(d.Seconds())
}

// Call counts one gRPC call of a stream the policy follows.
func (v *Volume) Call(allow bool, rule string) {
	if v == nil {
		return
	}
	v.series(outcome{allow: allow, rule: rule, grpc: true}).count.Inc()
}

func (v *Volume) series(o outcome) *requestSeries {
	if s, ok := v.children.Load(o); ok {
		return s.(*requestSeries)
	}
	d := decision(o.allow)
	var s requestSeries
	if o.grpc {
		s.count = v.m.grpcCalls.WithLabelValues(v.name, v.mode, d, o.rule)
	} else {
		s.count = v.m.requests.WithLabelValues(v.name, v.mode, d, o.rule)
		s.time = v.m.reqTime.WithLabelValues(v.name, v.mode, d)
	}
	got, _ := v.children.LoadOrStore(o, &s)
	return got.(*requestSeries)
}

func decision(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// volumesCollector reads the live counters of every volume at a scrape.
type volumesCollector struct{ m *Metrics }

var (
	descInfo = prometheus.NewDesc("sockrelay_volume_info",
		"A volume this process has served since it started, with its mode; 1.", volumeLabels, nil)
	descOpen = prometheus.NewDesc("sockrelay_connections_open",
		"Client connections open now (relay and policy volumes).", volumeLabels, nil)
	descConns = prometheus.NewDesc("sockrelay_connections_total",
		"Client connections accepted (relay and policy volumes).", volumeLabels, nil)
	descBytes = prometheus.NewDesc("sockrelay_bytes_total",
		"Bytes relayed, by direction: in is to the daemon, out is from it; policy volumes count bodies and streams, relay volumes every byte. Counted when a request (policy) or a connection (relay) ends.",
		append(volumeLabels, "direction"), nil)
	descUpFail = prometheus.NewDesc("sockrelay_upstream_failures_total",
		"Client connections closed because the daemon's socket did not answer (relay volumes).", volumeLabels, nil)
	descReloads = prometheus.NewDesc("sockrelay_policy_reloads_total",
		"Changes of a policy file put in force.", volumeLabels, nil)
	descRefused = prometheus.NewDesc("sockrelay_policy_reload_refusals_total",
		"Changes of a policy file refused (invalid); the policy in force stayed.", volumeLabels, nil)
)

func (volumesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descOpen, descConns, descBytes, descUpFail, descReloads, descRefused} {
		ch <- d
	}
}

func (c volumesCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	vols := make([]*Volume, 0, len(c.m.vols))
	for _, v := range c.m.vols {
		vols = append(vols, v)
	}
	c.m.mu.Unlock()
	for _, v := range vols {
		n, m := v.name, v.mode
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, n, m)
		kept, k := v.counts()
		if kept&Connections != 0 {
			ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(k.Open), n, m)
			ch <- prometheus.MustNewConstMetric(descConns, prometheus.CounterValue, float64(k.Conns), n, m)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(k.In), n, m, "in")
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(k.Out), n, m, "out")
		}
		if kept&UpstreamFailures != 0 {
			ch <- prometheus.MustNewConstMetric(descUpFail, prometheus.CounterValue, float64(k.UpstreamFailures), n, m)
		}
		if kept&Reloads != 0 {
			ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(k.Reloads), n, m)
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(k.ReloadRefusals), n, m)
		}
	}
}

// Serve answers scrapes on ln until ctx ends; it closes ln, and returns
// once every scrape in flight has ended, or after a grace of 2 s.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
