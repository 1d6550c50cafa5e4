// Package upstream is the bench's synthetic upstream: an HTTP server on a
// Unix socket that answers pings, serves and takes a deterministic byte
// stream whose sha256 either end can check, and counts its open
// connections.
package upstream

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Env names the environment variable that makes a program serve the
// upstream, on the socket it names, instead of doing its own work: the
// bench starts the upstream so, in a process of its own, because that is
// what a relay sits between in real use (a client process and dockerd).
// An upstream inside the bench's own process would answer its direct
// clients without a single cross-process wakeup and flatter the direct
// figures. A program that runs the bench must check this variable first
// and call Serve.
const Env = "SRBENCH_UPSTREAM"

// statsTimeout bounds a question to the upstream, so that a stuck one
// cannot hang the bench.
const statsTimeout = 30 * time.Second

// Serve serves the upstream on the socket path until ctx ends:
//
//	GET  /_ping            "OK"
//	GET  /download?bytes=N the first N bytes of the stream of Seed
//	POST /upload           reads the body, answers "<sha256 hex> <count>\n"
//	GET  /_stats           the number of other connections open, "<n>\n"
func Serve(ctx context.Context, path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	u := &server{stream: NewStream(Seed)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", u.ping)
	mux.HandleFunc("GET /download", u.download)
	mux.HandleFunc("POST /upload", u.upload)
	mux.HandleFunc("GET /_stats", u.stats)
	srv := &http.Server{
		Handler:   mux,
		ConnState: u.connState,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("upstream: %w", err)
	}
	return nil
}

// server holds what the handlers of Serve share.
type server struct {
	stream *Stream
	// active counts open connections; the memory figure asks for it
	// (/_stats) to know that every relayed connection reached the upstream.
	active atomic.Int64
}

func (u *server) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		u.active.Add(1)
	case http.StateClosed, http.StateHijacked:
		u.active.Add(-1)
	}
}

func (u *server) ping(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", "2")
	io.WriteString(w, "OK")
}

func (u *server) stats(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintf(w, "%d\n", u.active.Load()-1) // not this connection
}

func (u *server) download(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 || n > MaxTransfer {
		http.Error(w, "bytes: want a count from 0 to 2^40", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	u.stream.WriteN(w, n) // a write error means the client left
}

func (u *server) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, BlockSize))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
}

// Active asks the upstream on addr how many connections it holds, not
// counting the one asking.
func Active(ctx context.Context, addr string) (int64, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", addr)
	if err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(statsTimeout))
	if _, err := io.WriteString(c, "GET /_stats HTTP/1.1\r\nHost: sockrelay-bench\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("upstream stats: got %s %q", resp.Status, b)
	}
	return n, nil
}
