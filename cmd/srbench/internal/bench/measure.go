package bench

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
)

const (
	// ioTimeout bounds every request, so a stuck peer cannot hang the bench.
	ioTimeout = 30 * time.Second
	// pollInterval is how often the bench looks at a condition it waits for.
	pollInterval = 20 * time.Millisecond
)

var (
	pingClose     = []byte("GET /_ping HTTP/1.1\r\nHost: sockrelay-bench\r\nConnection: close\r\n\r\n")
	pingKeepAlive = []byte("GET /_ping HTTP/1.1\r\nHost: sockrelay-bench\r\n\r\n")
)

// errChecksum marks transferred bytes that are not the bytes sent: a bug,
// never a figure.
var errChecksum = errors.New("sha256 mismatch")

func dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", addr)
}

// dialPatient dials, retrying for a while when the listen backlog is full
// (EAGAIN): socat's backlog of 5 overflows under any concurrency, and the
// figures that call this are not about failed connects.
func dialPatient(ctx context.Context, addr string) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dial(ctx, addr)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return c, err
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readPing reads one answer to GET /_ping: 200 and "OK".
func readPing(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		return fmt.Errorf("ping: got %s %q, want 200 \"OK\"", resp.Status, body)
	}
	return nil
}

// pingNew sends one ping on a new connection.
func pingNew(ctx context.Context, addr string) error {
	return pingWithin(ctx, addr, ioTimeout)
}

// pingWithin sends one ping on a new connection and waits at most timeout
// for the answer.
func pingWithin(ctx context.Context, addr string, timeout time.Duration) error {
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(pingClose); err != nil {
		return err
	}
	return readPing(bufio.NewReaderSize(c, 1024))
}

// pingResult is one new-connection ping measurement.
type pingResult struct {
	rate   float64 // answered pings per second
	ok     int     // answered pings
	failed int     // requests that failed (connect refused, reset, bad answer)
}

// pingRate runs clients loops of new-connection pings for d.
func pingRate(ctx context.Context, addr string, clients int, d time.Duration) (pingResult, error) {
	return pingRateWithin(ctx, addr, clients, d, ioTimeout)
}

// pingRateWithin is pingRate with each request bounded by timeout: a
// daemon that stops answering holds the figure up no longer than that.
func pingRateWithin(ctx context.Context, addr string, clients int, d, timeout time.Duration) (pingResult, error) {
	return rate(ctx, clients, d, func() error { return pingWithin(ctx, addr, timeout) })
}

// getRateWithin runs clients loops of GET path, each on a new connection
// and bounded by timeout, for d: the rate of a daemon's API call.
func getRateWithin(ctx context.Context, addr, path string, clients int, d, timeout time.Duration) (pingResult, error) {
	return rate(ctx, clients, d, func() error { return getWithin(ctx, addr, path, timeout) })
}

// getWithin sends GET path on a new connection and reads the answer,
// which must be 200, within timeout.
func getWithin(ctx context.Context, addr, path string, timeout time.Duration) error {
	c, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20)); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: got %s, want 200", path, resp.Status)
	}
	return nil
}

// rate runs clients loops of one for d, and counts the requests answered
// and failed.
func rate(ctx context.Context, clients int, d time.Duration, one func() error) (pingResult, error) {
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(stop) {
				if err := one(); err != nil {
					failed.Add(1)
					sleep(ctx, time.Millisecond) // do not spin on a full backlog
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return pingResult{}, err
	}
	return pingResult{rate: float64(ok.Load()) / time.Since(start).Seconds(), ok: int(ok.Load()), failed: int(failed.Load())}, nil
}

// keepAliveRate sends pings one after the other on one connection for d.
func keepAliveRate(ctx context.Context, addr string, d time.Duration) (float64, error) {
	c, err := dialPatient(ctx, addr)
	if err != nil {
		return 0, fmt.Errorf("kept-alive ping: %w", err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	br := bufio.NewReaderSize(c, 1024)
	n := 0
	start := time.Now()
	stop := start.Add(d)
	for time.Now().Before(stop) {
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(pingKeepAlive); err != nil {
			return 0, fmt.Errorf("kept-alive ping %d: %w", n+1, ctxErr(ctx, err))
		}
		if err := readPing(br); err != nil {
			return 0, fmt.Errorf("kept-alive ping %d: %w", n+1, ctxErr(ctx, err))
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// ctxErr prefers the context's error: a connection closed because the
// bench is stopping is not a failure of the peer.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

const mib = 1 << 20

// download fetches n bytes of the stream, checks their sha256 against
// want, and returns MiB/s.
func download(ctx context.Context, addr string, n int64, want [sha256.Size]byte) (float64, error) {
	c, err := dialPatient(ctx, addr)
	if err != nil {
		return 0, fmt.Errorf("download: %w", err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	c.SetDeadline(time.Now().Add(ioTimeout + time.Duration(n/mib)*10*time.Millisecond))
	start := time.Now()
	if _, err := fmt.Fprintf(c, "GET /download?bytes=%d HTTP/1.1\r\nHost: sockrelay-bench\r\nConnection: close\r\n\r\n", n); err != nil {
		return 0, fmt.Errorf("download: %w", ctxErr(ctx, err))
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
	if err != nil {
		return 0, fmt.Errorf("download: %w", ctxErr(ctx, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != n {
		return 0, fmt.Errorf("download: got %s with %d bytes, want 200 with %d", resp.Status, resp.ContentLength, n)
	}
	h := sha256.New()
	got, err := io.CopyBuffer(h, resp.Body, make([]byte, upstream.BlockSize))
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("download: after %d of %d bytes: %w", got, n, ctxErr(ctx, err))
	}
	if got != n || [sha256.Size]byte(h.Sum(nil)) != want {
		return 0, fmt.Errorf("download of %d bytes: %w (got %d bytes)", n, errChecksum, got)
	}
	return float64(n) / mib / elapsed.Seconds(), nil
}

// upload sends n bytes of the stream; the upstream answers their sha256,
// which must be want. It returns MiB/s.
func upload(ctx context.Context, s *upstream.Stream, addr string, n int64, want [sha256.Size]byte) (float64, error) {
	c, err := dialPatient(ctx, addr)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	c.SetDeadline(time.Now().Add(ioTimeout + time.Duration(n/mib)*10*time.Millisecond))
	start := time.Now()
	if _, err := fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: sockrelay-bench\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", n); err != nil {
		return 0, fmt.Errorf("upload: %w", ctxErr(ctx, err))
	}
	if sent, err := s.WriteN(c, n); err != nil {
		return 0, fmt.Errorf("upload: after %d of %d bytes: %w", sent, n, ctxErr(ctx, err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", ctxErr(ctx, err))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", ctxErr(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("upload: got %s %q", resp.Status, strings.TrimSpace(string(body)))
	}
	wantBody := hex.EncodeToString(want[:]) + " " + strconv.FormatInt(n, 10)
	if got := strings.TrimSpace(string(body)); got != wantBody {
		return 0, fmt.Errorf("upload of %d bytes: %w (upstream got %q)", n, errChecksum, got)
	}
	return float64(n) / mib / elapsed.Seconds(), nil
}

// burst starts n new-connection pings at the same instant and counts those
// that fail.
func burst(ctx context.Context, addr string, n int) (int, error) {
	var failed atomic.Int64
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	for range n {
		wg.Go(func() {
			ready.Done()
			<-gate
			if pingNew(ctx, addr) != nil {
				failed.Add(1)
			}
		})
	}
	ready.Wait()
	close(gate)
	wg.Wait()
	return int(failed.Load()), ctx.Err()
}

// holdIdle opens n connections to addr and, unless prime is set, sends
// nothing on them. With prime each carries one kept-alive ping first, then
// idles. The caller closes them.
func holdIdle(ctx context.Context, addr string, n int, prime bool) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dialPatient(ctx, addr)
				if err == nil {
					conns[i] = c
					if prime {
						err = pingOn(c)
					}
				}
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		closeAll(conns)
		return nil, fmt.Errorf("hold %d idle connections: %w", n, first)
	}
	return conns, nil
}

// pingOn sends one kept-alive ping on c and reads its answer, leaving c
// open, idle and without a deadline.
func pingOn(c net.Conn) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(pingKeepAlive); err != nil {
		return err
	}
	// The answer has a Content-Length: nothing of c is left buffered.
	if err := readPing(bufio.NewReaderSize(c, 1024)); err != nil {
		return err
	}
	return c.SetDeadline(time.Time{})
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// waitActive waits until the upstream on addr holds at least n connections.
func waitActive(ctx context.Context, addr string, n int64) error {
	for {
		got, err := upstream.Active(ctx, addr)
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
