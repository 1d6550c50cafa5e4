package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStream(t *testing.T) {
	a, b := NewStream(Seed), NewStream(Seed)
	for _, n := range []int64{0, 1, BlockSize - 1, BlockSize, 3*BlockSize + 17} {
		var buf bytes.Buffer
		if got, err := a.WriteN(&buf, n); err != nil || got != n || int64(buf.Len()) != n {
			t.Fatalf("WriteN(%d): got %d bytes, %v", n, buf.Len(), err)
		}
		if got, want := sha256.Sum256(buf.Bytes()), b.Sum(n); got != want {
			t.Errorf("n=%d: the stream's sum differs from the sum of what it wrote", n)
		}
	}
	// No block repeats: blocks 0 and 1 differ, though they come from the
	// same random block.
	var buf bytes.Buffer
	a.WriteN(&buf, 2*BlockSize)
	if bytes.Equal(buf.Bytes()[:BlockSize], buf.Bytes()[BlockSize:]) {
		t.Error("blocks 0 and 1 are equal")
	}
	if NewStream(2).Sum(BlockSize) == a.Sum(BlockSize) {
		t.Error("another seed gives the same stream")
	}
}

// serve runs Serve in this process for the test and returns its socket.
func serve(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sru")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := filepath.Join(dir, "up.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	for range 100 {
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("upstream does not answer")
	return ""
}

func TestServe(t *testing.T) {
	addr := serve(t)
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		},
	}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://up" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}

	if code, body := get("/_ping"); code != http.StatusOK || body != "OK" {
		t.Errorf("/_ping: got %d %q, want 200 \"OK\"", code, body)
	}
	s := NewStream(Seed)
	const n = BlockSize + 5
	if code, body := get(fmt.Sprintf("/download?bytes=%d", n)); code != http.StatusOK || sha256.Sum256([]byte(body)) != s.Sum(n) {
		t.Errorf("/download of %d bytes: got %d with %d bytes, or not the stream's", n, code, len(body))
	}
	for _, q := range []string{"-1", "x", fmt.Sprint(int64(MaxTransfer) + 1)} {
		if code, _ := get("/download?bytes=" + q); code != http.StatusBadRequest {
			t.Errorf("/download?bytes=%s: got %d, want 400", q, code)
		}
	}
	var body bytes.Buffer
	s.WriteN(&body, n)
	resp, err := client.Post("http://up/upload", "application/octet-stream", &body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%x %d\n", s.Sum(n), n); string(got) != want {
		t.Errorf("/upload: got %q, want %q", got, want)
	}

	// Active counts the connections held open, not its own.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// A request on each, so that the server has taken every one.
	for _, c := range conns {
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: up\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
	}
	var active int64
	for range 100 {
		if active, err = Active(t.Context(), addr); err != nil || active == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || active != 3 {
		t.Errorf("Active with 3 connections held: got %d, %v", active, err)
	}
	if _, err := Active(t.Context(), filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "upstream stats") {
		t.Errorf("Active of no upstream: got %v, want an upstream stats error", err)
	}
}
