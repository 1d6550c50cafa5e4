package report

// Peer names: the columns of the report.
const (
	Direct    = "direct"
	Sockrelay = "sockrelay"
	Socat     = "socat"
	// Policy is `sockrelay serve --policy full`: the HTTP-aware policy
	// proxy, set to allow everything, audit log included.
	Policy = "policy"
	// Idmap is an idmapped bind mount of the upstream socket: no process
	// in the data path.
	Idmap = "idmap"
	// Plugin names the samples of the plugin figure, the sockrelay plugin
	// driven as dockerd drives it; it has no other peer, and is not among
	// Report.Peers.
	Plugin = "plugin"
)
