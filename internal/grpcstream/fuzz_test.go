package grpcstream

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServe feeds Serve any bytes after the client preface. Whatever
// they are, Serve ends, and the daemon reads, with HPACK state of its
// own, no call the decider did not allow: no method but solve and
// status, and no solve message but "ok".
func FuzzServe(f *testing.F) {
	seed := func(write func(c *client)) {
		c := newClient()
		write(c)
		f.Add(c.buf.Bytes()[len(http2.ClientPreface):])
	}
	seed(func(c *client) { c.headers(1, solve, false); c.fr.WriteData(1, true, message("ok")) })
	seed(func(c *client) { c.headers(1, solve, false); c.fr.WriteData(1, true, message("no")) })
	seed(func(c *client) {
		c.headers(1, "/t.Control/Other", true)
		c.headers(3, status, false)
		c.fr.WriteDataPadded(3, true, message("x"), []byte{0, 0})
	})
	seed(func(c *client) {
		block := c.block(solve)
		c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:3]})
		c.fr.WriteContinuation(1, true, block[3:])
		m := message("ok")
		c.fr.WriteData(1, false, m[:2])
		c.fr.WriteData(1, true, m[2:])
	})
	cfg := testConfig()
	cfg.MaxMessage = 1 << 10
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(http2.ClientPreface), b...)
		toDaemon, _, _ := exchange(t, cfg, in, nil)
		if len(toDaemon) < len(http2.ClientPreface) {
			return
		}
		fr := http2.NewFramer(nil, bytes.NewReader(toDaemon[len(http2.ClientPreface):]))
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		methods := map[uint32]string{}
		msgs := map[uint32][]byte{}
		for {
			fm, err := fr.ReadFrame()
			if err != nil {
				break
			}
			switch fm := fm.(type) {
			case *http2.MetaHeadersFrame:
				p := fm.PseudoValue("path")
				if p != solve && p != status {
					t.Fatalf("the daemon got a call of %q", p)
				}
				methods[fm.StreamID] = p
			case *http2.DataFrame:
				msgs[fm.StreamID] = append(msgs[fm.StreamID], fm.Data()...)
			}
		}
		for id, m := range methods {
			if m == solve && len(msgs[id]) > 0 && !bytes.Equal(msgs[id], message("ok")) {
				t.Fatalf("the daemon got the solve message %q", msgs[id])
			}
		}
	})
}
