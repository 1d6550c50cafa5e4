package policy

import (
	"context"
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
