package apiproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkKeptAlivePing: one kept-alive connection through the policy
// proxy (preset full, audit to a discarding logger), against a fake
// daemon on a real Unix socket. Compare with BenchmarkPipe* in relay.
func BenchmarkKeptAlivePing(b *testing.B) {
	f := start(b, "full")
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// benchUpload is what one chunked upload or download iteration moves.
const benchUpload = 16 << 20

// BenchmarkChunkedUpload: chunked request bodies (a docker build context,
// docker load) of benchUpload bytes, in chunks of the size the docker CLI
// writes (32 KiB, Go's io.Copy) and in large ones, straight to the fake
// daemon (peer=direct) and through the proxy (peer=proxy):
//
//	go test -run '^$' -bench Chunked -count 10 ./internal/apiproxy > new.txt
//	benchstat -col /peer new.txt
func BenchmarkChunkedUpload(b *testing.B) {
	f := start(b, "full")
	for _, chunk := range []int{32 << 10, 1 << 20} {
		var body bytes.Buffer
		data := bytes.Repeat([]byte("0123456789abcdef"), chunk/16)
		for n := 0; n < benchUpload; n += chunk {
			fmt.Fprintf(&body, "%x\r\n%s\r\n", chunk, data)
		}
		body.WriteString("0\r\n\r\n")
		req := append([]byte("POST /sink HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"), body.Bytes()...)
		want := fmt.Sprint(benchUpload)
		for _, peer := range []struct{ name, sock string }{{"direct", f.upstream}, {"proxy", f.sock}} {
			b.Run(fmt.Sprintf("chunk=%dKiB/peer=%s", chunk>>10, peer.name), func(b *testing.B) {
				c, err := net.Dial("unix", peer.sock)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				br := bufio.NewReader(c)
				b.SetBytes(benchUpload)
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := c.Write(req); err != nil {
						b.Fatal(err)
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Fatal(err)
					}
					got, _ := io.ReadAll(resp.Body)
					if string(got) != want {
						b.Fatalf("the daemon read %q bytes, want %s", got, want)
					}
				}
			})
		}
	}
}

// BenchmarkChunkedDownload: a chunked response of benchUpload bytes
// (docker save, docker cp from a container), as the daemon writes it.
func BenchmarkChunkedDownload(b *testing.B) {
	f := start(b, "full")
	for _, peer := range []struct{ name, sock string }{{"direct", f.upstream}, {"proxy", f.sock}} {
		b.Run("peer="+peer.name, func(b *testing.B) {
			c, err := net.Dial("unix", peer.sock)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			req := fmt.Sprintf("GET /stream?n=%d HTTP/1.1\r\nHost: d\r\n\r\n", benchUpload)
			b.SetBytes(benchUpload)
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := io.WriteString(c, req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				if !strings.EqualFold(strings.Join(resp.TransferEncoding, ","), "chunked") {
					b.Fatalf("Transfer-Encoding %q, want chunked", resp.TransferEncoding)
				}
				if n, err := io.Copy(io.Discard, resp.Body); n != benchUpload || err != nil {
					b.Fatalf("read %d bytes, %v; want %d", n, err, benchUpload)
				}
			}
		})
	}
}

// reportCPU reports the process's CPU time (user and system) per
// operation when the returned function is called: the client, the fake
// daemon and the proxy together, for peer=proxy. On a shared machine it
// varies less than the time per operation.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
