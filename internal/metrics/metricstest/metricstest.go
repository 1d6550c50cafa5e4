// Package metricstest reads a scrape of Prometheus' text format for
// tests, with prometheus/common's own parser: a test checks the numbers a
// Prometheus server would read, not strings.
package metricstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is one scrape's metric families, by name.
type Scrape map[string]*dto.MetricFamily

// Parse reads a scrape in the text format.
func Parse(r io.Reader) (Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	return Scrape(fams), nil
}

// Get scrapes a metrics endpoint: unix:PATH or an http:// URL.
func Get(ctx context.Context, addr string) (Scrape, error) {
	client, url := http.DefaultClient, addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
		url = "http://metrics/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// The text format: a client that asks nothing may get another.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	return Parse(resp.Body)
}

// Value is the value of the series of name whose labels include labels
// (pairs of name and value): a counter's or gauge's value, a histogram's
// count. ok is false when no series matches; more than one is an error
// of the test, and panics.
func (s Scrape) Value(name string, labels ...string) (v float64, ok bool) {
	var found []*dto.Metric
	if fam := s[name]; fam != nil {
		for _, m := range fam.Metric {
			if matches(m, labels) {
				found = append(found, m)
			}
		}
	}
	switch len(found) {
	case 0:
		return 0, false
	case 1:
	default:
		panic(fmt.Sprintf("metricstest: %d series of %s match %v", len(found), name, labels))
	}
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// Has reports whether any series of name has labels.
func (s Scrape) Has(name string, labels ...string) bool {
	if fam := s[name]; fam != nil {
		for _, m := range fam.Metric {
			if matches(m, labels) {
				return true
			}
		}
	}
	return false
}

// Series lists the series of name, for messages.
func (s Scrape) Series(name string) []string {
	var out []string
	if fam := s[name]; fam != nil {
		for _, m := range fam.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out = append(out, "{"+strings.Join(ls, ",")+"}")
		}
	}
	sort.Strings(out)
	return out
}

// matches reports whether m has labels; as in Prometheus, a label that
// is absent has the value "".
func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		got := ""
		for _, l := range m.Label {
			if l.GetName() == labels[i] {
				got = l.GetValue()
				break
			}
		}
		if got != labels[i+1] {
			return false
		}
	}
	return true
}
