package apiproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

func dialProxy(t *testing.T, sock string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UnixConn)
}

// readAnswer reads one response on c and its body.
func readAnswer(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A client that shuts its write side after its request (docker wait,
// attach without stdin) has not left: it gets its answer, however long
// the daemon takes.
func TestHalfClosedClientGetsItsAnswer(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, _ := serveProxy(t, dir, u.sock, "full", Limits{}, nil)
	c := dialProxy(t, sock)
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: d\r\n\r\n")
	c.CloseWrite()
	resp, body := readAnswer(t, bufio.NewReader(c))
	if resp.StatusCode != 200 || body != "OK" {
		t.Fatalf("got %d %q, want 200 OK", resp.StatusCode, body)
	}
}

// A client that leaves while the daemon has not answered takes the
// daemon's connection with it, so that the daemon cancels the request:
// at once when it leaves after the watch has begun, at the watch's start
// when it leaves before, and when a half-closed client leaves for good.
func TestVanishedClientClosesDaemonConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sleep time.Duration // after the daemon has the request, before the client leaves
		half  bool          // the client half-closes first
	}{
		{"after the watch began", 4 * watchAfter, false},
		{"before the watch began", 0, false},
		{"after a half-close", 4 * watchAfter, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tempDir(t)
			u := newRawUpstream(t, dir)
			sock, p := serveProxy(t, dir, u.sock, "full", Limits{}, nil)
			c := dialProxy(t, sock)
			io.WriteString(c, "POST /containers/x/wait HTTP/1.1\r\nHost: d\r\n\r\n")
			select {
			case <-u.waiting:
			case <-time.After(5 * time.Second):
				t.Fatal("the daemon did not get the request")
			}
			if tc.half {
				c.CloseWrite()
			}
			time.Sleep(tc.sleep)
			select {
			case <-u.waitEnd:
				t.Fatal("the daemon's connection closed while the client was there")
			default:
			}
			left := time.Now()
			c.Close()
			select {
			case <-u.waitEnd:
			case <-time.After(5 * time.Second):
				t.Fatal("the daemon's connection is still open 5 s after its client left")
			}
			t.Logf("daemon connection closed %v after the client left", time.Since(left).Round(time.Millisecond))
			if d := time.Since(left); d > watchAfter+time.Second {
				t.Fatalf("the daemon's connection closed %v after the client left, want within %v", d, watchAfter+time.Second)
			}
			waitFor(t, "the client connection to end", func() bool { return p.Stats.Active.Load() == 0 })
		})
	}
}

// Connections over the limit are answered 503 and closed, and the next
// one after a connection ends is served.
func TestConnectionLimit(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	const limit = 3
	sock, p := serveProxy(t, dir, u.sock, "full", Limits{Conns: limit}, nil)
	var held []*net.UnixConn
	for range limit {
		c := dialProxy(t, sock)
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
		readAnswer(t, bufio.NewReader(c))
		held = append(held, c)
	}
	resp, body, closed := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
	want := fmt.Sprintf("sockrelay: %s: this socket has as many connections open as it may (%d)", ruleTooManyConns, limit)
	if resp.StatusCode != 503 || !strings.Contains(body, want) || !closed {
		t.Fatalf("over the limit: got %d %q (closed %v), want 503 %q and the connection closed", resp.StatusCode, body, closed, want)
	}
	held[0].Close()
	waitFor(t, "a connection to end", func() bool { return p.Stats.Active.Load() == limit-1 })
	resp, body, _ = once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "OK" {
		t.Fatalf("under the limit again: got %d %q, want 200 OK", resp.StatusCode, body)
	}

	// The shared limit holds across proxies.
	shared := NewShared(2, DefaultSharedBodyBytes)
	dir2 := tempDir(t)
	sockA, _ := serveProxy(t, dir2, u.sock, "full", Limits{}, shared)
	dir3 := tempDir(t)
	sockB, _ := serveProxy(t, dir3, u.sock, "full", Limits{}, shared)
	for _, s := range []string{sockA, sockB} {
		c := dialProxy(t, s)
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
		readAnswer(t, bufio.NewReader(c))
	}
	if resp, _, _ := once(t, sockA, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"); resp.StatusCode != 503 {
		t.Fatalf("over the shared limit: got %d, want 503", resp.StatusCode)
	}
}

// Inspected bodies take memory from the budgets as they arrive; a
// request that finds none within budgetWait is refused 503, and once
// memory is given back requests are served again.
func TestBodyBudget(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	sock, p := serveProxy(t, dir, u.sock, "no-escalation", Limits{BodyBytes: 2 * policy.MaxBody}, nil)
	head := fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", policy.MaxBody)
	var parked []*net.UnixConn
	for range 2 {
		c := dialProxy(t, sock)
		io.WriteString(c, head+`{"Image":"`+strings.Repeat("x", policy.MaxBody-100))
		parked = append(parked, c)
	}
	waitFor(t, "the parked bodies to take the budget", func() bool { return p.bodies.inUse() == 2*policy.MaxBody })
	small := "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"Image\":\"x\"}"
	start := time.Now()
	resp, body, _ := once(t, sock, small)
	want := "sockrelay: " + ruleBusy + ": the request bodies the policy inspects hold all the memory they may (2 MiB on this socket"
	if resp.StatusCode != 503 || !strings.Contains(body, want) {
		t.Fatalf("with the budget taken: got %d %q, want 503 %q", resp.StatusCode, body, want)
	}
	if d := time.Since(start); d < budgetWait {
		t.Fatalf("refused after %v, want a wait of %v first", d, budgetWait)
	}
	parked[0].Close()
	waitFor(t, "the budget to be given back", func() bool { return p.bodies.inUse() == policy.MaxBody })
	if resp, body, _ := once(t, sock, small); resp.StatusCode != 200 {
		t.Fatalf("with budget again: got %d %q, want 200", resp.StatusCode, body)
	}
	parked[1].Close()
	waitFor(t, "all the budget to be given back", func() bool { return p.bodies.inUse() == 0 && p.shared.bodies.inUse() == 0 })
}

// A request's head, and a body the policy reads, must arrive in time; a
// kept-alive connection may stay idle between requests.
func TestDeadlines(t *testing.T) {
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	const limit = 200 * time.Millisecond
	sock, _ := serveProxy(t, dir, u.sock, "no-escalation", Limits{HeadTimeout: limit, BodyTimeout: limit}, nil)
	for _, tc := range []struct{ name, raw, want string }{
		{"half a head", "GET /_ping HTTP/1.1\r\nHo", "sockrelay: timeout: the request head did not arrive within 200ms"},
		{"half a body", "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 100\r\n\r\n{\"Im", "sockrelay: timeout: the request body did not arrive within 200ms"},
	} {
		start := time.Now()
		resp, body, closed := once(t, sock, tc.raw)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, tc.want) || !closed {
			t.Fatalf("%s: got %d %q (closed %v), want 408 %q and the connection closed", tc.name, resp.StatusCode, body, closed, tc.want)
		}
		if d := time.Since(start); d > limit+time.Second {
			t.Fatalf("%s: answered after %v, want about %v", tc.name, d, limit)
		}
	}

	c := dialProxy(t, sock) // sends nothing
	c.SetReadDeadline(time.Now().Add(limit + 2*time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a connection that sends nothing: read %v, want EOF", err)
	}

	c = dialProxy(t, sock)
	br := bufio.NewReader(c)
	for i := range 2 {
		if i > 0 {
			time.Sleep(2 * limit) // idle between requests
		}
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
		if resp, body := readAnswer(t, br); resp.StatusCode != 200 || body != "OK" {
			t.Fatalf("request %d on a kept-alive connection: got %d %q", i, resp.StatusCode, body)
		}
	}
}
