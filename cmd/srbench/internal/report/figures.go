package report

import "fmt"

// Layout is what a run measures, as far as the rows and their titles
// depend on it.
type Layout struct {
	// Bytes is the size of each download and upload.
	Bytes int64
	// Clients are the numbers of concurrent clients of the new-connection
	// ping.
	Clients []int
	// Burst is how many connections are made at the same instant.
	Burst int
	// Idle is how many idle connections are held for the memory figure.
	Idle int
	// DockerClients are the client counts of the /_ping figure on the
	// real daemon.
	DockerClients []int
	// Volumes are the numbers of existing volumes of the plugin figure.
	Volumes []int
}

// figure is a kind of measurement: a row of the report, or for the
// figures measured at several counts of clients or volumes, one row per
// count. Its value is the row's key, or the start of it.
type figure string

const (
	pingNew       figure = "ping_new" // per count of clients
	pingKeepAlive figure = "ping_keepalive"
	download      figure = "download"
	upload        figure = "upload"
	burstFailures figure = "burst_failures"
	idleMemory    figure = "idle_memory"
	cpuPerGiB     figure = "cpu_per_gib"
	dockerPing    figure = "docker_ping_new" // per count of clients
	dockerPs      figure = "docker_ps_new"
	dockerInspect figure = "docker_inspect_new"
	pluginCycles  figure = "plugin_cycles" // per count of volumes
)

// at is the key of the figure's row at n clients or volumes.
func (f figure) at(n int) string { return fmt.Sprintf("%s_%d", f, n) }

// Row keys, for Results.Add.
const (
	KeyPingKeepAlive = string(pingKeepAlive)
	KeyDownload      = string(download)
	KeyUpload        = string(upload)
	KeyBurst         = string(burstFailures)
	KeyIdleMem       = string(idleMemory)
	KeyCPU           = string(cpuPerGiB)
	KeyDockerPs      = string(dockerPs)
	KeyDockerInspect = string(dockerInspect)
)

func KeyPingNew(clients int) string      { return pingNew.at(clients) }
func KeyDockerPing(clients int) string   { return dockerPing.at(clients) }
func KeyPluginCycles(volumes int) string { return pluginCycles.at(volumes) }

// rowDef describes a row before it is measured.
type rowDef struct {
	figure           figure
	n                int // clients or volumes, for the figures that have counts
	key, title, unit string
	lower            bool
	format           string // of one value
	counted          bool   // failures are counted
}

func rowDefs(l Layout) []rowDef {
	var defs []rowDef
	pingDef := func(f figure, title string, c int) rowDef {
		return rowDef{figure: f, n: c, key: f.at(c), title: fmt.Sprintf(title, c, plural(c)), unit: "req/s", format: "%.0f", counted: true}
	}
	for _, c := range l.Clients {
		defs = append(defs, pingDef(pingNew, "new-conn ping, %d client%s", c))
	}
	defs = append(defs,
		rowDef{figure: pingKeepAlive, key: KeyPingKeepAlive, title: "kept-alive ping, 1 client", unit: "req/s", format: "%.0f"},
		rowDef{figure: download, key: KeyDownload, title: fmt.Sprintf("download %s, sha256 checked", sizeString(l.Bytes)), unit: "MiB/s", format: "%.0f"},
		rowDef{figure: upload, key: KeyUpload, title: fmt.Sprintf("upload %s, sha256 checked", sizeString(l.Bytes)), unit: "MiB/s", format: "%.0f"},
		rowDef{figure: burstFailures, key: KeyBurst, title: fmt.Sprintf("failed connects, burst of %d", l.Burst), unit: "conns", lower: true, format: "%.0f", counted: true},
		rowDef{figure: idleMemory, key: KeyIdleMem, title: fmt.Sprintf("memory per idle conn, %d held (Pss)", l.Idle), unit: "KiB", lower: true, format: "%.1f"},
		rowDef{figure: cpuPerGiB, key: KeyCPU, title: "relay CPU during download+upload", unit: "s/GiB", lower: true, format: "%.2f"},
	)
	for _, c := range l.DockerClients {
		defs = append(defs, pingDef(dockerPing, "dockerd /_ping, new conn, %d client%s", c))
	}
	if len(l.DockerClients) > 0 {
		defs = append(defs,
			rowDef{figure: dockerPs, key: KeyDockerPs, title: "dockerd docker ps -a, new conn, 1 client", unit: "req/s", format: "%.0f", counted: true},
			rowDef{figure: dockerInspect, key: KeyDockerInspect, title: "dockerd docker inspect, new conn, 1 client", unit: "req/s", format: "%.0f", counted: true})
	}
	for _, v := range l.Volumes {
		defs = append(defs, rowDef{figure: pluginCycles, n: v, key: pluginCycles.at(v), title: fmt.Sprintf("plugin Create+Mount+Unmount+Remove, %d volumes", v), unit: "cycles/s", format: "%.1f"})
	}
	return defs
}
