//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// setPlugin sets the plugin's settings (disable -f, set, enable).
func setPlugin(t *testing.T, kv ...string) {
	t.Helper()
	must(t, "plugin", "disable", "-f", plugin)
	defer dockerOut("plugin", "enable", plugin) // enabled again whatever happens
	must(t, append([]string{"plugin", "set", plugin}, kv...)...)
	must(t, "plugin", "enable", plugin)
}

// volumeClient is an HTTP client of a volume's socket from the host, as
// a process outside any container.
func volumeClient(t *testing.T, vol string) *http.Client {
	t.Helper()
	// The volume's directory on the host: below the plugin's
	// propagatedMount (docker volume inspect shows the plugin's path).
	root := strings.TrimSpace(must(t, "info", "-f", "{{.DockerRootDir}}"))
	id := strings.TrimSpace(must(t, "plugin", "inspect", "-f", "{{.Id}}", plugin))
	mp := filepath.Join(root, "plugins", id, "propagated-mount", vol)
	short, err := os.MkdirTemp("", "sra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	link := filepath.Join(short, "v") // sun_path holds 108 bytes
	if err := os.Symlink(mp, link); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(link, "docker.sock")
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// The audit log, written to a host file (AUDIT_FILE), names each
// request's caller: the container (its full ID, name, image and image
// ID) or the host; the file is rotated by size; and no credential a
// client sends (X-Registry-Auth on a pull, a login's password, an /auth
// query) is in it.
func TestAuditFileIdentity(t *testing.T) {
	file := uniqueName(t) + ".log"
	path := filepath.Join("/var/log/sockrelay", file)
	setPlugin(t, "AUDIT_FILE="+file, "AUDIT_MAX_SIZE=64k", "AUDIT_KEEP=2")
	t.Cleanup(func() {
		setPlugin(t, "AUDIT_FILE=", "AUDIT_MAX_SIZE=100m", "AUDIT_KEEP=5")
		for _, p := range []string{path, path + ".1", path + ".2", path + ".3"} {
			os.Remove(p)
		}
	})
	vol := newVolume(t, "policy=no-escalation")

	// A container pings through the volume.
	c := startUser(t, vol)
	wantPing(t, pingIn(t, c))
	inspect := func(name string) (id, image, imageID string) {
		f := strings.Fields(must(t, "inspect", "-f", "{{.Id}} {{.Config.Image}} {{.Image}}", name))
		if len(f) != 3 {
			t.Fatalf("inspect %s: %q", name, f)
		}
		return f[0], f[1], f[2]
	}
	cID, cImage, cImageID := inspect(c)

	// A docker CLI in a container pulls with credentials (the CLI sends
	// them as X-Registry-Auth) and logs in (POST /auth, the password in
	// the body). No registry answers at 127.0.0.1:1; both fail.
	const pullSecret, loginSecret, querySecret = "pull-s3cret-PX", "login-s3cret-LX", "query-s3cret-QX"
	cfg := t.TempDir()
	os.Chmod(cfg, 0o755) // the container's (remapped) root reads it
	auth := base64.StdEncoding.EncodeToString([]byte("user:" + pullSecret))
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), fmt.Appendf(nil, `{"auths":{"127.0.0.1:1":{"auth":%q}}}`, auth), 0o644); err != nil {
		t.Fatal(err)
	}
	puller := uniqueName(t)
	t.Cleanup(func() { dockerOut("rm", "-f", puller) })
	r := dockerIn(nil, "run", "--name", puller, "--label", label, "-v", vol+":/var/run", "-v", cfg+":/cfg:ro", "-e", "DOCKER_CONFIG=/cfg",
		image, "docker", "pull", "127.0.0.1:1/sre2e/none:x")
	if r.err == nil {
		t.Fatalf("a pull from no registry succeeded: %s", r)
	}
	pID, _, _ := inspect(puller)
	r = dockerIn(nil, "run", "--rm", "--label", label, "-v", vol+":/var/run", image, "docker", "login", "-u", "user", "-p", loginSecret, "127.0.0.1:1")
	if r.err == nil {
		t.Fatalf("a login to no registry succeeded: %s", r)
	}

	// The host calls: a ping, an /auth with a secret in its query, and
	// enough pings to rotate the 64 KiB file twice over.
	hc := volumeClient(t, vol)
	resp, err := hc.Post("http://d/auth?password="+querySecret, "application/json",
		strings.NewReader(`{"username":"user","password":"`+querySecret+`","serveraddress":"127.0.0.1:1"}`))
	if err != nil {
		t.Fatalf("POST /auth from the host: %v", err)
	}
	resp.Body.Close()
	for i := 0; i < 600; i++ {
		resp, err := hc.Get("http://d/_ping")
		if err != nil {
			t.Fatalf("ping %d from the host: %v", i, err)
		}
		resp.Body.Close()
	}

	// The lines, oldest first, once the newest ping's is in.
	var lines []map[string]any
	var raw []byte
	eventually(t, 10*time.Second, func() error {
		lines, raw = nil, nil
		for _, p := range []string{path + ".2", path + ".1", path} {
			b, err := os.ReadFile(p)
			if err != nil {
				if p == path+".2" && os.IsNotExist(err) {
					continue
				}
				return err
			}
			raw = append(raw, b...)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("not a JSON line in the audit file: %v: %q", err, sc.Text())
			}
			lines = append(lines, l)
		}
		pings := 0
		for _, l := range lines {
			if l["path"] == "/_ping" && l["caller"] == "host" {
				pings++
			}
		}
		if pings < 300 { // the oldest were rotated away
			return fmt.Errorf("%d host pings in the audit files", pings)
		}
		return nil
	})

	has := func(what string, want map[string]any) {
		t.Helper()
		for _, l := range lines {
			ok := true
			for k, v := range want {
				ok = ok && l[k] == v
			}
			if ok {
				return
			}
		}
		t.Errorf("no audit line for %s with %v", what, want)
	}
	has("the container's ping", map[string]any{"log": "audit", "volume": vol, "path": "/_ping", "decision": "allow",
		"caller": "container", "container_id": cID, "container_name": c, "image": cImage, "image_id": cImageID})
	has("the pull", map[string]any{"path": "/images/create", "caller": "container", "container_id": pID, "container_name": puller, "image": cImage})
	has("the login", map[string]any{"path": "/auth", "caller": "container"})
	has("the host's /auth", map[string]any{"path": "/auth", "caller": "host", "peer_pid": float64(os.Getpid())})
	for _, l := range lines {
		if l["caller"] == "host" && l["container_id"] != nil {
			t.Fatalf("a host line names a container: %v", l)
		}
	}
	for _, secret := range []string{pullSecret, loginSecret, querySecret, auth, "X-Registry-Auth", "Authorization", "eyJ"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the audit file holds %q", secret)
		}
	}

	// Rotated: .1 and .2 kept, no .3, every file 0640 and at most 64 KiB.
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("rotation: %v", err)
		}
		if st.Mode().Perm() != 0o640 || st.Size() > 64<<10 {
			t.Errorf("%s: mode %v, size %d; want 0640, at most 64 KiB", p, st.Mode().Perm(), st.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 kept with AUDIT_KEEP=2: %v", path, err)
	}
	// The lines went to the file, not to the daemon's log.
	logs, err := daemonLog()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs, `\"volume\":\"`+vol+`\"`) {
		t.Errorf("audit lines of %s in the daemon log too", vol)
	}
}

// An AUDIT_FILE that is not a file name, and an audit file the plugin
// cannot write, stop the plugin at enable, with the reason in the
// daemon's log; set right again, the plugin starts with its volumes.
func TestAuditFileBadSetting(t *testing.T) {
	vol := newVolume(t, "policy=read-only")
	dir := "/var/log/sockrelay"
	blocker := filepath.Join(dir, uniqueName(t)+".log")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(blocker, 0o750); err != nil { // a directory where the file should be
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(blocker)
		dockerOut("plugin", "disable", "-f", plugin)
		dockerOut("plugin", "set", plugin, "AUDIT_FILE=")
		dockerOut("plugin", "enable", plugin)
	})
	for _, tc := range []struct{ value, want string }{
		{"../escape.log", "AUDIT_FILE: want a file name"},
		{filepath.Base(blocker), "is a directory"},
	} {
		must(t, "plugin", "disable", "-f", plugin)
		must(t, "plugin", "set", plugin, "AUDIT_FILE="+tc.value)
		r := dockerIn(nil, "plugin", "enable", plugin)
		if r.err == nil {
			t.Errorf("enable with AUDIT_FILE=%s: enabled", tc.value)
		}
		t.Logf("enable with AUDIT_FILE=%s: %s", tc.value, strings.TrimSpace(r.stderr))
		eventually(t, 10*time.Second, func() error {
			logs, err := daemonLog()
			if err != nil {
				return err
			}
			if !strings.Contains(logs, tc.want) {
				return fmt.Errorf("no %q in the daemon log", tc.want)
			}
			return nil
		})
		dockerOut("plugin", "disable", "-f", plugin)
		must(t, "plugin", "set", plugin, "AUDIT_FILE=")
		// After a failed start Engine 20.10 may start the plugin again
		// on its own, with the new settings, while it counts it as
		// disabled; enable then says "id already in use" until a
		// disable -f stops that task.
		eventually(t, 30*time.Second, func() error {
			if out, _ := dockerOut("plugin", "inspect", "-f", "{{.Enabled}}", plugin); strings.TrimSpace(out) == "true" {
				return nil
			}
			dockerOut("plugin", "disable", "-f", plugin)
			if r := dockerIn(nil, "plugin", "enable", plugin); r.err != nil {
				return fmt.Errorf("enable: %s", r)
			}
			return nil
		})
	}
	if _, err := os.Stat("/var/log/escape.log"); !os.IsNotExist(err) {
		t.Errorf("a refused AUDIT_FILE created a file: %v", err)
	}
	wantPing(t, runClient(t, vol, "srclient", "ping", "/var/run/docker.sock"))
}

// A full disk under the audit file (a 1 MiB tmpfs as logdir.source),
// with AUDIT_ON_FULL=refuse: requests are refused with 503
// audit-unavailable while its lines cannot be written, the plugin's log
// says so, and once there is room again requests are served and their
// lines written, whole.
func TestAuditFileFullRefuses(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "sre2e-audit", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	setPlugin(t, "logdir.source="+dir, "AUDIT_FILE=audit.log", "AUDIT_ON_FULL=refuse")
	t.Cleanup(func() { setPlugin(t, "logdir.source=/var/log", "AUDIT_FILE=", "AUDIT_ON_FULL=drop") })
	vol := newVolume(t, "policy=read-only")
	startUser(t, vol) // the volume's socket is there while it is mounted
	hc := volumeClient(t, vol)
	get := func() (int, string) {
		resp, err := hc.Get("http://d/_ping")
		if err != nil {
			t.Fatalf("GET /_ping: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 {
		t.Fatalf("before the disk is full: %d %s", code, body)
	}
	// Fill the disk.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(filler, zeros{})
	filler.Close()
	refused := false
	for i := 0; i < 50 && !refused; i++ {
		code, body := get()
		refused = code == 503 && strings.Contains(body, "audit-unavailable")
		time.Sleep(20 * time.Millisecond)
	}
	if !refused {
		t.Fatal("a full audit disk with AUDIT_ON_FULL=refuse: requests still served")
	}
	eventually(t, 10*time.Second, func() error {
		logs, err := daemonLog()
		if err != nil {
			return err
		}
		if !strings.Contains(logs, "audit lines dropped") || !strings.Contains(logs, "no space left on device") {
			return fmt.Errorf("no warning of dropped audit lines in the daemon log")
		}
		return nil
	})
	// Room again: served again (the first request may be refused: its
	// line is the write that finds out).
	os.Remove(filepath.Join(dir, "filler"))
	eventually(t, 10*time.Second, func() error {
		if code, body := get(); code != 200 {
			return fmt.Errorf("after the disk has room: %d %s", code, body)
		}
		return nil
	})
	b, err := os.ReadFile(filepath.Join(dir, "sockrelay", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !json.Valid([]byte(l)) {
			t.Fatalf("a line cut by the full disk: %q", l)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
