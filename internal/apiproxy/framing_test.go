package apiproxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// goDaemon is a fake daemon on Go's own HTTP server, dockerd's parser.
// It counts its open connections. /upload reads its body; /build answers
// at once, in full duplex, and reads its body only after (as a handler
// that refuses a build before reading its context does).
type goDaemon struct {
	sock string
	open atomic.Int64
}

func newGoDaemon(t *testing.T, dir string) *goDaemon {
	t.Helper()
	d := &goDaemon{sock: filepath.Join(dir, "go.sock")}
	ln, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		io.WriteString(w, string(b))
	})
	mux.HandleFunc("/build", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"message":"no build today"}`)
	})
	srv := &http.Server{Handler: mux, ConnState: func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			d.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			d.open.Add(-1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

func startProxy(t *testing.T, dir, upstream string) (string, *Proxy) {
	t.Helper()
	return serveProxy(t, dir, upstream, "full", Limits{}, nil)
}

// serveProxy serves preset in front of upstream, within lim and shared
// (nil: a budget of the default size of its own, untouched by other
// tests).
func serveProxy(t *testing.T, dir, upstream, preset string, lim Limits, shared *Shared) (string, *Proxy) {
	t.Helper()
	sock := filepath.Join(dir, "p.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	if shared == nil {
		shared = NewShared(DefaultSharedConns, DefaultSharedBodyBytes)
	}
	p := &Proxy{
		Volume: "v", Upstream: upstream, Policy: func() *policy.Policy { return pol },
		Log: slog.New(slog.DiscardHandler), Audit: audit.New(io.Discard), Stats: &Stats{},
		Limits: lim, Shared: shared,
	}
	p.init() // before the test reads the budgets
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock, p
}

// Chunked bodies that Go's server reads otherwise than the old pass-through
// did are refused at once: nothing hangs, the daemon's connection is
// closed rather than kept, and the next client is served.
func TestHostileChunkedBodies(t *testing.T) {
	for _, tc := range []struct{ name, target, body string }{
		{"bare LF ends the trailer", "/upload", "5\r\nhello\r\n0\r\n\n"},
		{"CR and LF only trailer line", "/upload", "5\r\nhello\r\n0\r\n\r\r\n"},
		{"size that overflows", "/upload", "7fffffffffffffff\r\n0\r\n\r\n"},
		{"trailer line to an early answer", "/build", "5\r\nhello\r\n0\r\n\r\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tempDir(t)
			d := newGoDaemon(t, dir)
			sock, p := startProxy(t, dir, d.sock)
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "POST "+tc.target+" HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.body)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			if tc.target == "/upload" && (resp.StatusCode != 400 || !strings.Contains(string(b), "sockrelay: ")) {
				t.Fatalf("got %d %s, want the proxy's 400", resp.StatusCode, b)
			}
			c.Close()
			waitFor(t, "the client connection to end", func() bool { return p.Stats.Active.Load() == 0 })
			waitFor(t, "the daemon to see its connection closed", func() bool { return d.open.Load() == 0 })
			if got := p.IdleUpstreams(); got != 0 {
				t.Fatalf("idle upstreams: got %d, want 0", got)
			}
			resp, body, _ := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 || body != "OK" {
				t.Fatalf("the next client: got %d %q, want 200 OK", resp.StatusCode, body)
			}
		})
	}
}

// A daemon connection whose answer came before the request's body was
// all sent is not pooled, even when the body was well framed: the daemon
// may not have read it, and may close the connection under the next
// client's request.
func TestEarlyAnswerNotPooled(t *testing.T) {
	for _, tc := range []struct{ name, head, body string }{
		{"chunked", "Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"},
		{"length", "Content-Length: 5", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tempDir(t)
			u := newRawUpstream(t, dir)
			sock, p, _ := startPooled(t, dir, u, "full")
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: d\r\n"+tc.head+"\r\n\r\n")
			select {
			case <-u.answered:
			case <-time.After(5 * time.Second):
				t.Fatal("the daemon did not answer")
			}
			io.WriteString(c, tc.body)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("got %v %v, want 200", resp, err)
			}
			io.ReadAll(resp.Body)
			c.Close()
			waitFor(t, "the client connection to end", func() bool { return p.Stats.Active.Load() == 0 })
			if got := p.IdleUpstreams(); got != 0 {
				t.Fatalf("idle upstreams after an early answer: got %d, want 0", got)
			}
			resp, body, _ := once(t, sock, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 || body != "OK" {
				t.Fatalf("the next client: got %d %q, want 200 OK", resp.StatusCode, body)
			}
		})
	}
}
