package apiproxy

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// floodHeapBound is what the proxy may hold in heap, above its idle
// state, under TestFlood: the body budget (DefaultBodyBytes), a read
// buffer for each connection that is inside a request, as much again for
// the garbage the collector has yet to take, and a margin.
const floodHeapBound = 2*(DefaultBodyBytes+1000*MaxHeader) + 16<<20

// A flood of hostile connections: bodies the policy reads, parked half
// sent; heads dribbled a byte at a time; clients that leave while the
// daemon has not answered. The proxy's heap stays bounded, an honest
// client is answered throughout, the budgets and deadlines refuse the
// hostile ones, and once they are gone, descriptors, goroutines and heap
// are back where they were.
func TestFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of 1,000 connections")
	}
	dir := tempDir(t)
	u := newRawUpstream(t, dir)
	const deadline = 2 * time.Second // HeadTimeout and BodyTimeout
	sock, p := serveProxy(t, dir, u.sock, "no-escalation", Limits{HeadTimeout: deadline, BodyTimeout: deadline}, nil)
	ping := func() (time.Duration, error) {
		start := time.Now()
		c, err := net.Dial("unix", sock)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
		b, err := io.ReadAll(c)
		if err != nil {
			return 0, err
		}
		if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") || !strings.HasSuffix(string(b), "\r\n\r\nOK") {
			return 0, fmt.Errorf("answer %q", b)
		}
		return time.Since(start), nil
	}
	for range 3 {
		if _, err := ping(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the warm-up to end", func() bool { return p.Stats.Active.Load() == 0 })
	fds0, gor0, heap0 := settle()
	t.Logf("before: %d descriptors, %d goroutines, heap in use %d KiB", fds0, gor0, heap0>>10)

	var peak atomic.Uint64 // of HeapInuse
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	const n = 1000
	var (
		mu      sync.Mutex
		hostile []net.Conn
		slow    []net.Conn
		wg      sync.WaitGroup
	)
	// Written from one buffer: the test's own heap stays out of the
	// count.
	parkedHead := []byte(fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"Image\":\"", policy.MaxBody))
	parkedBody := []byte(strings.Repeat("x", 256<<10))
	for i := range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		mu.Lock()
		hostile = append(hostile, c)
		mu.Unlock()
		switch i % 3 {
		case 0: // a body the policy reads, a quarter of it sent
			wg.Go(func() {
				c.SetWriteDeadline(time.Now().Add(2 * deadline))
				c.Write(parkedHead)
				c.Write(parkedBody)
			})
		case 1: // a head, a byte at a time (below)
			slow = append(slow, c)
		case 2: // a request the daemon holds, and the client leaves
			wg.Go(func() {
				io.WriteString(c, "POST /containers/x/wait HTTP/1.1\r\nHost: d\r\n\r\n")
				time.Sleep(time.Duration(i%5) * 100 * time.Millisecond)
				c.Close()
			})
		}
	}
	wg.Go(func() {
		head := "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Pad: " + strings.Repeat("p", 1000)
		end := time.Now().Add(2 * deadline) // past the proxy's deadline
		for k := 0; k < len(head) && time.Now().Before(end); k++ {
			for _, c := range slow {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte{head[k]})
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	// An honest client, through the flood and the proxy's refusals. The
	// flood's deadlines are short (2 s, for the test's sake), so on a
	// machine loaded beyond its cores an honest request can miss one
	// too; most must be answered, and the last one after the flood.
	var lat []time.Duration
	var failed []string
	for end := time.Now().Add(deadline + budgetWait + time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		d, err := ping()
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		lat = append(lat, d)
	}
	if len(lat) == 0 || len(failed) > len(lat)/10 {
		t.Fatalf("honest pings during the flood: %d answered, %d failed: %v", len(lat), len(failed), failed)
	}
	slices.Sort(lat)
	t.Logf("honest pings during the flood: %d, median %v, max %v; %d failed", len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(failed))

	// Every hostile connection that is still open is ended by the proxy:
	// a parked body or a slow head gets its 503 or 408 and the close.
	// Nothing is left waiting past the deadlines.
	var ends sync.WaitGroup
	var kept atomic.Int32
	for i, c := range hostile {
		if i%3 == 2 {
			continue // the client left
		}
		ends.Go(func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil && os.IsTimeout(err) {
				kept.Add(1)
			}
		})
	}
	ends.Wait()
	if k := kept.Load(); k > 0 {
		t.Errorf("%d hostile connections still open 30 s after the flood's deadlines", k)
	}
	t.Logf("refusals during the flood: %d (503 busy, 408 past a deadline)", p.Stats.Denied.Load())
	waitFor(t, "the daemon to see every client that left", func() bool { return u.waits.Load() == 0 })
	if _, err := ping(); err != nil {
		t.Fatalf("honest ping after the flood: %v", err)
	}
	wg.Wait()
	for _, c := range hostile {
		c.Close()
	}
	waitFor(t, "every client connection to end", func() bool { return p.Stats.Active.Load() == 0 })
	close(stopSampling)
	sampling.Wait()
	t.Logf("during: heap in use at most %d KiB (bound %d KiB above the %d before)", peak.Load()>>10, floodHeapBound>>10, heap0>>10)
	if peak.Load() > heap0+floodHeapBound {
		t.Errorf("heap in use reached %d KiB, over %d KiB + %d KiB", peak.Load()>>10, heap0>>10, floodHeapBound>>10)
	}
	if got := p.bodies.inUse(); got != 0 {
		t.Errorf("body budget in use after the flood: %d", got)
	}

	var fds, gor int
	var heap uint64
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		fds, gor, heap = settle()
		if fds <= fds0 && gor <= gor0 && heap <= heap0+4<<20 || time.Now().After(end) {
			break
		}
	}
	t.Logf("after: %d descriptors, %d goroutines, heap in use %d KiB", fds, gor, heap>>10)
	if fds > fds0 || gor > gor0 || heap > heap0+4<<20 {
		buf := make([]byte, 1<<20)
		t.Logf("%s", buf[:runtime.Stack(buf, true)])
		t.Fatalf("after the flood: %d descriptors, %d goroutines, heap %d KiB; want at most %d, %d, %d KiB",
			fds, gor, heap>>10, fds0, gor0, (heap0+4<<20)>>10)
	}
}

// settle collects garbage and returns the process's open descriptors,
// goroutines and heap in use.
func settle() (fds, goroutines int, heapInuse uint64) {
	runtime.GC()
	ents, _ := os.ReadDir("/proc/self/fd")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return len(ents), runtime.NumGoroutine(), ms.HeapInuse
}
