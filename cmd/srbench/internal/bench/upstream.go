package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// blockSize is the unit of the pseudo-random stream and of the copies that
// read and write it.
const blockSize = 256 << 10

// maxTransfer bounds what one /download may ask for.
const maxTransfer = 1 << 40

// stream is the deterministic byte stream of /download and /upload: one
// block of ChaCha8 output, repeated, with the first 8 bytes of each block
// replaced by its index. No block repeats, so a lost, doubled or misplaced
// block changes the sha256, and writing the stream costs no more than
// writing a buffer: the bytes in flight are what is measured, not the
// generator.
type stream struct {
	block []byte
}

func newStream(seed uint64) *stream {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, blockSize)
	rand.NewChaCha8(key).Read(b)
	return &stream{block: b}
}

// writeTo writes the first n bytes of the stream to w.
func (s *stream) writeTo(w io.Writer, n int64) (int64, error) {
	buf := make([]byte, blockSize)
	copy(buf, s.block)
	var done int64
	for k := uint64(0); done < n; k++ {
		binary.BigEndian.PutUint64(buf, k)
		m, err := w.Write(buf[:min(n-done, blockSize)])
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// sum is the sha256 of the first n bytes of the stream.
func (s *stream) sum(n int64) [sha256.Size]byte {
	h := sha256.New()
	s.writeTo(h, n) // a hash never fails to write
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// UpstreamEnv names the environment variable that makes a program serve
// the synthetic upstream, on the socket it names, instead of doing its own
// work: Run starts the upstream so, in a process of its own, because that
// is what a relay sits between in real use (a client process and
// dockerd). An upstream inside the bench's own process would answer its
// direct clients without a single cross-process wakeup and flatter the
// direct figures. A program that runs Run must check this variable first
// and call ServeUpstream.
const UpstreamEnv = "SRBENCH_UPSTREAM"

// streamSeed makes the bench and its upstream process agree on the stream.
const streamSeed = 1

// ServeUpstream serves the synthetic upstream on the socket path until ctx
// ends:
//
//	GET  /_ping            "OK"
//	GET  /download?bytes=N the first N bytes of the stream
//	POST /upload           reads the body, answers "<sha256 hex> <count>\n"
//	GET  /_stats           the number of other connections open, "<n>\n"
func ServeUpstream(ctx context.Context, path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{stream: newStream(streamSeed)}
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

// upstream holds what the handlers of ServeUpstream share.
type upstream struct {
	stream *stream
	// active counts open connections; the memory figure asks for it
	// (/_stats) to know that every relayed connection reached the upstream.
	active atomic.Int64
}

func (u *upstream) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		u.active.Add(1)
	case http.StateClosed, http.StateHijacked:
		u.active.Add(-1)
	}
}

func (u *upstream) ping(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", "2")
	io.WriteString(w, "OK")
}

func (u *upstream) stats(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintf(w, "%d\n", u.active.Load()-1) // not this connection
}

func (u *upstream) download(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 || n > maxTransfer {
		http.Error(w, "bytes: want a count from 0 to 2^40", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	u.stream.writeTo(w, n) // a write error means the client left
}

func (u *upstream) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, blockSize))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
}

// upstreamActive asks the upstream on addr how many connections it holds,
// not counting the one asking.
func upstreamActive(ctx context.Context, addr string) (int64, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return 0, fmt.Errorf("upstream stats: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
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

// waitActive waits until the upstream on addr holds at least n connections.
func waitActive(ctx context.Context, addr string, n int64) error {
	for {
		got, err := upstreamActive(ctx, addr)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("upstream holds %d of %d connections: %w", got, n, err)
		}
	}
}
