package report

// Peer names: the columns of the report.
const (
	Direct    = "direct"
	Sockrelay = "sockrelay"
	Socat     = "socat"
	// Policy is `sockrelay serve --policy full`: the HTTP-aware policy
	// proxy of issue 5, set to allow everything, audit log included.
	Policy = "policy"
	// Idmap is an idmapped bind mount of the upstream socket (issue 4):
	// no process in the data path.
	Idmap = "idmap"
	// Plugin is the column of the plugin figure: the sockrelay plugin
	// itself, driven as dockerd does.
	Plugin = "plugin"
)
