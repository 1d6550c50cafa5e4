package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockrelay/sockrelay/cmd/srbench/internal/report"
)

// HoldEnv names the environment variable that makes the bench's program
// hold still instead of measuring: the bench runs itself so in a
// container of the plugin's daemon, whose only job is to keep the
// volumes mounted (the plugin serves a volume only while it is mounted).
// A program that runs the bench must check it first and call Hold.
const HoldEnv = "SRBENCH_HOLD"

// Hold waits for SIGTERM or SIGINT. (As a container's pid 1 the process
// gets no default action for them: it must catch them to stop.)
func Hold() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

// installed is the installed plugin as the bench measures it: a volume
// of each mode to the upstream and to the daemon, mounted by a container
// that holds still, each reached through its host-side socket path as a
// container reaches it.
type installed struct {
	api     *dockerAPI
	name    string // the plugin's name, as volumes name their driver
	id      string
	root    string // the daemon's DockerRootDir
	sockDir string // the plugin's SOCKET_DIR: targets lie below it
	mounts  string // the host directory of its propagated mount
	dir     string // the bench's temp dir, for the links to the volumes
	tag     string // names what the bench makes in the daemon

	image, container string
	volumes          []string
	pid              int // the plugin's process, for its CPU time
	// target is the container that the docker inspect figure inspects:
	// made through the scoped volume, so that it is in its scope.
	target string
	// notes say what was left out, for the report.
	notes []string
}

// installedModes are the volumes measured: the peer and the options of
// each (the target is added). A scope is of the daemon's objects, so the
// scoped volume is measured on the daemon alone; a plugin that does not
// know the option has it left out, with a note.
var installedModes = []struct {
	peer       string
	opts       map[string]string
	daemonOnly bool
	optional   string // an option an older plugin may refuse
}{
	{peer: report.PluginRelay, opts: map[string]string{"mode": "relay"}},
	{peer: report.PluginPolicy, opts: map[string]string{"mode": "policy", "policy": "full"}},
	{peer: report.PluginPolicyScope, opts: map[string]string{"mode": "policy", "policy": "full", "scope": "volume"}, daemonOnly: true, optional: "scope"},
	{peer: report.PluginIdmap, opts: map[string]string{"mode": "idmap"}},
}

// inspectInstalled checks that the plugin name is installed and enabled
// in the daemon on sock, which remaps user ids, and learns where its
// volumes' targets must lie and where its volumes are on the host.
func inspectInstalled(ctx context.Context, sock, name, dir string) (*installed, error) {
	api := newDockerAPI(sock)
	in := &installed{api: api, name: name, dir: dir, tag: fmt.Sprintf("srbench-%d", os.Getpid())}
	p, err := api.plugin(ctx, name)
	if err != nil {
		api.close()
		return nil, fmt.Errorf("plugin %s on %s: %w (install it first: make install)", name, sock, err)
	}
	i, err := api.info(ctx)
	if err != nil {
		api.close()
		return nil, err
	}
	in.id, in.sockDir, in.root = p.ID, p.env("SOCKET_DIR"), i.DockerRootDir
	in.mounts = filepath.Join(i.DockerRootDir, "plugins", p.ID, "propagated-mount")
	var errs []error
	if !p.Enabled {
		errs = append(errs, fmt.Errorf("plugin %s is not enabled", name))
	}
	if !i.remapped() {
		errs = append(errs, fmt.Errorf("the daemon on %s does not run with userns-remap", sock))
	}
	if !filepath.IsAbs(in.sockDir) {
		errs = append(errs, fmt.Errorf("plugin %s has no SOCKET_DIR setting", name))
	}
	for _, m := range p.Settings.Mounts {
		if m.Name == "sockdir" && m.Source != in.sockDir {
			errs = append(errs, fmt.Errorf("plugin %s: its sockdir mount (%s) is not its SOCKET_DIR (%s): it could not reach the bench's upstream", name, m.Source, in.sockDir))
		}
	}
	if err := errors.Join(errs...); err != nil {
		api.close()
		return nil, err
	}
	return in, nil
}

// start makes the volumes, to the upstream up and, when dockerSock is
// set, to the daemon, and a container of self that mounts them all, and
// returns the peers through the upstream and through the daemon.
func (in *installed) start(ctx context.Context, self, up, dockerSock string) (peers, docker []*peer, err error) {
	if err := in.importImage(ctx, self); err != nil {
		return nil, nil, err
	}
	var binds []string
	newVolume := func(peerName, suffix, target string, opts map[string]string) (*peer, error) {
		vol := in.tag + "-" + suffix
		o := map[string]string{"target": target}
		for k, v := range opts {
			o[k] = v
		}
		body := map[string]any{"Name": vol, "Driver": in.name, "DriverOpts": o}
		if err := in.api.call(ctx, http.MethodPost, "/volumes/create", nil, body, nil); err != nil {
			return nil, fmt.Errorf("volume %s: %w", vol, err)
		}
		in.volumes = append(in.volumes, vol)
		binds = append(binds, vol+":/v/"+suffix)
		link := filepath.Join(in.dir, "pl-"+suffix)
		if err := os.Symlink(filepath.Join(in.mounts, vol), link); err != nil {
			return nil, err
		}
		// The host path is longer than sun_path's 108 bytes: reach it
		// through the short link.
		return &peer{name: peerName, addr: filepath.Join(link, "docker.sock")}, nil
	}
	inSockDir := func(p string) bool { return strings.HasPrefix(p, in.sockDir+"/") }
	if !inSockDir(up) {
		return nil, nil, fmt.Errorf("the upstream %s is not below the plugin's SOCKET_DIR %s", up, in.sockDir)
	}
	for _, m := range installedModes {
		if !m.daemonOnly {
			p, err := newVolume(m.peer, strings.TrimPrefix(m.peer, "plugin-"), up, m.opts)
			if err != nil {
				return nil, nil, err
			}
			peers = append(peers, p)
		}
		if dockerSock == "" || !inSockDir(dockerSock) {
			continue
		}
		p, err := newVolume(m.peer, "dk-"+strings.TrimPrefix(m.peer, "plugin-"), dockerSock, m.opts)
		if err != nil && m.optional != "" && strings.Contains(err.Error(), fmt.Sprintf("unknown option %q", m.optional)) {
			in.notes = append(in.notes, fmt.Sprintf("%s: left out: plugin %s does not know the volume option %s (%v)", m.peer, in.name, m.optional, err))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		docker = append(docker, p)
	}
	if err := in.hold(ctx, binds); err != nil {
		return nil, nil, err
	}
	for _, p := range append(append([]*peer{}, peers...), docker...) {
		if err := waitPing(ctx, p.addr, 30*time.Second); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	if in.pid, err = pluginPID(in.id); err != nil {
		return nil, nil, err
	}
	for _, p := range append(append([]*peer{}, peers...), docker...) {
		p.pid = in.pid
	}
	if len(docker) > 0 {
		if err := in.makeTarget(ctx, docker); err != nil {
			return nil, nil, err
		}
	}
	return peers, docker, nil
}

// makeTarget creates the container that the docker inspect figure
// inspects, through the scoped volume when there is one, so that every
// peer may inspect it; it is never started.
func (in *installed) makeTarget(ctx context.Context, docker []*peer) error {
	api := in.api
	if i := slices.IndexFunc(docker, func(p *peer) bool { return p.name == report.PluginPolicyScope }); i >= 0 {
		api = newDockerAPI(docker[i].addr)
		defer api.close()
	}
	body := map[string]any{
		"Image":      in.image,
		"Entrypoint": []string{"/srbench"},
		"Labels":     map[string]string{"srbench": "1"},
		"HostConfig": map[string]any{"NetworkMode": "none"},
	}
	var out struct{ ID string }
	if err := api.call(ctx, http.MethodPost, "/containers/create", url.Values{"name": {in.tag + "-inspected"}}, body, &out); err != nil {
		return fmt.Errorf("the container to inspect: %w", err)
	}
	in.target = out.ID
	return nil
}

// importImage makes an image of the static program self alone: what the
// holding container runs. Nothing is pulled.
func (in *installed) importImage(ctx context.Context, self string) error {
	if err := checkStatic(self); err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "srbench", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
	tw.Write(b)
	if err := tw.Close(); err != nil {
		return err
	}
	ref := "srbench-hold:" + in.tag
	q := url.Values{"fromSrc": {"-"}, "repo": {"srbench-hold"}, "tag": {in.tag}}
	if err := in.api.call(ctx, http.MethodPost, "/images/create", q, &buf, nil); err != nil {
		return fmt.Errorf("import the holding image: %w", err)
	}
	in.image = ref
	return nil
}

// hold starts the container that mounts the volumes, with no network.
func (in *installed) hold(ctx context.Context, binds []string) error {
	body := map[string]any{
		"Image":      in.image,
		"Entrypoint": []string{"/srbench"},
		"Env":        []string{HoldEnv + "=1"},
		"Labels":     map[string]string{"srbench": "1"},
		"HostConfig": map[string]any{"Binds": binds, "NetworkMode": "none"},
	}
	var out struct{ ID string }
	if err := in.api.call(ctx, http.MethodPost, "/containers/create", url.Values{"name": {in.tag}}, body, &out); err != nil {
		return fmt.Errorf("the holding container: %w", err)
	}
	in.container = out.ID
	if err := in.api.call(ctx, http.MethodPost, "/containers/"+out.ID+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("the holding container: %w", err)
	}
	return nil
}

// close removes what start made: the container, then the volumes it
// mounted, then the image. It does not touch anything else.
func (in *installed) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	defer in.api.close()
	var errs []error
	for _, c := range []string{in.target, in.container} {
		if c != "" {
			errs = append(errs, in.api.call(ctx, http.MethodDelete, "/containers/"+c, url.Values{"force": {"1"}}, nil, nil))
		}
	}
	for _, v := range in.volumes {
		errs = append(errs, in.api.call(ctx, http.MethodDelete, "/volumes/"+v, nil, nil, nil))
	}
	if in.image != "" {
		errs = append(errs, in.api.call(ctx, http.MethodDelete, "/images/"+in.image, url.Values{"force": {"1"}}, nil, nil))
	}
	return errors.Join(errs...)
}

// alive fails when the plugin's process is gone: it restarted, or died.
func (in *installed) alive() error {
	if in.pid == 0 {
		return nil
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(in.pid)); err != nil {
		return fmt.Errorf("plugin %s: its process %d is gone", in.name, in.pid)
	}
	return nil
}

// checkStatic refuses a program that a container without a libc could
// not run: one with an ELF interpreter.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the holding image: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("the holding image: %s is linked dynamically; build the bench with CGO_ENABLED=0 (make bench does)", path)
		}
	}
	return nil
}

// pluginPID finds the plugin's process: a process named sockrelay in the
// cgroup named by the plugin's ID, as dockerd places it.
func pluginPID(id string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "sockrelay" {
			continue
		}
		cg, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err == nil && strings.Contains(string(cg), id) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process of plugin %.12s found (a sockrelay process in a cgroup named by its ID)", id)
}

// waitPing waits until a ping through addr is answered.
func waitPing(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := pingWithin(ctx, addr, dockerTimeout)
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return ctxErr(ctx, err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}
