package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Watch replaces the policy when the file changes, keeps it when the
// change is refused, and reports each change of state once.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pingOnly := "allow:\n  - {method: GET, path: /_ping}\n"
	pingAndVersion := "allow:\n  - {method: GET, path: /_ping}\n  - {method: GET, path: /version}\n"
	write(pingOnly)
	first, err := FromSpec("file:p", dir)
	if err != nil {
		t.Fatal(err)
	}
	var cur atomic.Pointer[Policy]
	cur.Store(first)

	var mu sync.Mutex
	var got []Change
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Watch(ctx, 5*time.Millisecond, &cur, func() (*Policy, error) { return FromSpec("file:p", dir) }, func(c Change) {
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
		})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	waitChanges := func(n int) []Change {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			mu.Lock()
			c := append([]Change(nil), got...)
			mu.Unlock()
			if len(c) >= n {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %d changes, want %d: %+v", len(c), n, c)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	allowed := func(path string) bool {
		return cur.Load().Decide(Request{Method: "GET", Target: path}).Allow
	}

	time.Sleep(50 * time.Millisecond) // unchanged: nothing to report
	if c := waitChanges(0); len(c) != 0 {
		t.Fatalf("unchanged file: got changes %+v", c)
	}

	write(pingAndVersion)
	if c := waitChanges(1); !c[0].Reloaded || c[0].Err != nil || !allowed("/version") {
		t.Fatalf("valid change: got %+v, /version allowed %v; want a reload allowing it", c, allowed("/version"))
	}

	write("allow:\n  - {method: GET, path: version}\n") // invalid: not absolute
	c := waitChanges(2)
	if c[1].Err == nil || !allowed("/version") {
		t.Fatalf("invalid change: got %+v, /version allowed %v; want a refusal and the policy kept", c, allowed("/version"))
	}
	time.Sleep(50 * time.Millisecond) // still broken: reported once
	if c := waitChanges(2); len(c) != 2 {
		t.Fatalf("a file left broken: got %d reports, want 2: %+v", len(c), c)
	}

	write(pingAndVersion) // back to the policy in force
	if c := waitChanges(3); c[2].Reloaded || c[2].Err != nil {
		t.Fatalf("file restored: got %+v, want a plain 'back' report", c[2])
	}
}

// A file caught in the middle of a write that is not atomic (empty, or
// cut short) at one check and whole at the next is not reported as
// refused: only an error seen at two checks in a row is.
func TestWatchFileCaughtMidWrite(t *testing.T) {
	dir := t.TempDir()
	load := func(s string) *Policy {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := FromSpec("file:p", dir)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := load("allow:\n  - {method: GET, path: /_ping}\n")
	b := load("allow:\n  - {method: GET, path: /version}\n")
	broken := errors.New("p.yaml: line 1: the file is empty")
	steps := []struct {
		pol *Policy
		err error
	}{{a, nil}, {nil, broken}, {b, nil}, {nil, broken}, {nil, broken}, {nil, broken}, {b, nil}}
	var cur atomic.Pointer[Policy]
	cur.Store(a)
	var got []Change
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i := 0
	Watch(ctx, time.Millisecond, &cur, func() (*Policy, error) {
		s := steps[min(i, len(steps)-1)] // a tick may come after cancel
		if i++; i == len(steps) {
			cancel()
		}
		return s.pol, s.err
	}, func(c Change) { got = append(got, c) })
	want := []Change{{Reloaded: true}, {Err: broken}, {}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for k := range want {
		if got[k].Reloaded != want[k].Reloaded || (got[k].Err == nil) != (want[k].Err == nil) {
			t.Fatalf("change %d: got %+v, want %+v (all: %+v)", k, got[k], want[k], got)
		}
	}
	if cur.Load() != b {
		t.Fatal("the policy in force is not the last valid one")
	}
}
