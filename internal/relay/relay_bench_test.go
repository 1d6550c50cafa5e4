package relay_test

// The Pipe benchmarks compare a direct connection to a fake upstream with
// the same traffic through relay.Server, both on Unix sockets, as
// sub-benchmarks peer=direct and peer=relay:
//
//	go test -run '^$' -bench Pipe -count 10 ./internal/relay > new.txt
//	benchstat -col /peer new.txt            # relay beside direct
//	benchstat old.txt new.txt               # before and after a change
//
// They report; they assert nothing about time. make bench measures the
// whole program (sockrelay serve and socat, processes apart).

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sockrelay/sockrelay/internal/relay"
)

// The fake upstream's protocol: a 9-byte request, an operation and a
// big-endian length.
const (
	benchOpPing     = 'P' // answers one byte
	benchOpDownload = 'D' // answers length bytes
	benchOpUpload   = 'U' // reads length bytes, then answers one byte
)

// benchChunk is what one download or upload iteration moves.
const benchChunk = 4 << 20

type benchPeer struct{ name, addr string }

// benchPeers starts a fake upstream and a relay.Server in front of it.
func benchPeers(b *testing.B) []benchPeer {
	up := benchUpstream(b)
	return []benchPeer{{"direct", up}, {"relay", benchRelay(b, up)}}
}

func benchTempDir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "srb") // short: sun_path is 108 bytes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func benchUpstream(b *testing.B) string {
	b.Helper()
	path := filepath.Join(benchTempDir(b), "up.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				benchServe(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return path
}

func benchServe(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint64(hdr[1:]))
		switch hdr[0] {
		case benchOpPing:
		case benchOpDownload:
			for n > 0 {
				m, err := c.Write(buf[:min(n, len(buf))])
				if err != nil {
					return
				}
				n -= m
			}
			continue
		case benchOpUpload:
			for n > 0 {
				m, err := c.Read(buf[:min(n, len(buf))])
				if err != nil {
					return
				}
				n -= m
			}
		default:
			return
		}
		if _, err := c.Write(hdr[:1]); err != nil {
			return
		}
	}
}

func benchRelay(b *testing.B, upstream string) string {
	b.Helper()
	path := filepath.Join(benchTempDir(b), "relay.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := &relay.Server{Upstream: upstream, Log: slog.New(slog.DiscardHandler), Stats: &relay.Stats{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return path
}

func benchDial(b *testing.B, addr string) net.Conn {
	b.Helper()
	c, err := net.Dial("unix", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// benchRequest sends one request and, for all but a download, reads the
// one-byte answer.
func benchRequest(b *testing.B, c net.Conn, op byte, n int) {
	var hdr [9]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		b.Fatal(err)
	}
}

func benchAnswer(b *testing.B, c net.Conn) {
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPipeDownload moves benchChunk bytes from the upstream to the
// client per iteration, over one connection.
func BenchmarkPipeDownload(b *testing.B) {
	for _, p := range benchPeers(b) {
		b.Run("peer="+p.name, func(b *testing.B) {
			c := benchDial(b, p.addr)
			buf := make([]byte, 256<<10)
			b.SetBytes(benchChunk)
			for b.Loop() {
				benchRequest(b, c, benchOpDownload, benchChunk)
				for n := benchChunk; n > 0; {
					m, err := c.Read(buf[:min(n, len(buf))])
					if err != nil {
						b.Fatal(err)
					}
					n -= m
				}
			}
		})
	}
}

// BenchmarkPipeUpload moves benchChunk bytes from the client to the
// upstream per iteration, over one connection.
func BenchmarkPipeUpload(b *testing.B) {
	for _, p := range benchPeers(b) {
		b.Run("peer="+p.name, func(b *testing.B) {
			c := benchDial(b, p.addr)
			buf := make([]byte, benchChunk)
			b.SetBytes(benchChunk)
			for b.Loop() {
				benchRequest(b, c, benchOpUpload, benchChunk)
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				benchAnswer(b, c)
			}
		})
	}
}

// BenchmarkPipeRoundTrip is one small request and its answer on a
// kept-alive connection.
func BenchmarkPipeRoundTrip(b *testing.B) {
	for _, p := range benchPeers(b) {
		b.Run("peer="+p.name, func(b *testing.B) {
			c := benchDial(b, p.addr)
			for b.Loop() {
				benchRequest(b, c, benchOpPing, 0)
				benchAnswer(b, c)
			}
		})
	}
}

// BenchmarkPipeConnect is one small request on a new connection: connect,
// request, answer, close. Through the relay that includes its dial of the
// upstream.
func BenchmarkPipeConnect(b *testing.B) {
	for _, p := range benchPeers(b) {
		b.Run("peer="+p.name, func(b *testing.B) {
			for b.Loop() {
				c, err := net.Dial("unix", p.addr)
				if err != nil {
					b.Fatal(err)
				}
				benchRequest(b, c, benchOpPing, 0)
				benchAnswer(b, c)
				c.Close()
			}
		})
	}
}
