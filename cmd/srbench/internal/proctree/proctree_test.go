package proctree

import (
	"os/exec"
	"testing"
	"time"
)

func TestProcesses(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep(1)")
	}
	ps := NewSet(t.TempDir())
	// A shell that forks a child, as socat does per connection.
	p, err := ps.Start("sh", []string{"/bin/sh", "-c", "sleep 60 & sleep 60; wait"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for range 200 {
		if kids, err = childPIDs(p.pid()); err == nil && len(kids) == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(kids) != 2 {
		t.Fatalf("childPIDs: got %v, %v, want 2 children", kids, err)
	}
	if cpu, err := p.CPU(); err != nil || cpu < 0 {
		t.Errorf("CPU: got %v, %v", cpu, err)
	}
	if kib, n, err := p.MemKiB(); err != nil || kib <= 0 || n != 2 {
		t.Errorf("MemKiB: got %d KiB, %d children, %v; want > 0, 2", kib, n, err)
	}
	if err := p.Exited(); err != nil {
		t.Errorf("Exited while running: %v", err)
	}
	ps.StopAll()
	if p.Exited() == nil {
		t.Error("still running after StopAll")
	}
	for _, k := range kids {
		if !gone(k) {
			t.Errorf("child %d outlived its group", k)
		}
	}
}

// gone waits a little for pid to be dead: gone, or a zombie not yet reaped
// by init.
func gone(pid int) bool {
	for range 200 {
		f, err := statFields(pid)
		if err != nil || f[0] == "Z" {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
