package driver

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// 10,000 Mount/Unmount cycles, each starting and stopping a listener:
// afterwards no listener, socket file, descriptor or goroutine is left.
func TestTenThousandMountCyclesNoLeaks(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("10,000 cycles")
	}
	e := newEnv(t)
	d := e.driver()
	create(t, d, "cyc", nil)
	mount(t, d, "cyc", "warm")
	unmount(t, d, "cyc", "warm")
	runtime.GC()
	baseG := runtime.NumGoroutine()
	baseFDs := countFDs(t)

	for i := range 10000 {
		id := fmt.Sprintf("c%d", i)
		if _, err := d.Mount(&volume.MountRequest{Name: "cyc", ID: id}); err != nil {
			t.Fatalf("cycle %d: Mount: %v", i, err)
		}
		if i%1000 == 0 {
			ping(t, e.sockPath("cyc")) // it serves, really
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: "cyc", ID: id}); err != nil {
			t.Fatalf("cycle %d: Unmount: %v", i, err)
		}
	}
	if n := mountCount(t, d, "cyc"); n != 0 {
		t.Fatalf("mounts after 10,000 cycles: got %d, want 0", n)
	}
	if exists(e.sockPath("cyc")) {
		t.Fatal("socket file left after the last Unmount")
	}
	if st := status(t, d, "cyc"); st["serving"] != false {
		t.Fatalf("status after 10,000 cycles: got %v, want not serving", st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseG || countFDs(t) > baseFDs {
		if time.Now().After(deadline) {
			t.Fatalf("after 10,000 cycles: %d goroutines (base %d), %d descriptors (base %d)", runtime.NumGoroutine(), baseG, countFDs(t), baseFDs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countFDs counts open descriptors other than pipes (the relay keeps a
// bounded pool of those).
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ent := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name())); err == nil && !strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}
