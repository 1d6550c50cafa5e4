package apiproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
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
