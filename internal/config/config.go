// Package config reads every setting of sockrelay from the command line and
// the environment, in one place. In the managed plugin the environment comes
// from the settable env entries of config.json (docker plugin set).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	units "github.com/docker/go-units"

	"github.com/sockrelay/sockrelay/internal/audit"
)

// Config holds the plugin's settings.
type Config struct {
	// LogLevel and LogFormat shape the logger (LOG_LEVEL, LOG_FORMAT).
	LogLevel  slog.Level
	LogFormat string // "text" or "json"

	// PluginSocket is where the VolumeDriver API listens (inside the plugin).
	PluginSocket string
	// StateDir holds the records of the volumes. It lies inside the
	// propagatedMount, which survives disable/enable, daemon restarts and
	// docker plugin upgrade.
	StateDir string
	// VolumeRoot is the plugin's propagatedMount: volume directories live
	// below it and the daemon maps Mountpoints below it to the host.
	VolumeRoot string
	// HostSocketDir is the host's socket directory as a host path (SOCKET_DIR,
	// default /var/run), and SocketDirMount is where it is mounted in the
	// plugin. A volume's target must lie below HostSocketDir.
	HostSocketDir  string
	SocketDirMount string
	// DefaultTarget is the upstream socket of volumes that name none, as a
	// host path.
	DefaultTarget string

	// RemapUser is the daemon's --userns-remap value ("default" means
	// dockremap); its first /etc/subuid and /etc/subgid lines give the
	// remapped root. RemapUID/RemapGID, when set, override every lookup.
	RemapUser  string
	RemapUID   *uint32
	RemapGID   *uint32
	SubUIDFile string
	SubGIDFile string
	// PolicyDir holds the policy files that volumes name as file:NAME;
	// PolicyDirHost is the same directory as the host names it.
	PolicyDir, PolicyDirHost string
	// MetricsSocket, when set, is where the metrics are served, as this
	// process sees it; MetricsSocketHost is the same socket as the host
	// names it (METRICS_SOCKET, below SOCKET_DIR).
	MetricsSocket, MetricsSocketHost string

	// LogDir is the plugin's directory in the logdir mount: the host's
	// /var/log/sockrelay by default. Audit.File lies in it.
	LogDir string
	// Audit says where the audit log goes (AUDIT_*).
	Audit Audit
	// LearnDir is where learning volumes (policy=learn) write the
	// policies they learn: below the logdir mount, whose source is the
	// host's /var/log unless set; LearnDirHost is the same directory as
	// the host names it by default.
	LearnDir, LearnDirHost string
}

// Audit says where the audit log goes.
type Audit struct {
	// File, when set, is the file the audit log is written to, as JSON
	// lines, instead of stdout.
	File string
	// MaxSize rotates the file; Keep rotated files are kept.
	MaxSize int64
	Keep    int
	// Refuse: while lines cannot be written, requests are refused
	// (AUDIT_ON_FULL=refuse) rather than lines dropped (drop).
	Refuse bool
}

// auditFileRE is what AUDIT_FILE may be: a file name.
var auditFileRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// parseAudit reads the audit file's size, count and behaviour when
// full, from the plugin's settings or serve's flags (named by keys).
func parseAudit(a *Audit, size, keep, onFull string, keys [3]string) []error {
	var errs []error
	n, err := units.RAMInBytes(size)
	if err != nil || n < audit.MinFileSize || n > 1<<40 {
		errs = append(errs, fmt.Errorf("%s: want a size from 64k to 1t, such as 100m", keys[0]))
	}
	a.MaxSize = n
	k, err := strconv.Atoi(keep)
	if err != nil || k < 1 || k > 1000 {
		errs = append(errs, fmt.Errorf("%s: want a number of rotated files to keep, from 1 to 1000", keys[1]))
	}
	a.Keep = k
	switch onFull {
	case "drop":
	case "refuse":
		a.Refuse = true
	default:
		errs = append(errs, fmt.Errorf("%s: want drop (lines are dropped and counted) or refuse (requests are refused)", keys[2]))
	}
	return errs
}

// Keys lists the environment settings Load reads, for docs and errors.
var Keys = []string{"LOG_LEVEL", "LOG_FORMAT", "SOCKET_DIR", "USERNS_REMAP", "REMAP_UID", "REMAP_GID", "POLICY_DIR", "METRICS_SOCKET",
	"AUDIT_FILE", "AUDIT_MAX_SIZE", "AUDIT_KEEP", "AUDIT_ON_FULL"}

// Load parses args (without the program name and subcommand) and getenv
// into a Config. Bad values are errors, never silent defaults.
func Load(args []string, getenv func(string) string) (*Config, error) {
	c := &Config{
		PluginSocket:   "/run/docker/plugins/sockrelay.sock",
		StateDir:       "/mnt/volumes/.sockrelay",
		VolumeRoot:     "/mnt/volumes",
		SocketDirMount: "/host/run",
		SubUIDFile:     "/host/etc/subuid",
		SubGIDFile:     "/host/etc/subgid",
		LogDir:         "/host/log/sockrelay",
		LearnDir:       "/host/log/sockrelay/learned",
		LearnDirHost:   "/var/log/sockrelay/learned",
	}
	env := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}

	var errs []error
	if err := c.LogLevel.UnmarshalText([]byte(env("LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: want debug, info, warn or error"))
	}
	c.LogFormat = env("LOG_FORMAT", "text")
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT: want text or json"))
	}
	c.HostSocketDir = env("SOCKET_DIR", "/var/run")
	if !filepath.IsAbs(c.HostSocketDir) || filepath.Clean(c.HostSocketDir) != c.HostSocketDir || c.HostSocketDir == "/" {
		errs = append(errs, fmt.Errorf("SOCKET_DIR: want a clean absolute directory other than /"))
	}
	// POLICY_DIR is a host path below /etc, which the plugin sees,
	// read-only, at /host/etc.
	if pd := env("POLICY_DIR", "/etc/sockrelay/policies"); !strings.HasPrefix(pd, "/etc/") || filepath.Clean(pd) != pd {
		errs = append(errs, fmt.Errorf("POLICY_DIR: want a clean directory below /etc"))
	} else {
		c.PolicyDir, c.PolicyDirHost = "/host"+pd, pd
	}
	c.RemapUser = env("USERNS_REMAP", "default")
	for _, p := range []struct {
		key string
		dst **uint32
	}{{"REMAP_UID", &c.RemapUID}, {"REMAP_GID", &c.RemapGID}} {
		v := env(p.key, "")
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 1<<32-1 {
			errs = append(errs, fmt.Errorf("%s: want a host id from 0 to 4294967294", p.key))
			continue
		}
		id := uint32(n)
		*p.dst = &id
	}
	if (c.RemapUID == nil) != (c.RemapGID == nil) {
		errs = append(errs, errors.New("REMAP_UID and REMAP_GID must be set together"))
	}
	if f := env("AUDIT_FILE", ""); f != "" && !auditFileRE.MatchString(f) {
		errs = append(errs, errors.New("AUDIT_FILE: want a file name (letters, digits, '_', '.', '-'), such as audit.log, for a file in the logdir mount's sockrelay/ directory (/var/log/sockrelay by default)"))
	} else {
		c.Audit.File = f
	}
	errs = append(errs, parseAudit(&c.Audit, env("AUDIT_MAX_SIZE", "100m"), env("AUDIT_KEEP", "5"), env("AUDIT_ON_FULL", "drop"),
		[3]string{"AUDIT_MAX_SIZE", "AUDIT_KEEP", "AUDIT_ON_FULL"})...)

	fs := flag.NewFlagSet("sockrelay plugin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.PluginSocket, "plugin-socket", c.PluginSocket, "VolumeDriver API socket")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "state directory: a record per volume")
	fs.StringVar(&c.VolumeRoot, "volume-root", c.VolumeRoot, "directory of the volume directories (the propagatedMount)")
	fs.StringVar(&c.SocketDirMount, "socket-dir-mount", c.SocketDirMount, "where the host's SOCKET_DIR is mounted")
	fs.StringVar(&c.SubUIDFile, "subuid", c.SubUIDFile, "the host's /etc/subuid")
	fs.StringVar(&c.SubGIDFile, "subgid", c.SubGIDFile, "the host's /etc/subgid")
	fs.StringVar(&c.PolicyDir, "policy-dir", c.PolicyDir, "directory of policy files (file:NAME)")
	fs.StringVar(&c.LogDir, "log-dir", c.LogDir, "the plugin's directory in the logdir mount")
	fs.StringVar(&c.LearnDir, "learn-dir", c.LearnDir, "directory of learned policies (policy=learn)")
	if err := fs.Parse(args); err != nil {
		errs = append(errs, err)
	} else if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	c.DefaultTarget = filepath.Join(c.HostSocketDir, "docker.sock")
	// METRICS_SOCKET is a host path below SOCKET_DIR: the sockdir mount
	// is the plugin's one writable view of the host.
	if ms := env("METRICS_SOCKET", ""); ms != "" {
		rel, err := filepath.Rel(c.HostSocketDir, ms)
		inside := filepath.Join(c.SocketDirMount, rel)
		switch {
		case !filepath.IsAbs(ms) || filepath.Clean(ms) != ms || err != nil || rel == "." || strings.HasPrefix(rel, ".."):
			errs = append(errs, fmt.Errorf("METRICS_SOCKET: want a clean absolute path below SOCKET_DIR (%s), such as %s", c.HostSocketDir, filepath.Join(c.HostSocketDir, "sockrelay-metrics.sock")))
		case ms == c.DefaultTarget:
			errs = append(errs, errors.New("METRICS_SOCKET: want a socket of its own, not the daemon's"))
		case len(inside) > maxSocketPath:
			errs = append(errs, fmt.Errorf("METRICS_SOCKET: the path is too long for a Unix socket; want at most %d bytes below SOCKET_DIR", maxSocketPath-len(c.SocketDirMount)-1))
		default:
			c.MetricsSocket, c.MetricsSocketHost = inside, ms
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bad settings: %w", err)
	}
	if c.Audit.File != "" {
		c.Audit.File = filepath.Join(c.LogDir, c.Audit.File)
	}
	return c, nil
}

// maxSocketPath is the longest path a Unix socket can be bound at
// (sun_path's 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// Logger builds the process logger from the settings.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Serve holds the settings of `sockrelay serve`, the stand-alone relay.
type Serve struct {
	LogLevel  slog.Level
	LogFormat string
	// Listen is the socket to serve; Target is the upstream socket.
	Listen, Target string
	// UID and GID own the socket (host ids); Perm is its mode.
	UID, GID uint32
	Perm     uint32
	// Policy, when set, serves the socket through that policy: a preset
	// or file:NAME in PolicyDir, or learn:NAME, which writes NAME.yaml in
	// LearnDir.
	Policy, PolicyDir, LearnDir string
	// Metrics, when set, is where the metrics are served: unix:PATH or a
	// TCP address.
	Metrics string
	// Audit says where the policy's audit log goes.
	Audit Audit
}

// LoadServe parses the flags of `sockrelay serve` and the LOG_* settings.
func LoadServe(args []string, getenv func(string) string) (*Serve, error) {
	base, err := Load(nil, getenv)
	if err != nil {
		return nil, err
	}
	s := &Serve{LogLevel: base.LogLevel, LogFormat: base.LogFormat}
	fs := flag.NewFlagSet("sockrelay serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&s.Listen, "listen", "", "socket to create and serve (required)")
	fs.StringVar(&s.Target, "target", "/var/run/docker.sock", "upstream socket")
	uid := fs.Uint64("uid", 0, "host uid that owns the socket")
	gid := fs.Uint64("gid", 0, "host gid that owns the socket")
	perm := fs.String("perm", "0660", "socket permission bits, octal")
	fs.StringVar(&s.Policy, "policy", "", "serve through this policy: read-only, no-escalation, full or file:NAME")
	fs.StringVar(&s.PolicyDir, "policy-dir", "/etc/sockrelay/policies", "directory of policy files")
	fs.StringVar(&s.Metrics, "metrics", "", "serve Prometheus metrics on unix:PATH or a TCP address HOST:PORT")
	fs.StringVar(&s.Audit.File, "audit-file", "", "write the audit log to this file, rotated by size")
	auditSize := fs.String("audit-max-size", "100m", "rotate the audit file at this size")
	auditKeep := fs.String("audit-keep", "5", "rotated audit files kept")
	auditFull := fs.String("audit-on-full", "drop", "drop or refuse")
	fs.StringVar(&s.LearnDir, "learn-dir", "/var/log/sockrelay/learned", "directory of learned policies (--policy learn)")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, ServeUsage)
	}
	var errs []error
	if s.Audit.File != "" && (!filepath.IsAbs(s.Audit.File) || s.Policy == "") {
		errs = append(errs, errors.New("--audit-file: want an absolute path, with --policy (only a policy has an audit log)"))
	}
	errs = append(errs, parseAudit(&s.Audit, *auditSize, *auditKeep, *auditFull,
		[3]string{"--audit-max-size", "--audit-keep", "--audit-on-full"})...)
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if s.Listen == "" || !filepath.IsAbs(s.Listen) {
		errs = append(errs, errors.New("--listen: want the absolute path of the socket to create"))
	}
	if s.Target == "" || !filepath.IsAbs(s.Target) {
		errs = append(errs, errors.New("--target: want the absolute path of the upstream socket"))
	}
	if s.Listen != "" && filepath.Clean(s.Listen) == filepath.Clean(s.Target) {
		errs = append(errs, errors.New("--listen and --target are the same socket"))
	}
	if s.Metrics != "" {
		if path, ok := strings.CutPrefix(s.Metrics, "unix:"); ok {
			if !filepath.IsAbs(path) || filepath.Clean(path) != path || len(path) > maxSocketPath {
				errs = append(errs, fmt.Errorf("--metrics: want unix: and a clean absolute socket path of at most %d bytes", maxSocketPath))
			} else if path == filepath.Clean(s.Listen) || path == filepath.Clean(s.Target) {
				errs = append(errs, errors.New("--metrics: want a socket of its own, not --listen's or --target's"))
			}
		} else if _, port, err := net.SplitHostPort(s.Metrics); err != nil || port == "" {
			errs = append(errs, errors.New("--metrics: want unix:PATH or a TCP address HOST:PORT, such as 127.0.0.1:9323"))
		}
	}
	if *uid >= 1<<32-1 || *gid >= 1<<32-1 {
		errs = append(errs, errors.New("--uid and --gid: want host ids from 0 to 4294967294"))
	}
	p, err := strconv.ParseUint(*perm, 8, 32)
	if err != nil || p > 0o777 || p&0o600 != 0o600 {
		errs = append(errs, errors.New("--perm: want octal permission bits with owner read and write, such as 0660"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, ServeUsage)
	}
	s.UID, s.GID, s.Perm = uint32(*uid), uint32(*gid), uint32(p)
	return s, nil
}

// ServeUsage documents `sockrelay serve`.
const ServeUsage = `usage: sockrelay serve --listen PATH [--target PATH] [--uid N] [--gid N] [--perm 0660]
                       [--policy SPEC [--audit-file PATH ...]] [--metrics ADDR]
  --listen PATH   socket to create and serve; its directory must exist
  --target PATH   upstream socket (default /var/run/docker.sock)
  --uid, --gid N  host ids that own the socket (default 0); for a remapped
                  container's root, the first /etc/subuid line (e.g. 100000)
  --perm MODE     socket permission bits, octal (default 0660)
  --policy SPEC   serve through a policy: read-only, no-escalation, full, or
                  file:NAME for NAME.yaml in --policy-dir (default
                  /etc/sockrelay/policies); one JSON audit line per request
                  on stdout. A policy file is read again within 2 s of a
                  change; an invalid change is refused and logged, and the
                  policy in force stays. learn:NAME serves as full and
                  writes the policy it learns to NAME.yaml in --learn-dir
                  (default /var/log/sockrelay/learned).
  --metrics ADDR  serve Prometheus metrics on unix:PATH (a socket owned by
                  this user, mode 0660) or a TCP address HOST:PORT; it
                  must be free, or serve does not start
  --audit-file PATH  write the audit lines to PATH instead of stdout, as
                  JSON lines (mode 0640; the directory must exist), rotated
                  at --audit-max-size (default 100m) to PATH.1 … PATH.N,
                  N = --audit-keep (default 5)
  --audit-on-full drop|refuse  while the file cannot take lines (disk full,
                  failing, or 4 MiB of lines waiting): drop them, counted
                  and warned about (default), or refuse requests with 503
                  until a write succeeds`

// Logger builds the logger of `sockrelay serve`.
func (s *Serve) Logger(w io.Writer) *slog.Logger {
	return (&Config{LogLevel: s.LogLevel, LogFormat: s.LogFormat}).Logger(w)
}
