package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/proctree"
	"github.com/sockrelay/sockrelay/internal/state"
)

// remapID is the host id of a remapped container's root the plugin is
// told to use (REMAP_UID, REMAP_GID), as with Debian's default subuid.
const remapID = 100000

// pluginRun is one `sockrelay plugin` with its own directories, started
// with a given number of volumes already in its state, and a client that
// speaks the VolumeDriver protocol to it as dockerd does.
type pluginRun struct {
	proc     *proctree.Process
	upstream net.Listener // the docker.sock a Create checks for
	client   *http.Client
	next     int
}

// startPlugin starts the plugin below dir with volumes existing volumes,
// and waits until it has restored every one of them.
func startPlugin(ctx context.Context, procs *proctree.Set, bin, dir string, volumes int) (*pluginRun, error) {
	root := filepath.Join(dir, fmt.Sprintf("plugin%d", volumes))
	stateDir, volRoot, sockDir := filepath.Join(root, "state"), filepath.Join(root, "vol"), filepath.Join(root, "sock")
	for _, d := range []string{stateDir, volRoot, sockDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("plugin: %w", err)
		}
	}
	// Create checks that the target is a socket; Mount relays to it.
	// Nothing connects through it here, so it never needs to accept.
	ln, err := net.Listen("unix", filepath.Join(sockDir, "docker.sock"))
	if err != nil {
		return nil, fmt.Errorf("plugin: daemon socket: %w", err)
	}
	pr := &pluginRun{upstream: ln}
	if err := seedState(stateDir, volumes); err != nil {
		pr.close()
		return nil, err
	}
	apiSock := filepath.Join(root, "plugin.sock")
	argv := []string{bin, "plugin", "-plugin-socket", apiSock, "-state-dir", stateDir, "-volume-root", volRoot, "-socket-dir-mount", sockDir}
	env := []string{"PATH=" + os.Getenv("PATH"), fmt.Sprintf("REMAP_UID=%d", remapID), fmt.Sprintf("REMAP_GID=%d", remapID)}
	if pr.proc, err = procs.Start("plugin", argv, env); err != nil {
		pr.close()
		return nil, err
	}
	pr.client = &http.Client{
		Timeout: ioTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, apiSock)
		}},
	}
	if err := pr.proc.WaitReady(ctx, apiSock, 10*time.Second); err != nil {
		pr.close()
		return nil, err
	}
	// The plugin listens first and restores its volumes after.
	if err := waitEntries(ctx, volRoot, volumes, time.Minute); err != nil {
		pr.close()
		return nil, fmt.Errorf("plugin with %d volumes: %w", volumes, err)
	}
	return pr, nil
}

// seedState writes the records of n unmounted volumes, as the plugin
// would have written after n Creates.
func seedState(dir string, n int) error {
	store, err := state.New(dir)
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	vols := make(map[string]*state.Volume, n)
	now := time.Now().UTC().Truncate(time.Second)
	for i := range n {
		name := fmt.Sprintf("existing-%05d", i)
		vols[name] = &state.Volume{Name: name, CreatedAt: now, Mode: "relay", UID: remapID, GID: remapID,
			Perm: 0o660, Socket: "docker.sock", Target: "/var/run/docker.sock"}
	}
	if err := store.PutAll(vols); err != nil {
		return fmt.Errorf("plugin: seed %d volumes: %w", n, err)
	}
	return nil
}

// waitEntries waits until dir holds at least n entries.
func waitEntries(ctx context.Context, dir string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(ents) >= n {
			return nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("%d of %d volume directories restored: %w", len(ents), n, err)
		}
	}
}

func (pr *pluginRun) close() {
	if pr.proc != nil {
		pr.proc.Stop()
	}
	if pr.client != nil {
		pr.client.CloseIdleConnections()
	}
	pr.upstream.Close()
}

// cycles runs Create, Mount, Unmount, Remove of new volumes for at least d
// (and at least 3 cycles), and returns cycles per second.
func (pr *pluginRun) cycles(ctx context.Context, d time.Duration) (float64, error) {
	n := 0
	start := time.Now()
	for n < 3 || time.Since(start) < d {
		if err := pr.cycle(ctx); err != nil {
			if perr := pr.proc.Exited(); perr != nil {
				return 0, perr
			}
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (pr *pluginRun) cycle(ctx context.Context) error {
	name := fmt.Sprintf("bench-%d", pr.next)
	id := fmt.Sprintf("%064x", pr.next)
	pr.next++
	type req = map[string]any
	if _, err := pr.call(ctx, "Create", req{"Name": name, "Opts": map[string]string{}}); err != nil {
		return err
	}
	mp, err := pr.call(ctx, "Mount", req{"Name": name, "ID": id})
	if err != nil {
		return err
	}
	// The mount is real: the volume's socket is there.
	if fi, err := os.Lstat(filepath.Join(mp, "docker.sock")); err != nil || fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("plugin: volume %s mounted at %q has no socket", name, mp)
	}
	if _, err := pr.call(ctx, "Unmount", req{"Name": name, "ID": id}); err != nil {
		return err
	}
	_, err = pr.call(ctx, "Remove", req{"Name": name})
	return err
}

// call posts one VolumeDriver request and returns the answer's Mountpoint.
func (pr *pluginRun) call(ctx context.Context, method string, body any) (string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", method, err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/VolumeDriver."+method, bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", method, err)
	}
	r.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	r.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := pr.client.Do(r)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", method, err)
	}
	defer resp.Body.Close()
	var out struct {
		Err        string
		Mountpoint string
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("plugin %s: %s: %w", method, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || out.Err != "" {
		return "", fmt.Errorf("plugin %s: %s: %s", method, resp.Status, out.Err)
	}
	return out.Mountpoint, nil
}
