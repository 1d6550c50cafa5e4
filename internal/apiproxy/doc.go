// Package apiproxy serves the Docker API through a policy. Each request on
// a client connection, kept-alive and pipelined ones included, is read and
// decided (policy.Decide) before a byte of it reaches the daemon. Bodies
// the policy inspects are read whole (bounded) and forwarded as read;
// other bodies are passed through as they come, by splice(2), never
// buffered. After a protocol switch (101) the connection is a raw stream
// with half-close passed on both ways. Every request is written to an
// audit log.
//
// The files follow a request: proxy.go accepts connections, conn.go serves
// one (its request loop, refusals, the watch for a client that leaves),
// request.go and response.go forward each way, framing.go and chunked.go
// read HTTP/1 framing exactly as dockerd's parser (Go's net/http) does,
// pool.go keeps daemon connections for reuse, limits.go bounds what
// clients can hold.
//
// # Why not net/http/httputil.ReverseProxy
//
// ReverseProxy is the well-kept way to proxy HTTP in Go, and the first
// choice wherever it fits. It does not fit here, for reasons of the Docker
// API and of what a policy must see:
//
//   - Hijacked connections. docker attach, exec and run switch protocols,
//     or (older clients) keep a raw stream after a 200 whose end is the
//     connection's close, and rely on half-close both ways: the CLI shuts
//     its write side as soon as stdin ends and still reads the output.
//     ReverseProxy handles 101 upgrades only, and closes both sides when
//     either ends.
//   - Framing decided before forwarding. Smuggling defences must see the
//     raw head (two Content-Lengths, Transfer-Encoding beside
//     Content-Length, white space in a header name); net/http's server
//     normalises or refuses those before a handler runs, some silently.
//     A chunked body is re-framed here by Go's own rules, so that this
//     proxy and dockerd agree on where it ends, and a daemon connection
//     is reused only when its exchange provably ended.
//   - Bodies moved by splice(2). Build contexts, image loads and
//     archives are large; passing them through a user-space buffer, as
//     ReverseProxy's io.Copy does, costs CPU on the path the plugin must
//     keep fast. The body's exact length is known here, so it can be
//     spliced.
//   - Each request on a kept-alive connection is decided on its own, and
//     a refusal answers in dockerd's error shape and closes the
//     connection, never leaving an unread body to be read as a request.
//
// So the proxy reads heads with net/http's parsers (http.ReadRequest,
// http.ReadResponse) and does the rest itself, tested against Go's server
// as the oracle (FuzzChunkedBody) and against a real daemon end to end.
package apiproxy
