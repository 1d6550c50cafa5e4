package grpcstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The test's methods: solve needs its message, and is allowed when the
// message is "ok"; status needs none; anything else is refused.
const (
	solve  = "/t.Control/Solve"
	status = "/t.Control/Status"
)

func testConfig() Config {
	return Config{
		NeedMessage: func(m string) bool { return m == solve },
		Decide: func(m string, msg []byte) Verdict {
			switch {
			case m == status:
				return Verdict{Allow: true}
			case m == solve && string(msg) == "ok":
				return Verdict{Allow: true}
			case m == solve:
				return Verdict{Code: CodePermissionDenied, Rule: "no-privileged", Message: "sockrelay: no-privileged: refused"}
			}
			return Verdict{Code: CodePermissionDenied, Rule: "grpc-method-not-allowed", Message: "sockrelay: grpc-method-not-allowed: unknown"}
		},
	}
}

// socketPair is a connected pair of Unix stream sockets.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sp")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// exchange runs Serve between a client that sends in and then half-closes
// and a daemon that reads everything and then sends daemonOut and closes.
// It returns what the daemon got, what the client got, and the result.
func exchange(t testing.TB, cfg Config, in, daemonOut []byte) (toDaemon, toClient []byte, res Result) {
	t.Helper()
	cli, pc := socketPair(t)
	pu, dmn := socketPair(t)
	defer cli.Close()
	defer dmn.Close()
	done := make(chan Result, 1)
	go func() {
		done <- Serve(cfg, pc, pu, nil, nil)
		pc.Close()
		pu.Close()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(dmn)
		dmn.Write(daemonOut)
		dmn.CloseWrite()
		got <- b
	}()
	go func() {
		cli.Write(in)
		cli.CloseWrite()
	}()
	cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	toClient, _ = io.ReadAll(cli)
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not end")
	}
	return <-got, toClient, res
}

// client builds what a gRPC client sends.
type client struct {
	buf bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newClient() *client {
	c := &client{}
	c.buf.WriteString(http2.ClientPreface)
	c.fr = http2.NewFramer(&c.buf, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	c.fr.WriteSettings()
	return c
}

func (c *client) block(method string, extra ...hpack.HeaderField) []byte {
	c.hb.Reset()
	for _, h := range append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: "localhost"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...) {
		c.enc.WriteField(h)
	}
	return bytes.Clone(c.hb.Bytes())
}

func (c *client) headers(id uint32, method string, end bool) {
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(method), EndHeaders: true, EndStream: end})
}

func message(payload string) []byte {
	m := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(m[1:5], uint32(len(payload)))
	copy(m[5:], payload)
	return m
}

// frames renders what a client sent, or what the daemon got, frame by
// frame: header blocks as their header lists, DATA with its length on
// the wire (padding included) and payload.
func frames(t testing.TB, b []byte) string {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(http2.ClientPreface)) {
		t.Fatalf("no preface in %q", b)
	}
	fr := http2.NewFramer(nil, bytes.NewReader(b[len(http2.ClientPreface):]))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var out strings.Builder
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return out.String()
		}
		if err != nil {
			t.Fatalf("frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			fmt.Fprintf(&out, "HEADERS %d end=%v %v\n", f.StreamID, f.StreamEnded(), f.Fields)
		case *http2.DataFrame:
			fmt.Fprintf(&out, "DATA %d end=%v len=%d %q\n", f.StreamID, f.StreamEnded(), f.Header().Length, f.Data())
		default:
			fmt.Fprintf(&out, "%v\n", f.Header())
		}
	}
}

// answer is what the client read: the gRPC status of each stream that
// was answered here.
func answers(t testing.TB, b []byte) map[uint32][2]string {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	got := map[uint32][2]string{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return got
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			var st, msg string
			for _, f := range h.Fields {
				switch f.Name {
				case "grpc-status":
					st = f.Value
				case "grpc-message":
					msg = f.Value
				}
			}
			got[h.StreamID] = [2]string{st, msg}
		}
	}
}

func TestAllowedPassesUnchanged(t *testing.T) {
	c := newClient()
	c.headers(1, solve, false)
	c.fr.WriteData(1, true, message("ok"))
	c.headers(3, status, false)
	c.fr.WriteData(3, true, message("anything"))
	in := c.buf.Bytes()
	reply := []byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00") // an empty SETTINGS
	toDaemon, toClient, res := exchange(t, testConfig(), in, reply)
	if res.Err != nil {
		t.Fatalf("got error %v, want none", res.Err)
	}
	if got, want := frames(t, toDaemon), frames(t, in); got != want {
		t.Fatalf("the daemon got\n%s\nwant what the client sent,\n%s", got, want)
	}
	if !bytes.Equal(toClient, reply) {
		t.Fatalf("the client got %q, want the daemon's %q", toClient, reply)
	}
}

// A message split at every byte, in DATA frames, and a header block
// split at every byte, in HEADERS and CONTINUATION: every split is
// decided as the whole, and passes on unchanged.
func TestSplitAtEveryByte(t *testing.T) {
	for _, want := range []string{"ok", "no"} {
		msg := message(want)
		for i := 0; i <= len(msg); i++ {
			c := newClient()
			c.headers(1, solve, false)
			c.fr.WriteData(1, false, msg[:i])
			c.fr.WriteData(1, true, msg[i:])
			check(t, c.buf.Bytes(), want == "ok", "DATA split at "+string(rune('0'+i)))
		}
		c0 := newClient()
		block := c0.block(solve)
		for i := 1; i < len(block); i++ {
			c := newClient()
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:i]})
			c.fr.WriteContinuation(1, true, block[i:])
			c.fr.WriteData(1, true, msg)
			check(t, c.buf.Bytes(), want == "ok", "header block split")
		}
	}
}

func check(t *testing.T, in []byte, allow bool, what string) {
	t.Helper()
	toDaemon, toClient, res := exchange(t, testConfig(), in, nil)
	if res.Err != nil {
		t.Fatalf("%s: got error %v", what, res.Err)
	}
	if allow {
		if got, want := frames(t, toDaemon), frames(t, in); got != want {
			t.Fatalf("%s: the daemon got\n%s\nwant\n%s", what, got, want)
		}
		return
	}
	a := answers(t, toClient)
	if a[1][0] != "7" || !strings.Contains(a[1][1], "sockrelay: no-privileged: ") {
		t.Fatalf("%s: the client got %v, want grpc-status 7 naming the rule", what, a)
	}
	if bytes.Contains(toDaemon, []byte("no")) {
		t.Fatalf("%s: the daemon got the refused message", what)
	}
}

// A refused call: the daemon gets its HEADERS and then RST_STREAM, never
// its message; the client gets a gRPC error and its window back. An
// unknown method never reaches the daemon at all, and the header block of
// the next call, which the client encoded against an HPACK table holding
// the refused call's entries, still reaches the daemon as decided.
func TestRefused(t *testing.T) {
	c := newClient()
	c.headers(1, solve, false)
	c.fr.WriteData(1, true, message("no"))
	c.headers(3, "/t.Control/Secret", true)
	c.headers(5, status, true)
	toDaemon, toClient, res := exchange(t, testConfig(), c.buf.Bytes(), nil)
	if res.Err != nil {
		t.Fatalf("got error %v", res.Err)
	}
	a := answers(t, toClient)
	if a[1][0] != "7" || a[3][0] != "7" || !strings.Contains(a[3][1], "grpc-method-not-allowed") {
		t.Fatalf("the client got %v, want both calls refused", a)
	}
	if _, ok := a[5]; ok {
		t.Fatalf("the allowed call was answered here: %v", a)
	}
	var seen []string
	fr := http2.NewFramer(nil, bytes.NewReader(toDaemon[len(http2.ClientPreface):]))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			seen = append(seen, "HEADERS "+f.PseudoValue("path"))
		case *http2.RSTStreamFrame:
			seen = append(seen, "RST "+f.ErrCode.String())
		case *http2.DataFrame:
			seen = append(seen, "DATA")
		}
	}
	want := []string{"HEADERS " + solve, "RST CANCEL", "HEADERS " + status}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("the daemon got %v, want %v", seen, want)
	}
	// The refused DATA's flow-control window is given back.
	if !bytes.Contains(toClient, []byte{0, 0, 4, byte(http2.FrameWindowUpdate), 0, 0, 0, 0, 0, 0, 0, 0, 7}) {
		t.Fatalf("no WINDOW_UPDATE of 7 bytes for the refused DATA in %q", toClient)
	}
}

// A second stream goes on while the first waits for its message.
func TestMultiplexedWhileHolding(t *testing.T) {
	c := newClient()
	c.headers(1, solve, false)
	c.fr.WriteData(1, false, message("ok")[:3])
	c.headers(3, status, false)
	c.fr.WriteData(3, true, message("s"))
	c.fr.WriteData(1, true, message("ok")[3:])
	toDaemon, _, res := exchange(t, testConfig(), c.buf.Bytes(), nil)
	if res.Err != nil {
		t.Fatalf("got error %v", res.Err)
	}
	// Stream 3 comes before stream 1's DATA, which is held, then whole.
	fr := http2.NewFramer(nil, bytes.NewReader(toDaemon[len(http2.ClientPreface):]))
	var order []uint32
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if _, ok := f.(*http2.DataFrame); ok {
			order = append(order, f.Header().StreamID)
		}
	}
	if len(order) != 3 || order[0] != 3 || order[1] != 1 || order[2] != 1 {
		t.Fatalf("DATA frames reached the daemon in stream order %v, want [3 1 1]", order)
	}
}

func TestRefusedMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		data [][]byte
		rule string
	}{
		{"compressed", [][]byte{append([]byte{1}, message("ok")[1:]...)}, "bad-body"},
		{"two messages", [][]byte{append(message("ok"), message("ok")...)}, "bad-body"},
		{"ends early", [][]byte{message("ok")[:4]}, "bad-body"},
		{"no message at all", nil, "bad-body"},
		{"too large", [][]byte{{0, 0, 0x10, 0, 1}}, "body-too-large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient()
			c.headers(1, solve, len(tc.data) == 0)
			for i, d := range tc.data {
				c.fr.WriteData(1, i == len(tc.data)-1, d)
			}
			cfg := testConfig()
			cfg.MaxMessage = 1 << 10
			_, toClient, res := exchange(t, cfg, c.buf.Bytes(), nil)
			if res.Err != nil {
				t.Fatalf("got error %v", res.Err)
			}
			if a := answers(t, toClient); !strings.Contains(a[1][1], "sockrelay: "+tc.rule+":") {
				t.Fatalf("got %v, want refused by %s", a, tc.rule)
			}
		})
	}
}

// What cannot be read one way only ends the connection.
func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(c *client)
	}{
		{"no preface", func(c *client) { c.buf.Reset(); c.buf.WriteString("GET / HTTP/1.1\r\n\r\n") }},
		{"PUSH_PROMISE", func(c *client) {
			c.headers(1, status, false)
			c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: c.block(status), EndHeaders: true})
		}},
		{"stream reused", func(c *client) { c.headers(1, status, true); c.headers(1, status, true) }},
		{"stream out of order", func(c *client) { c.headers(5, status, true); c.headers(3, status, true) }},
		{"even stream", func(c *client) { c.headers(2, status, true) }},
		{"trailers from the client", func(c *client) { c.headers(1, status, false); c.headers(1, status, true) }},
		{"DATA on a stream not open", func(c *client) { c.fr.WriteData(1, true, message("ok")) }},
		{"DATA after the end", func(c *client) { c.headers(1, status, true); c.fr.WriteData(1, true, message("ok")) }},
		{"second message after the decided one", func(c *client) {
			c.headers(1, solve, false)
			c.fr.WriteData(1, false, message("ok"))
			c.fr.WriteData(1, true, message("no"))
		}},
		{"frame too large", func(c *client) {
			c.headers(1, status, false)
			c.fr.WriteData(1, true, make([]byte, DefaultMaxFrame+1))
		}},
		{"duplicate :path", func(c *client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block(status, hpack.HeaderField{Name: ":path", Value: solve}), EndHeaders: true})
		}},
		{"CONTINUATION flood", func(c *client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block(status)})
			for range 100000 {
				c.fr.WriteContinuation(1, false, nil)
			}
		}},
		{"header list too large", func(c *client) {
			var big []hpack.HeaderField
			for range 20 {
				big = append(big, hpack.HeaderField{Name: "x-pad", Value: strings.Repeat("a", 4000)})
			}
			block := c.block(status, big...)
			for len(block) < 3*DefaultMaxHeaderList {
				block = append(block, c.block(status, big...)...)
			}
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16000]})
			for i := 16000; i < len(block); i += 16000 {
				c.fr.WriteContinuation(1, i+16000 >= len(block), block[i:min(i+16000, len(block))])
			}
		}},
		{"dynamic table larger than the daemon's", func(c *client) {
			c.enc.SetMaxDynamicTableSizeLimit(1 << 16)
			c.enc.SetMaxDynamicTableSize(1 << 16)
			c.headers(1, status, true)
		}},
		{"bad HPACK", func(c *client) {
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}},
		{"padding longer than the frame", func(c *client) {
			c.headers(1, status, false)
			c.buf.Write([]byte{0, 0, 2, byte(http2.FrameData), byte(http2.FlagDataPadded), 0, 0, 0, 1, 5, 0})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient()
			tc.write(c)
			toDaemon, _, res := exchange(t, testConfig(), c.buf.Bytes(), nil)
			if !errors.Is(res.Err, ErrProtocol) {
				t.Fatalf("got error %v, want ErrProtocol", res.Err)
			}
			if len(toDaemon) > len(c.buf.Bytes()) {
				t.Fatalf("the daemon got more than was sent")
			}
		})
	}
}

// Padding is allowed, counted, and passed on as sent.
func TestPadding(t *testing.T) {
	c := newClient()
	c.headers(1, solve, false)
	c.fr.WriteDataPadded(1, true, message("ok"), make([]byte, 17))
	in := c.buf.Bytes()
	toDaemon, _, res := exchange(t, testConfig(), in, nil)
	if got, want := frames(t, toDaemon), frames(t, in); res.Err != nil || got != want {
		t.Fatalf("got %v,\n%s\nwant the padded call passed on,\n%s", res.Err, got, want)
	}
}

// A call that waits for its message longer than HoldTimeout ends the
// connection: the proxy holds nothing for ever.
func TestHoldTimeout(t *testing.T) {
	cli, pc := socketPair(t)
	pu, dmn := socketPair(t)
	defer cli.Close()
	defer dmn.Close()
	go io.Copy(io.Discard, dmn)
	cfg := testConfig()
	cfg.HoldTimeout = 200 * time.Millisecond
	done := make(chan Result, 1)
	go func() { done <- Serve(cfg, pc, pu, nil, nil) }()
	c := newClient()
	c.headers(1, solve, false)
	c.fr.WriteData(1, false, message("ok")[:3])
	cli.Write(c.buf.Bytes())
	select {
	case res := <-done:
		if !errors.Is(res.Err, ErrProtocol) {
			t.Fatalf("got %v, want the connection ended", res.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a held call kept the connection past HoldTimeout")
	}
}

// The daemon's header blocks reach the client whole, even when a refusal
// is written meanwhile; the client's frames interleave only between them.
func TestDaemonFramesWhole(t *testing.T) {
	var d bytes.Buffer
	fr := http2.NewFramer(&d, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}})
	fr.WriteContinuation(1, true, nil)
	fr.WriteData(1, true, message("x"))
	c := newClient()
	c.headers(1, "/t.Control/Unknown", true)
	_, toClient, res := exchange(t, testConfig(), c.buf.Bytes(), d.Bytes())
	if res.Err != nil {
		t.Fatalf("got %v", res.Err)
	}
	if !bytes.Contains(toClient, d.Bytes()) {
		t.Fatalf("the daemon's frames did not reach the client whole and in order: %q", toClient)
	}
}

func TestEncodeMessage(t *testing.T) {
	for in, want := range map[string]string{
		"sockrelay: a: b": "sockrelay: a: b",
		"50%":             "50%25",
		"é\n":             "%C3%A9%0A",
	} {
		if got := encodeMessage(in); got != want {
			t.Errorf("encodeMessage(%q): got %q, want %q", in, got, want)
		}
	}
}
