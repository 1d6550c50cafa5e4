package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/upstream"
)

// TestMain lets Run start this test binary as its upstream.
func TestMain(m *testing.M) {
	if path := os.Getenv(upstream.Env); path != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err := upstream.Serve(ctx, path)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "srb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveUpstream runs upstream.Serve in this process for the test.
func serveUpstream(t *testing.T) string {
	t.Helper()
	addr := filepath.Join(tempDir(t), "up.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- upstream.Serve(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("upstream.Serve: %v", err)
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

func TestUpstream(t *testing.T) {
	ctx := t.Context()
	addr := serveUpstream(t)
	s := upstream.NewStream(upstream.Seed)
	if err := pingNew(ctx, addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
	for _, n := range []int64{1, 3*mib + 5} {
		if _, err := download(ctx, addr, n, s.Sum(n)); err != nil {
			t.Errorf("download %d: %v", n, err)
		}
		if _, err := upload(ctx, s, addr, n, s.Sum(n)); err != nil {
			t.Errorf("upload %d: %v", n, err)
		}
	}
	if _, err := keepAliveRate(ctx, addr, 20*time.Millisecond); err != nil {
		t.Errorf("kept-alive ping: %v", err)
	}
	if failed, err := burst(ctx, addr, 50); err != nil || failed != 0 {
		t.Errorf("burst of 50: %d failed, %v", failed, err)
	}

	conns, err := holdIdle(ctx, addr, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitActive(wctx, addr, 10); err != nil {
		t.Errorf("waitActive with 10 idle connections: %v", err)
	}
	closeAll(conns)
	// Primed: each carries a kept-alive ping, then idles, still open.
	conns, err = holdIdle(ctx, addr, 5, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitActive(wctx, addr, 5); err != nil {
		t.Errorf("waitActive with 5 primed idle connections: %v", err)
	}
	for i, c := range conns {
		if err := pingOn(c); err != nil {
			t.Errorf("primed connection %d: a second ping: %v", i, err)
		}
	}
	closeAll(conns)
}

// A changed byte is an error, never a figure.
func TestChecksumMismatchIsAnError(t *testing.T) {
	ctx := t.Context()
	s := upstream.NewStream(upstream.Seed)
	const n = 2*upstream.BlockSize + 3
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		s.WriteN(&buf, n)
		buf.Bytes()[upstream.BlockSize+7] ^= 1
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%x %d\n", sha256.Sum256(nil), got)
	})
	addr := filepath.Join(tempDir(t), "bad.sock")
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	if _, err := download(ctx, addr, n, s.Sum(n)); !errors.Is(err, errChecksum) {
		t.Errorf("download of a changed stream: got %v, want %v", err, errChecksum)
	}
	if _, err := upload(ctx, s, addr, n, s.Sum(n)); !errors.Is(err, errChecksum) {
		t.Errorf("upload answered with a wrong sum: got %v, want %v", err, errChecksum)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"256MiB", 256 << 20}, {"1GiB", 1 << 30}, {"64M", 64 << 20}, {"4K", 4096},
		{"1048576", 1 << 20}, {"10B", 10}, {" 2 MiB ", 2 << 20},
	} {
		if got, err := ParseSize(c.in); err != nil || got != c.want {
			t.Errorf("ParseSize(%q): got %d, %v, want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1.5GiB", "MiB", "2TiB", "2048GiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): got %d, want an error", in, got)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"rounds":   func(c *Config) { c.Rounds = 0 },
		"bytes":    func(c *Config) { c.Bytes = 0 },
		"clients":  func(c *Config) { c.Clients = []int{1, 0} },
		"volumes":  func(c *Config) { c.Volumes = []int{-1} },
		"duration": func(c *Config) { c.PingDuration = 0 },
		"plugin":   func(c *Config) { c.Plugin = "sockrelay" },
	} {
		c := QuickConfig()
		mod(&c)
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%s: Run accepted a bad config", name)
		}
	}
}
