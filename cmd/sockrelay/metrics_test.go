package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/metrics/metricstest"
)

// startServe runs serve with args until the test ends, and waits for its
// socket to answer.
func startServe(t *testing.T, listen string, args []string, stdout io.Writer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, envOf(nil), stdout, io.Discard) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", listen); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("serve returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("serve: no socket at %s within 10s", listen)
		}
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not return within 10s of cancel")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// eventuallyScrape scrapes addr until ok says the scrape is the one
// expected, and returns it; it fails the test after 10 s with the last.
func eventuallyScrape(t *testing.T, addr string, ok func(metricstest.Scrape) bool) metricstest.Scrape {
	t.Helper()
	var s metricstest.Scrape
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s, err = metricstest.Get(t.Context(), addr); err == nil && ok(s) {
			return s
		}
	}
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return s
}

func value(s metricstest.Scrape, name string, labels ...string) float64 {
	v, _ := s.Value(name, labels...)
	return v
}

// serve --policy --metrics: after known traffic through the proxy to a
// fake daemon, the scrape counts each request by decision and rule, each
// connection, the bytes each way, and the policy file's reload and
// refused change.
func TestRunServeMetricsPolicy(t *testing.T) {
	dir, up, uln := upstreamListener(t)
	usrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong!") })}
	go usrv.Serve(uln)
	defer usrv.Close()
	pdir := filepath.Join(dir, "policies")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(pdir, "p.yaml"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("allow:\n  - {method: GET, path: /_ping}\n")
	listen, msock := filepath.Join(dir, "p.sock"), filepath.Join(dir, "m.sock")
	stop := startServe(t, listen, []string{"serve", "--listen", listen, "--target", up, "--policy", "file:p", "--policy-dir", pdir,
		"--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--perm", "0600", "--metrics", "unix:" + msock}, io.Discard)
	if fi, err := os.Lstat(msock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("metrics socket: got %v, %v, want a socket of mode 0660", fi, err)
	}

	// One connection a request, so that connections are known too.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", listen)
	}}}
	allowed, conns, in, out := 0, 1, 0, 0 // startServe's probe is a connection
	denied := map[string]int{}            // by rule
	ruleRE := regexp.MustCompile(`"sockrelay: ([a-z-]+): `)
	do := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://d"+path, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		conns++
		out += len(b)
		if resp.StatusCode == 200 {
			allowed++
			in += len(body)
		} else if m := ruleRE.FindSubmatch(b); m != nil {
			denied[string(m[1])]++
		} else {
			t.Fatalf("%s %s: got %d %q, want 200 or a refusal", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode
	}
	for range 3 {
		do("GET", "/_ping", "")
	}
	for range 2 {
		do("GET", "/version", "")
	}
	do("POST", "/containers/create", `{"Image":"x"}`)
	do("GET", "/x/../_ping", "")
	write("allow:\n  - {method: GET, path: /_ping}\n  - {method: GET, path: /version}\n")
	for deadline := time.Now().Add(15 * time.Second); do("GET", "/version", "") != 200; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("GET /version: still refused 15s after the policy file allowed it")
		}
	}
	write("allow:\n  - {method: GET, path: version}\n") // invalid: refused, the policy stays

	const m = "mode"
	s := eventuallyScrape(t, "unix:"+msock, func(s metricstest.Scrape) bool {
		return value(s, "sockrelay_policy_reload_refusals_total") == 1 && value(s, "sockrelay_connections_total") == float64(conns) &&
			value(s, "sockrelay_connections_open") == 0 && value(s, "sockrelay_bytes_total", "direction", "out") == float64(out)
	})
	vol := []string{"volume", "p.sock", m, "policy"}
	check := func(want float64, name string, labels ...string) {
		t.Helper()
		got, ok := s.Value(name, append(vol[:4:4], labels...)...)
		if !ok || got != want {
			t.Errorf("%s%v: got %v (present %v; series %v), want %v", name, labels, got, ok, s.Series(name), want)
		}
	}
	check(float64(allowed), "sockrelay_requests_total", "decision", "allow", "rule", "")
	check(float64(allowed), "sockrelay_request_duration_seconds", "decision", "allow")
	total := 0
	for rule, n := range denied {
		check(float64(n), "sockrelay_requests_total", "decision", "deny", "rule", rule)
		total += n
	}
	if len(denied) < 2 {
		t.Errorf("refusals by rule: got %v, want at least two rules (endpoint, path)", denied)
	}
	check(float64(total), "sockrelay_request_duration_seconds", "decision", "deny")
	check(float64(conns), "sockrelay_connections_total")
	check(0, "sockrelay_connections_open")
	check(float64(in), "sockrelay_bytes_total", "direction", "in")
	check(float64(out), "sockrelay_bytes_total", "direction", "out")
	check(1, "sockrelay_policy_reloads_total")
	check(1, "sockrelay_policy_reload_refusals_total")
	check(1, "sockrelay_volume_info")

	if err := stop(); err != nil {
		t.Errorf("serve: got %v, want nil", err)
	}
	if _, err := os.Lstat(msock); !os.IsNotExist(err) {
		t.Errorf("metrics socket after serve ended: got %v, want it removed", err)
	}
}

// serve --metrics on a relay: connections and bytes each way, from the
// relay's own counters, over TCP.
func TestRunServeMetricsRelay(t *testing.T) {
	dir, up, ln := upstreamListener(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.Write([]byte("!")) // one byte more out than in
			}()
		}
	}()
	// A free port: taken, and given back for serve to take.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pl.Addr().String()
	pl.Close()
	listen := filepath.Join(dir, "relay.sock")
	startServe(t, listen, []string{"serve", "--listen", listen, "--target", up,
		"--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--metrics", addr}, io.Discard)
	const n = 4
	for i := range n {
		c, err := net.Dial("unix", listen)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping" + strconv.Itoa(i)))
		c.(*net.UnixConn).CloseWrite()
		if b, err := io.ReadAll(c); err != nil || string(b) != "ping"+strconv.Itoa(i)+"!" {
			t.Fatalf("echo: got %q, %v", b, err)
		}
		c.Close()
	}
	s := eventuallyScrape(t, "http://"+addr+"/metrics", func(s metricstest.Scrape) bool {
		return value(s, "sockrelay_connections_open") == 0 && value(s, "sockrelay_bytes_total", "direction", "out") == 6*n
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sockrelay_connections_total", nil, n + 1}, // and startServe's probe
		{"sockrelay_connections_open", nil, 0},
		{"sockrelay_bytes_total", []string{"direction", "in"}, 5 * n},
		{"sockrelay_bytes_total", []string{"direction", "out"}, 6 * n},
		{"sockrelay_upstream_failures_total", nil, 0},
	} {
		labels := append([]string{"volume", "relay.sock", "mode", "relay"}, c.labels...)
		if got, ok := s.Value(c.name, labels...); !ok || got != c.want {
			t.Errorf("%s%v: got %v (present %v; series %v), want %v", c.name, c.labels, got, ok, s.Series(c.name), c.want)
		}
	}
	if s.Has("sockrelay_requests_total") {
		t.Errorf("requests of a relay: got %v, want none (the relay reads no requests)", s.Series("sockrelay_requests_total"))
	}
}

// A metrics address that is taken stops serve before it makes its
// socket: bad input changes nothing.
func TestRunServeMetricsTaken(t *testing.T) {
	dir, up, _ := upstreamListener(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := filepath.Join(dir, "busy.sock")
	bl, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	for _, addr := range []string{taken.Addr().String(), "unix:" + busy, "unix:" + filepath.Join(dir, "nodir", "m.sock")} {
		listen := filepath.Join(dir, "relay.sock")
		err := run(t.Context(), []string{"serve", "--listen", listen, "--target", up, "--metrics", addr}, envOf(nil), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--metrics") {
			t.Errorf("serve --metrics %s: got %v, want an error naming --metrics", addr, err)
		}
		if _, err := os.Lstat(listen); !os.IsNotExist(err) {
			t.Errorf("serve --metrics %s: socket %s: got %v, want none made", addr, listen, err)
		}
	}
	if c, err := net.Dial("unix", busy); err != nil {
		t.Errorf("the busy socket after: got %v, want it still served", err)
	} else {
		c.Close()
	}
}
