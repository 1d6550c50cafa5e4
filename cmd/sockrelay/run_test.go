package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/peer"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRunCommands(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantErr    string // "" means success
		wantStdout string
		wantStderr string
	}{
		{"no args", nil, "no command given", "", "usage: sockrelay"},
		{"empty args", []string{}, "no command given", "", "usage: sockrelay"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`, "", "usage: sockrelay"},
		{"flag as command", []string{"--plugin"}, `unknown command "--plugin"`, "", "usage: sockrelay"},
		{"version", []string{"version"}, "", "sockrelay " + version + " ", ""},
		{"--version", []string{"--version"}, "", "sockrelay " + version + " ", ""},
		{"-v", []string{"-v"}, "", "sockrelay " + version + " ", ""},
		{"help", []string{"help"}, "", "usage: sockrelay", ""},
		{"-h", []string{"-h"}, "", "usage: sockrelay", ""},
		{"--help", []string{"--help"}, "", "usage: sockrelay", ""},
		{"serve help", []string{"serve", "-h"}, "", "usage: sockrelay serve", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, envOf(nil), &stdout, &stderr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("run(%q): got %v, want nil", tt.args, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q): got %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || (tt.wantStdout == "" && stdout.Len() != 0) {
				t.Errorf("stdout: got %q, want %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) || (tt.wantStderr == "" && stderr.Len() != 0) {
				t.Errorf("stderr: got %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestRunVersionNamesACommit(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"version"}, envOf(nil), &stdout, io.Discard); err != nil {
		t.Fatalf("run version: got %v, want nil", err)
	}
	fields := strings.Fields(stdout.String())
	if len(fields) != 3 || fields[0] != "sockrelay" || fields[2] == "" {
		t.Errorf("version line: got %q, want %q", stdout.String(), "sockrelay <version> <commit>")
	}
}

// Bad settings stop "plugin" before it touches anything. Every path points
// into a temporary directory, which must stay empty.
func TestRunPluginBadSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		extra   []string
		wantErr string
	}{
		{"LOG_LEVEL", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"LOG_FORMAT", map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{"SOCKET_DIR", map[string]string{"SOCKET_DIR": "relative"}, nil, "SOCKET_DIR"},
		{"REMAP_UID alone", map[string]string{"REMAP_UID": "100000"}, nil, "set together"},
		{"REMAP_GID bad", map[string]string{"REMAP_UID": "1", "REMAP_GID": "x"}, nil, "REMAP_GID"},
		{"METRICS_SOCKET outside SOCKET_DIR", map[string]string{"METRICS_SOCKET": "/tmp/m.sock"}, nil, "METRICS_SOCKET"},
		{"unknown flag", nil, []string{"-nope"}, "nope"},
		{"extra argument", nil, []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"plugin",
				"-plugin-socket", filepath.Join(dir, "plugins", "p.sock"),
				"-state-dir", filepath.Join(dir, "state"),
				"-volume-root", filepath.Join(dir, "volumes"),
				"-socket-dir-mount", filepath.Join(dir, "hostrun"),
				"-subuid", filepath.Join(dir, "subuid"),
				"-subgid", filepath.Join(dir, "subgid"),
			}
			args = append(args, tt.extra...)
			// A cancelled context: should the plugin start after all, it
			// stops at once rather than hang the test.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			var stdout, stderr bytes.Buffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, args, envOf(tt.env), &stdout, &stderr) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("run plugin with bad settings did not return within 10s")
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run plugin: got %v, want an error containing %q", err, tt.wantErr)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("temporary directory: got %v, want nothing created", ents)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: got %q, want nothing logged", stdout.String())
			}
		})
	}
}

func TestRunServeBadFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"no listen", []string{"serve"}, nil, "--listen"},
		{"relative listen", []string{"serve", "--listen", "x.sock"}, nil, "--listen"},
		{"same socket", []string{"serve", "--listen", "/var/run/docker.sock"}, nil, "same socket"},
		{"bad perm", []string{"serve", "--listen", "/tmp/x.sock", "--perm", "0400"}, nil, "--perm"},
		{"bad LOG_LEVEL", []string{"serve", "--listen", "/tmp/x.sock"}, map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"metrics no port", []string{"serve", "--listen", "/tmp/x.sock", "--metrics", "localhost"}, nil, "--metrics"},
		{"metrics relative unix", []string{"serve", "--listen", "/tmp/x.sock", "--metrics", "unix:m.sock"}, nil, "--metrics"},
		{"metrics on listen", []string{"serve", "--listen", "/tmp/x.sock", "--metrics", "unix:/tmp/x.sock"}, nil, "--metrics"},
		{"metrics on target", []string{"serve", "--listen", "/tmp/x.sock", "--metrics", "unix:/var/run/docker.sock"}, nil, "--metrics"},
		{"audit file without a policy", []string{"serve", "--listen", "/tmp/x.sock", "--audit-file", "/tmp/a.log"}, nil, "--audit-file"},
		{"relative audit file", []string{"serve", "--listen", "/tmp/x.sock", "--policy", "full", "--audit-file", "a.log"}, nil, "--audit-file"},
		{"bad audit size", []string{"serve", "--listen", "/tmp/x.sock", "--policy", "full", "--audit-file", "/tmp/a.log", "--audit-max-size", "1"}, nil, "--audit-max-size"},
		{"bad audit on full", []string{"serve", "--listen", "/tmp/x.sock", "--policy", "full", "--audit-file", "/tmp/a.log", "--audit-on-full", "wait"}, nil, "--audit-on-full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, envOf(tt.env), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("run(%q): got %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

// "serve" relays a socket until its context ends, then removes it.
func TestRunServeRelays(t *testing.T) {
	dir, up, ln := upstreamListener(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	listen := filepath.Join(dir, "relay.sock")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	args := []string{"serve", "--listen", listen, "--target", up,
		"--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--perm", "0600"}
	go func() { done <- run(ctx, args, envOf(nil), io.Discard, io.Discard) }()

	var c net.Conn
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err = net.Dial("unix", listen)
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: got %v, want a connection within 10s", listen, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "ping" {
		t.Errorf("echo through serve: got %q, %v, want %q, nil", b, err, "ping")
	}
	fi, err := os.Lstat(listen)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: got %v, %v, want mode 0600", fi, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10s of cancel")
	}
	if _, err := os.Lstat(listen); !os.IsNotExist(err) {
		t.Errorf("socket after serve ended: got %v, want it removed", err)
	}
}

// serve --policy file:NAME picks up a changed policy file, and keeps the
// policy in force when a change is invalid, as the plugin does.
func TestRunServePolicyFileReloads(t *testing.T) {
	dir, up, uln := upstreamListener(t)
	usrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go usrv.Serve(uln)
	defer usrv.Close()
	pdir := filepath.Join(dir, "policies")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(pdir, "p.yaml"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("allow:\n  - {method: GET, path: /_ping}\n")

	listen := filepath.Join(dir, "p.sock")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs syncBuf
	done := make(chan error, 1)
	args := []string{"serve", "--listen", listen, "--target", up, "--policy", "file:p", "--policy-dir", pdir,
		"--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--perm", "0600"}
	go func() { done <- run(ctx, args, envOf(nil), &logs, io.Discard) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", listen)
	}}}
	status := func(path string) int {
		resp, err := client.Get("http://d" + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitStatus := func(path string, want int) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); status(path) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: got %d, want %d within 15s", path, status(path), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("/_ping", 200)
	if got := status("/version"); got != 403 {
		t.Fatalf("GET /version before the change: got %d, want 403", got)
	}
	write("allow:\n  - {method: GET, path: /_ping}\n  - {method: GET, path: /version}\n")
	waitStatus("/version", 200)
	write("allow:\n  - {method: GET, path: version}\n") // invalid
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "refused"); {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged within 15s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := status("/version"); got != 200 {
		t.Fatalf("GET /version after an invalid change: got %d, want 200 (the policy in force)", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10s of cancel")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upstreamListener listens on up.sock in a new short-named directory (a
// socket path has 108 bytes), both removed at the end of the test.
func upstreamListener(t *testing.T) (dir, up string, ln net.Listener) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	up = filepath.Join(dir, "up.sock")
	ln, err = net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return dir, up, ln
}

// An audit file that cannot be written stops the plugin at its start,
// saying so, before it creates anything.
func TestRunPluginAuditFileUnwritable(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "log")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"plugin",
		"-plugin-socket", filepath.Join(dir, "plugins", "p.sock"),
		"-state-dir", filepath.Join(dir, "state"),
		"-volume-root", filepath.Join(dir, "volumes"),
		"-socket-dir-mount", filepath.Join(dir, "hostrun"),
		"-log-dir", filepath.Join(notDir, "sockrelay"),
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := run(ctx, args, envOf(map[string]string{"AUDIT_FILE": "audit.log"}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "AUDIT_FILE") || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("run plugin: got %v, want an AUDIT_FILE error saying what is wrong", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary directory: got %v, want nothing created", ents)
	}
}

// serve --policy --audit-file writes the audit lines to the file, not
// stdout, and names this process's caller: the host.
func TestRunServeAuditFile(t *testing.T) {
	dir, up, uln := upstreamListener(t)
	usrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })}
	go usrv.Serve(uln)
	defer usrv.Close()
	listen := filepath.Join(dir, "p.sock")
	file := filepath.Join(dir, "audit.log")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs syncBuf
	done := make(chan error, 1)
	args := []string{"serve", "--listen", listen, "--target", up, "--policy", "read-only", "--audit-file", file,
		"--uid", strconv.Itoa(os.Getuid()), "--gid", strconv.Itoa(os.Getgid()), "--perm", "0600"}
	go func() { done <- run(ctx, args, envOf(nil), &logs, io.Discard) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", listen)
	}}}
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := client.Get("http://d/_ping")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /_ping through serve: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &line); err != nil {
		t.Fatalf("audit file: %v: %q", err, b)
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	wantCaller := "host"
	if len(peer.ContainerIDs(self)) > 0 {
		wantCaller = "container"
	}
	if line["path"] != "/_ping" || line["caller"] != wantCaller || line["peer_pid"] != float64(os.Getpid()) {
		t.Fatalf("audit line: got %v, want /_ping from pid %d, caller %s", line, os.Getpid(), wantCaller)
	}
	if strings.Contains(logs.String(), `"log":"audit"`) {
		t.Fatalf("audit lines on stdout too: %s", logs.String())
	}
}
