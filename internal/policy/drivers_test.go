package policy

import (
	"errors"
	"strings"
	"testing"
)

// pluginID is a plugin's ID as GET /plugins returns it; dockerd resolves a
// driver given as the full ID or as any unique prefix of it.
const pluginID = "3f2a9c0e5b7d41a8b6c2e9f0d1a3b5c7e9f1a2b4c6d8e0f2a4b6c8d0e2f4a6b8"

func volumeMount(driver string) string {
	return hc(`"Mounts":[{"Type":"volume","Source":"s","Target":"/s","VolumeOptions":{"DriverConfig":{"Name":"` + driver + `"}}}]`)
}

func serviceMount(driver string) string {
	return `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine","Mounts":[{"Type":"volume","Source":"s","Target":"/s","VolumeOptions":{"DriverConfig":{"Name":"` + driver + `"}}}]}}}`
}

// TestVolumeDriversNoEscalation: only the built-in local driver, however
// the request spells another one.
func TestVolumeDriversNoEscalation(t *testing.T) {
	p := preset(t, "no-escalation")
	runCases(t, p, []reqCase{
		deniedBody("volume create, a plugin ID prefix", "POST", volumeC, `{"Name":"s","Driver":"3f2a"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, a plugin's full ID", "POST", volumeC, `{"Name":"s","Driver":"`+pluginID+`"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, lower-case key", "POST", volumeC, `{"name":"s","driver":"3f2a9c"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, another plugin", "POST", volumeC, `{"Name":"x","Driver":"rexray/ebs"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, sockrelay", "POST", volumeC, `{"Name":"s","Driver":"sockrelay:latest"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, a plugin aliased local", "POST", volumeC, `{"Name":"s","Driver":"local:latest"}`, "volume-driver-not-allowed"),
		deniedBody("volume create, LOCAL", "POST", volumeC, `{"Name":"s","Driver":"LOCAL"}`, "volume-driver-not-allowed"),
		deniedBody("--volume-driver, an ID prefix", "POST", create, hc(`"VolumeDriver":"3f2a","Binds":["x:/var/run"]`), "volume-driver-not-allowed"),
		deniedBody("--volume-driver at the top level (Docker 26 and older)", "POST", create, `{"Image":"alpine","VolumeDriver":"3f2a"}`, "volume-driver-not-allowed"),
		deniedBody("--mount volume-driver, an ID prefix", "POST", create, volumeMount("3f2a9"), "volume-driver-not-allowed"),
		deniedBody("--mount volume-driver, the full ID", "POST", create, volumeMount(pluginID), "volume-driver-not-allowed"),
		deniedBody("service mount, an ID prefix", "POST", svc, serviceMount("3f2a"), "volume-driver-not-allowed"),
		deniedBody("service update mount, another plugin", "POST", svcUp, serviceMount("vieux/sshfs"), "volume-driver-not-allowed"),
		deniedBody("start with a legacy HostConfig, an ID prefix", "POST", start, `{"VolumeDriver":"3f2a"}`, "volume-driver-not-allowed"),
		allowedBody("volume create, local", "POST", volumeC, `{"Name":"d","Driver":"local"}`),
		allowedBody("volume create, driver omitted", "POST", volumeC, `{"Name":"d"}`),
		allowedBody("--volume-driver local", "POST", create, hc(`"VolumeDriver":"local","Binds":["x:/x"]`)),
		allowedBody("--mount, driver local", "POST", create, volumeMount("local")),
		allowedBody("--mount, driver omitted", "POST", create, volumeMount("")),
		allowedBody("service mount, driver local", "POST", svc, serviceMount("local")),
	})
}

const driversFile = `allow: [{method: "*", path: "/*"}]
create:
  volume_drivers:
    - vieux/sshfs
    - rexray/ebs:0.11
    - cafe:latest
`

// TestVolumeDriversFile: listed drivers match as dockerd reads a plugin
// reference, never as an ID prefix or by digest.
func TestVolumeDriversFile(t *testing.T) {
	p, err := Parse("drivers", []byte(driversFile))
	if err != nil {
		t.Fatalf("Parse: got %v, want nil", err)
	}
	runCases(t, p, []reqCase{
		allowedBody("listed, as written", "POST", volumeC, `{"Driver":"vieux/sshfs"}`),
		allowedBody("listed, with its tag", "POST", volumeC, `{"Driver":"vieux/sshfs:latest"}`),
		allowedBody("listed, fully qualified", "POST", volumeC, `{"Driver":"docker.io/vieux/sshfs:latest"}`),
		allowedBody("listed with a tag", "POST", volumeC, `{"Driver":"rexray/ebs:0.11"}`),
		allowedBody("listed hex name with its tag", "POST", volumeC, `{"Driver":"cafe:latest"}`),
		allowedBody("listed hex name, fully qualified", "POST", volumeC, `{"Driver":"docker.io/library/cafe:latest"}`),
		allowedBody("local", "POST", volumeC, `{"Driver":"local"}`),
		allowedBody("--mount, listed", "POST", create, volumeMount("vieux/sshfs:latest")),
		allowedBody("service mount, listed", "POST", svc, serviceMount("docker.io/vieux/sshfs")),
		deniedBody("another tag", "POST", volumeC, `{"Driver":"vieux/sshfs:next"}`, "volume-driver-not-allowed"),
		deniedBody("the tag of the list left out", "POST", volumeC, `{"Driver":"rexray/ebs"}`, "volume-driver-not-allowed"),
		deniedBody("a digest", "POST", volumeC, `{"Driver":"vieux/sshfs@sha256:`+strings.Repeat("a", 64)+`"}`, "volume-driver-not-allowed"),
		deniedBody("a listed name that is also an ID prefix", "POST", volumeC, `{"Driver":"cafe"}`, "volume-driver-not-allowed"),
		deniedBody("an ID prefix", "POST", volumeC, `{"Driver":"3f2a"}`, "volume-driver-not-allowed"),
		deniedBody("upper case", "POST", volumeC, `{"Driver":"Vieux/sshfs"}`, "volume-driver-not-allowed"),
		deniedBody("another registry", "POST", volumeC, `{"Driver":"example.com/vieux/sshfs"}`, "volume-driver-not-allowed"),
		deniedBody("--volume-driver, not listed", "POST", create, hc(`"VolumeDriver":"sockrelay"`), "volume-driver-not-allowed"),
	})
	// No list: local only, as no-escalation.
	p, err = Parse("min", []byte(`allow: [{method: "*", path: "/*"}]`))
	if err != nil {
		t.Fatal(err)
	}
	runCases(t, p, []reqCase{
		deniedBody("no list, another plugin", "POST", volumeC, `{"Driver":"vieux/sshfs"}`, "volume-driver-not-allowed"),
		allowedBody("no list, local", "POST", volumeC, `{"Driver":"local"}`),
	})
}

func TestVolumeDriversFileInvalid(t *testing.T) {
	cases := []struct {
		name, entry string
		why         string
	}{
		{"hex only", "cafe", `"cafe" could also be read as a plugin ID prefix; write it with its tag, like "cafe:latest"`},
		{"a full ID", pluginID, "could also be read as a plugin ID prefix"},
		{"upper-case hex", "CAFE", "could also be read as a plugin ID prefix"},
		{"a digest", "vieux/sshfs@sha256:" + strings.Repeat("a", 64), "carries a digest, which dockerd does not resolve; write it with its tag"},
		{"not a reference", "Vieux/SSHFS", "is not a plugin name"},
		{"local", "local", "local is built in and always allowed"},
		{"empty", `""`, "is not a plugin name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := "allow: [{method: GET, path: /_ping}]\ncreate:\n  volume_drivers:\n    - vieux/sshfs\n    - " + tc.entry + "\n"
			p, err := Parse("t", []byte(data))
			var fe *FileError
			if p != nil || !errors.As(err, &fe) {
				t.Fatalf("Parse: got %v, %v, want a *FileError", p, err)
			}
			if fe.Line != 5 || !strings.Contains(fe.Reason, tc.why) {
				t.Fatalf("Parse: got %q (line %d), want line 5 saying %q", err, fe.Line, tc.why)
			}
		})
	}
}

func logConfig(typ, opts string) string {
	return hc(`"LogConfig":{"Type":"` + typ + `","Config":{` + opts + `}}`)
}

// TestLogDriversNoEscalation: dockerd itself connects or writes wherever a
// log driver's options say (a host socket, an address, a CA file), with
// the host's credentials; only json-file, local and none are allowed, and
// the daemon's default only with options that name no place.
func TestLogDriversNoEscalation(t *testing.T) {
	p := preset(t, "no-escalation")
	cases := []reqCase{
		deniedBody("syslog to the daemon's socket", "POST", create, logConfig("syslog", `"syslog-address":"unix:///var/run/docker.sock"`), "log-driver-not-allowed"),
		deniedBody("the default driver, with a syslog address", "POST", create, logConfig("", `"syslog-address":"unix:///var/run/docker.sock"`), "log-driver-not-allowed"),
		deniedBody("the default driver, with a fluentd address", "POST", create, logConfig("", `"max-size":"1m","fluentd-address":"unix:///run/x.sock"`), "log-driver-not-allowed"),
		deniedBody("the default driver, with a tag", "POST", create, logConfig("", `"tag":"sshd"`), "log-driver-not-allowed"),
		deniedBody("lower-case keys", "POST", create, `{"hostconfig":{"logconfig":{"type":"gelf","config":{"gelf-address":"udp://127.0.0.1:12201"}}}}`, "log-driver-not-allowed"),
		deniedBody("top-level LogConfig (Docker 26 and older)", "POST", create, `{"Image":"alpine","LogConfig":{"Type":"syslog"}}`, "log-driver-not-allowed"),
		deniedBody("start with a legacy HostConfig", "POST", start, `{"LogConfig":{"Type":"syslog"}}`, "log-driver-not-allowed"),
		deniedBody("a plugin ID prefix", "POST", create, logConfig("3f2a", ``), "log-driver-not-allowed"),
		deniedBody("JSON-FILE is not json-file", "POST", create, logConfig("JSON-FILE", ``), "log-driver-not-allowed"),
		deniedBody("json-file:latest is a plugin", "POST", create, logConfig("json-file:latest", ``), "log-driver-not-allowed"),
		deniedBody("service log driver", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"},"LogDriver":{"Name":"syslog","Options":{"syslog-address":"tcp://127.0.0.1:25"}}}}`, "log-driver-not-allowed"),
		deniedBody("service update log driver, lower case", "POST", svcUp, `{"tasktemplate":{"logdriver":{"name":"fluentd"}}}`, "log-driver-not-allowed"),
		deniedBody("service, the default driver with an address", "POST", svc, `{"TaskTemplate":{"LogDriver":{"Options":{"gelf-address":"udp://10.0.0.1:1"}}}}`, "log-driver-not-allowed"),
		deniedBody("swarm init task defaults", "POST", "/v1.47/swarm/init", `{"ListenAddr":"0.0.0.0:2377","Spec":{"TaskDefaults":{"LogDriver":{"Name":"syslog"}}}}`, "log-driver-not-allowed"),
		deniedBody("swarm update task defaults", "POST", "/v1.47/swarm/update?version=8", `{"TaskDefaults":{"LogDriver":{"Name":"awslogs","Options":{"awslogs-endpoint":"http://10.0.0.1"}}}}`, "log-driver-not-allowed"),
		allowedBody("json-file with options", "POST", create, logConfig("json-file", `"max-size":"10m","max-file":"3","tag":"{{.Name}}","labels":"a"`)),
		allowedBody("local", "POST", create, logConfig("local", `"max-size":"10m","compress":"true"`)),
		allowedBody("none", "POST", create, logConfig("none", ``)),
		allowedBody("the default driver", "POST", create, logConfig("", ``)),
		allowedBody("the default driver with size options", "POST", create, logConfig("", `"max-size":"10m","max-file":"3","mode":"non-blocking","max-buffer-size":"4m"`)),
		allowedBody("service json-file", "POST", svc, `{"TaskTemplate":{"ContainerSpec":{"Image":"alpine"},"LogDriver":{"Name":"json-file","Options":{"max-size":"1m"}}}}`),
		allowedBody("swarm init", "POST", "/v1.47/swarm/init", `{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"","Spec":{"TaskDefaults":{}}}`),
		allowedBody("swarm init, task defaults json-file", "POST", "/v1.47/swarm/init", `{"Spec":{"TaskDefaults":{"LogDriver":{"Name":"json-file"}}}}`),
	}
	for _, drv := range []string{"syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "gcplogs", "logentries", "etwlogs", "vieux/logger"} {
		cases = append(cases, deniedBody("--log-driver "+drv, "POST", create, logConfig(drv, ``), "log-driver-not-allowed"))
	}
	runCases(t, p, cases)
}

func TestLogDriversFile(t *testing.T) {
	p := mustParse(t, "logs", `allow: [{method: "*", path: "/*"}]
create:
  log_drivers: [syslog, vieux/logger]
`)
	runCases(t, p, []reqCase{
		allowedBody("listed built-in", "POST", create, logConfig("syslog", `"syslog-address":"udp://10.0.0.1:514"`)),
		allowedBody("listed plugin, with its tag", "POST", create, logConfig("vieux/logger:latest", ``)),
		allowedBody("listed, service", "POST", svc, `{"TaskTemplate":{"LogDriver":{"Name":"syslog"}}}`),
		allowedBody("json-file", "POST", create, logConfig("json-file", ``)),
		deniedBody("not listed", "POST", create, logConfig("gelf", ``), "log-driver-not-allowed"),
		deniedBody("an ID prefix", "POST", create, logConfig("3f2a", ``), "log-driver-not-allowed"),
		deniedBody("the default driver, with an address", "POST", create, logConfig("", `"syslog-address":"udp://10.0.0.1:514"`), "log-driver-not-allowed"),
	})
	if _, err := Parse("t", []byte("allow: [{method: GET, path: /_ping}]\ncreate:\n  log_drivers: [json-file]\n")); err == nil || !strings.Contains(err.Error(), "line 3: create: log_drivers: json-file is built in and always allowed") {
		t.Fatalf("Parse: got %v, want json-file refused as built in", err)
	}
	if _, err := Parse("t", []byte("allow: [{method: GET, path: /_ping}]\ncreate:\n  log_drivers: [beef]\n")); err == nil || !strings.Contains(err.Error(), "line 3:") || !strings.Contains(err.Error(), "plugin ID prefix") {
		t.Fatalf("Parse: got %v, want beef refused as an ID prefix", err)
	}
}
