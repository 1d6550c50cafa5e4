package report

// Peer names: the columns of the report.
const (
	Direct = "direct"
	// PluginRelay, PluginPolicy and PluginIdmap are volumes of the
	// installed plugin, reached through their host-side socket path as a
	// container reaches them: what users run, and what the goals are of.
	PluginRelay  = "plugin-relay"
	PluginPolicy = "plugin-policy"
	PluginIdmap  = "plugin-idmap"
	// PluginPolicyScope is a policy volume like PluginPolicy's with
	// scope=volume: it is measured on the daemon only (a scope is of the
	// daemon's objects), and reported against PluginPolicy.
	PluginPolicyScope = "plugin-policy-scope"
	// Serve is `sockrelay serve`: the relay's code outside Docker.
	Serve = "serve"
	// ServePolicy is `sockrelay serve --policy full`: the policy proxy
	// outside Docker, set to allow everything, audit log included.
	ServePolicy = "serve-policy"
	Socat       = "socat"
	// SocketProxy is wollomatic/socket-proxy, a filtering proxy of
	// another project, set to allow everything.
	SocketProxy = "socket-proxy"
	// Plugin names the samples of the plugin figure, the sockrelay plugin
	// driven as dockerd drives it; it has no other peer, and is not among
	// Report.Peers.
	Plugin = "plugin"
)

// pluginPeers are the columns of the first table, beside direct.
var pluginPeers = []string{PluginRelay, PluginPolicy, PluginPolicyScope, PluginIdmap}

// peerHeads are the column heads of the tables.
var peerHeads = map[string]string{
	Direct: "direct", PluginRelay: "relay", PluginPolicy: "policy", PluginPolicyScope: "policy+scope", PluginIdmap: "idmap",
	Serve: "serve", ServePolicy: "serve --policy", Socat: "socat", SocketProxy: "socket-proxy",
}
