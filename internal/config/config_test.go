package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/sockrelay/sockrelay/internal/config"
)

// envOf turns a map into a getenv function.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := config.Load(nil, envOf(nil))
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"LogFormat", c.LogFormat, "text"},
		{"PluginSocket", c.PluginSocket, "/run/docker/plugins/sockrelay.sock"},
		{"StateDir", c.StateDir, "/mnt/volumes/.sockrelay"},
		{"VolumeRoot", c.VolumeRoot, "/mnt/volumes"},
		{"HostSocketDir", c.HostSocketDir, "/var/run"},
		{"SocketDirMount", c.SocketDirMount, "/host/run"},
		{"DefaultTarget", c.DefaultTarget, "/var/run/docker.sock"},
		{"RemapUser", c.RemapUser, "default"},
		// The host's /etc is mounted read-only at /host/etc.
		{"SubUIDFile", c.SubUIDFile, "/host/etc/subuid"},
		{"SubGIDFile", c.SubGIDFile, "/host/etc/subgid"},
		{"PolicyDir", c.PolicyDir, "/host/etc/sockrelay/policies"},
		{"RemapUID set", c.RemapUID != nil, false},
		{"RemapGID set", c.RemapGID != nil, false},
		// The audit log goes to stdout unless AUDIT_FILE says otherwise.
		{"Audit.File", c.Audit.File, ""},
		{"Audit.MaxSize", c.Audit.MaxSize, int64(100 << 20)},
		{"Audit.Keep", c.Audit.Keep, 5},
		{"Audit.Refuse", c.Audit.Refuse, false},
		{"LogDir", c.LogDir, "/host/log/sockrelay"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadEnvGood(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *config.Config)
	}{
		{"LOG_LEVEL debug", map[string]string{"LOG_LEVEL": "debug"}, func(t *testing.T, c *config.Config) {
			if c.LogLevel != slog.LevelDebug {
				t.Errorf("LogLevel: got %v, want %v", c.LogLevel, slog.LevelDebug)
			}
		}},
		{"LOG_LEVEL upper case and spaces", map[string]string{"LOG_LEVEL": "  WARN "}, func(t *testing.T, c *config.Config) {
			if c.LogLevel != slog.LevelWarn {
				t.Errorf("LogLevel: got %v, want %v", c.LogLevel, slog.LevelWarn)
			}
		}},
		{"LOG_LEVEL error", map[string]string{"LOG_LEVEL": "error"}, func(t *testing.T, c *config.Config) {
			if c.LogLevel != slog.LevelError {
				t.Errorf("LogLevel: got %v, want %v", c.LogLevel, slog.LevelError)
			}
		}},
		{"LOG_LEVEL blank is the default", map[string]string{"LOG_LEVEL": "   "}, func(t *testing.T, c *config.Config) {
			if c.LogLevel != slog.LevelInfo {
				t.Errorf("LogLevel: got %v, want %v", c.LogLevel, slog.LevelInfo)
			}
		}},
		{"LOG_FORMAT json", map[string]string{"LOG_FORMAT": "json"}, func(t *testing.T, c *config.Config) {
			if c.LogFormat != "json" {
				t.Errorf("LogFormat: got %v, want %v", c.LogFormat, "json")
			}
		}},
		{"SOCKET_DIR other", map[string]string{"SOCKET_DIR": "/srv/sockets"}, func(t *testing.T, c *config.Config) {
			if c.HostSocketDir != "/srv/sockets" {
				t.Errorf("HostSocketDir: got %v, want %v", c.HostSocketDir, "/srv/sockets")
			}
			if c.DefaultTarget != "/srv/sockets/docker.sock" {
				t.Errorf("DefaultTarget: got %v, want %v", c.DefaultTarget, "/srv/sockets/docker.sock")
			}
		}},
		{"USERNS_REMAP", map[string]string{"USERNS_REMAP": "alice:alice"}, func(t *testing.T, c *config.Config) {
			if c.RemapUser != "alice:alice" {
				t.Errorf("RemapUser: got %v, want %v", c.RemapUser, "alice:alice")
			}
		}},
		{"REMAP_UID and REMAP_GID", map[string]string{"REMAP_UID": "100000", "REMAP_GID": " 200000 "}, func(t *testing.T, c *config.Config) {
			if c.RemapUID == nil || c.RemapGID == nil {
				t.Fatalf("RemapUID, RemapGID: got %v, %v, want both set", c.RemapUID, c.RemapGID)
			}
			if *c.RemapUID != 100000 || *c.RemapGID != 200000 {
				t.Errorf("remap: got %d:%d, want 100000:200000", *c.RemapUID, *c.RemapGID)
			}
		}},
		{"POLICY_DIR below /etc", map[string]string{"POLICY_DIR": "/etc/sr/p"}, func(t *testing.T, c *config.Config) {
			if c.PolicyDir != "/host/etc/sr/p" {
				t.Errorf("PolicyDir: got %v, want %v", c.PolicyDir, "/host/etc/sr/p")
			}
		}},
		{"METRICS_SOCKET below SOCKET_DIR", map[string]string{"SOCKET_DIR": "/run/d", "METRICS_SOCKET": "/run/d/sr/m.sock"}, func(t *testing.T, c *config.Config) {
			if c.MetricsSocket != "/host/run/sr/m.sock" || c.MetricsSocketHost != "/run/d/sr/m.sock" {
				t.Errorf("MetricsSocket, MetricsSocketHost: got %q, %q, want %q, %q", c.MetricsSocket, c.MetricsSocketHost, "/host/run/sr/m.sock", "/run/d/sr/m.sock")
			}
		}},
		{"METRICS_SOCKET unset", nil, func(t *testing.T, c *config.Config) {
			if c.MetricsSocket != "" {
				t.Errorf("MetricsSocket: got %q, want none", c.MetricsSocket)
			}
		}},
		{"REMAP ids zero", map[string]string{"REMAP_UID": "0", "REMAP_GID": "0"}, func(t *testing.T, c *config.Config) {
			if c.RemapUID == nil || *c.RemapUID != 0 || c.RemapGID == nil || *c.RemapGID != 0 {
				t.Errorf("remap: got %v:%v, want 0:0", c.RemapUID, c.RemapGID)
			}
		}},
		{"REMAP ids largest", map[string]string{"REMAP_UID": "4294967294", "REMAP_GID": "4294967294"}, func(t *testing.T, c *config.Config) {
			if c.RemapUID == nil || *c.RemapUID != 4294967294 {
				t.Errorf("RemapUID: got %v, want 4294967294", c.RemapUID)
			}
		}},
	}
	tests = append(tests, struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c *config.Config)
	}{"AUDIT_*", map[string]string{"AUDIT_FILE": "audit.log", "AUDIT_MAX_SIZE": "1m", "AUDIT_KEEP": "2", "AUDIT_ON_FULL": "refuse"}, func(t *testing.T, c *config.Config) {
		want := config.Audit{File: "/host/log/sockrelay/audit.log", MaxSize: 1 << 20, Keep: 2, Refuse: true}
		if c.Audit != want {
			t.Errorf("Audit: got %+v, want %+v", c.Audit, want)
		}
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(nil, envOf(tt.env))
			if err != nil {
				t.Fatalf("Load: got %v, want nil", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadEnvBad(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // in the error
	}{
		{"LOG_LEVEL unknown", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"LOG_FORMAT unknown", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"LOG_FORMAT case", map[string]string{"LOG_FORMAT": "JSON"}, "LOG_FORMAT"},
		{"SOCKET_DIR relative", map[string]string{"SOCKET_DIR": "var/run"}, "SOCKET_DIR"},
		{"SOCKET_DIR trailing slash", map[string]string{"SOCKET_DIR": "/var/run/"}, "SOCKET_DIR"},
		{"SOCKET_DIR dot dot", map[string]string{"SOCKET_DIR": "/var/../run"}, "SOCKET_DIR"},
		{"SOCKET_DIR double slash", map[string]string{"SOCKET_DIR": "/var//run"}, "SOCKET_DIR"},
		{"SOCKET_DIR root", map[string]string{"SOCKET_DIR": "/"}, "SOCKET_DIR"},
		{"POLICY_DIR outside /etc", map[string]string{"POLICY_DIR": "/var/lib/policies"}, "POLICY_DIR"},
		{"POLICY_DIR escapes /etc", map[string]string{"POLICY_DIR": "/etc/../root"}, "POLICY_DIR"},
		{"POLICY_DIR relative", map[string]string{"POLICY_DIR": "etc/policies"}, "POLICY_DIR"},
		{"POLICY_DIR /etc itself", map[string]string{"POLICY_DIR": "/etc"}, "POLICY_DIR"},
		{"METRICS_SOCKET outside SOCKET_DIR", map[string]string{"METRICS_SOCKET": "/tmp/m.sock"}, "METRICS_SOCKET"},
		{"METRICS_SOCKET escapes SOCKET_DIR", map[string]string{"METRICS_SOCKET": "/var/run/../m.sock"}, "METRICS_SOCKET"},
		{"METRICS_SOCKET beside SOCKET_DIR", map[string]string{"METRICS_SOCKET": "/var/runx/m.sock"}, "METRICS_SOCKET"},
		{"METRICS_SOCKET is SOCKET_DIR", map[string]string{"METRICS_SOCKET": "/var/run"}, "METRICS_SOCKET"},
		{"METRICS_SOCKET the daemon's", map[string]string{"METRICS_SOCKET": "/var/run/docker.sock"}, "not the daemon's"},
		{"METRICS_SOCKET relative", map[string]string{"METRICS_SOCKET": "var/run/m.sock"}, "METRICS_SOCKET"},
		{"METRICS_SOCKET too long", map[string]string{"METRICS_SOCKET": "/var/run/" + strings.Repeat("d/", 50) + "m.sock"}, "too long"},
		{"REMAP_UID alone", map[string]string{"REMAP_UID": "100000"}, "set together"},
		{"REMAP_GID alone", map[string]string{"REMAP_GID": "100000"}, "set together"},
		{"REMAP_UID not a number", map[string]string{"REMAP_UID": "abc", "REMAP_GID": "1"}, "REMAP_UID"},
		{"REMAP_GID negative", map[string]string{"REMAP_UID": "1", "REMAP_GID": "-1"}, "REMAP_GID"},
		{"REMAP_UID too big", map[string]string{"REMAP_UID": "4294967296", "REMAP_GID": "1"}, "REMAP_UID"},
		{"REMAP_UID nobody", map[string]string{"REMAP_UID": "4294967295", "REMAP_GID": "1"}, "REMAP_UID"},
		{"REMAP_GID hex", map[string]string{"REMAP_UID": "1", "REMAP_GID": "0x10"}, "REMAP_GID"},
		{"REMAP_UID float", map[string]string{"REMAP_UID": "1.5", "REMAP_GID": "1"}, "REMAP_UID"},
		{"REMAP_UID inner space", map[string]string{"REMAP_UID": "1 2", "REMAP_GID": "1"}, "REMAP_UID"},
		{"AUDIT_FILE a path", map[string]string{"AUDIT_FILE": "a/audit.log"}, "AUDIT_FILE"},
		{"AUDIT_FILE escapes", map[string]string{"AUDIT_FILE": "../audit.log"}, "AUDIT_FILE"},
		{"AUDIT_FILE absolute", map[string]string{"AUDIT_FILE": "/etc/passwd"}, "AUDIT_FILE"},
		{"AUDIT_FILE hidden", map[string]string{"AUDIT_FILE": ".audit"}, "AUDIT_FILE"},
		{"AUDIT_FILE newline", map[string]string{"AUDIT_FILE": "a\nb"}, "AUDIT_FILE"},
		{"AUDIT_MAX_SIZE too small", map[string]string{"AUDIT_MAX_SIZE": "1k"}, "AUDIT_MAX_SIZE"},
		{"AUDIT_MAX_SIZE not a size", map[string]string{"AUDIT_MAX_SIZE": "lots"}, "AUDIT_MAX_SIZE"},
		{"AUDIT_KEEP zero", map[string]string{"AUDIT_KEEP": "0"}, "AUDIT_KEEP"},
		{"AUDIT_KEEP not a number", map[string]string{"AUDIT_KEEP": "five"}, "AUDIT_KEEP"},
		{"AUDIT_ON_FULL unknown", map[string]string{"AUDIT_ON_FULL": "block"}, "AUDIT_ON_FULL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(nil, envOf(tt.env))
			if err == nil {
				t.Fatalf("Load: got %+v, nil error, want an error", c)
			}
			if c != nil {
				t.Errorf("Load: got config %+v with the error, want nil", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error: got %q, want it to mention %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "bad settings") {
				t.Errorf("error: got %q, want prefix %q", err, "bad settings")
			}
		})
	}
}

// Bad values must not be echoed: settings are shown in logs and to users.
func TestLoadEnvBadValueNotEchoed(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, key := range []string{"LOG_LEVEL", "LOG_FORMAT", "SOCKET_DIR", "REMAP_UID", "REMAP_GID", "POLICY_DIR", "METRICS_SOCKET",
		"AUDIT_MAX_SIZE", "AUDIT_KEEP", "AUDIT_ON_FULL"} {
		t.Run(key, func(t *testing.T) {
			env := map[string]string{"REMAP_UID": "1", "REMAP_GID": "1", key: secret}
			_, err := config.Load(nil, envOf(env))
			if err == nil {
				t.Fatalf("Load: got nil error, want an error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error: got %q, want it without the value", err)
			}
		})
	}
}

// Every bad setting is reported, not just the first.
func TestLoadReportsAllErrors(t *testing.T) {
	env := map[string]string{"LOG_LEVEL": "x", "LOG_FORMAT": "y", "SOCKET_DIR": "z", "REMAP_UID": "1"}
	_, err := config.Load([]string{"extra"}, envOf(env))
	if err == nil {
		t.Fatal("Load: got nil error, want an error")
	}
	for _, want := range []string{"LOG_LEVEL", "LOG_FORMAT", "SOCKET_DIR", "set together", `unexpected argument "extra"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error: got %q, want it to mention %q", err, want)
		}
	}
}

func TestLoadFlags(t *testing.T) {
	args := []string{
		"-plugin-socket", "/tmp/p.sock",
		"--state-dir=/tmp/state",
		"-volume-root", "/tmp/vols",
		"-socket-dir-mount", "/tmp/hostrun",
		"-subuid", "/tmp/subuid",
		"-subgid", "/tmp/subgid",
		"-policy-dir", "/tmp/policies",
	}
	c, err := config.Load(args, envOf(nil))
	if err != nil {
		t.Fatalf("Load: got %v, want nil", err)
	}
	checks := []struct{ name, got, want string }{
		{"PluginSocket", c.PluginSocket, "/tmp/p.sock"},
		{"StateDir", c.StateDir, "/tmp/state"},
		{"VolumeRoot", c.VolumeRoot, "/tmp/vols"},
		{"SocketDirMount", c.SocketDirMount, "/tmp/hostrun"},
		{"SubUIDFile", c.SubUIDFile, "/tmp/subuid"},
		{"SubGIDFile", c.SubGIDFile, "/tmp/subgid"},
		{"PolicyDir", c.PolicyDir, "/tmp/policies"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadFlagsBad(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-bogus"}, "bogus"},
		{"missing value", []string{"-state-dir"}, "state-dir"},
		{"unexpected argument", []string{"serve"}, `unexpected argument "serve"`},
		{"argument after flags", []string{"-state-dir", "/x", "more"}, `unexpected argument "more"`},
		{"help", []string{"-h"}, flag.ErrHelp.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(tt.args, envOf(nil))
			if err == nil {
				t.Fatalf("Load: got %+v, nil error, want an error", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error: got %q, want it to mention %q", err, tt.want)
			}
		})
	}
	_, err := config.Load([]string{"-h"}, envOf(nil))
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want an error wrapping flag.ErrHelp", err)
	}
}

func TestLoggerFormatAndLevel(t *testing.T) {
	tests := []struct {
		format, level string
		wantJSON      bool
	}{
		{"text", "info", false},
		{"json", "warn", true},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			c, err := config.Load(nil, envOf(map[string]string{"LOG_FORMAT": tt.format, "LOG_LEVEL": tt.level}))
			if err != nil {
				t.Fatalf("Load: got %v, want nil", err)
			}
			var buf bytes.Buffer
			log := c.Logger(&buf)
			log.Debug("hidden")
			log.Error("shown", "k", "v")
			out := buf.String()
			if strings.Contains(out, "hidden") {
				t.Errorf("output: got %q, want no debug line", out)
			}
			if !strings.Contains(out, "shown") {
				t.Errorf("output: got %q, want the error line", out)
			}
			isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
			if isJSON != tt.wantJSON {
				t.Errorf("JSON output: got %v, want %v (%q)", isJSON, tt.wantJSON, out)
			}
		})
	}
}

func TestKeysListsEnvSettings(t *testing.T) {
	for _, k := range []string{"LOG_LEVEL", "LOG_FORMAT", "SOCKET_DIR", "USERNS_REMAP", "REMAP_UID", "REMAP_GID", "POLICY_DIR", "METRICS_SOCKET",
		"AUDIT_FILE", "AUDIT_MAX_SIZE", "AUDIT_KEEP", "AUDIT_ON_FULL"} {
		found := false
		for _, have := range config.Keys {
			found = found || have == k
		}
		if !found {
			t.Errorf("Keys: got %v, want it to hold %q", config.Keys, k)
		}
	}
}

// Every setting Load reads is settable in the plugin's manifest, and the
// manifest's defaults load.
func TestManifestHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../config.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Env []struct {
			Name, Value string
			Settable    []string
		}
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range m.Env {
		if len(e.Settable) != 1 || e.Settable[0] != "value" {
			t.Errorf("config.json: %s is not settable", e.Name)
		}
		env[e.Name] = e.Value
	}
	for _, k := range config.Keys {
		if _, ok := env[k]; !ok {
			t.Errorf("config.json: no env entry %s", k)
		}
	}
	if _, err := config.Load(nil, envOf(env)); err != nil {
		t.Errorf("config.json's defaults: %v", err)
	}
}
