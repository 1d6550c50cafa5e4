// Package grpcstream follows the gRPC calls a client makes over an
// HTTP/2 connection with prior knowledge (BuildKit's API, after POST /grpc
// switched protocols) and has each call decided before the daemon sees
// any of its messages. An allowed call passes on unchanged, byte for
// byte; a refused one gets a gRPC error from here, and the daemon never
// sees it, or sees it cancelled.
//
// Only the client's side is decoded: the daemon is the HTTP/2 server, so
// the client's frames carry every call. Header blocks are decoded and
// encoded again, by an HPACK encoder of the follower's own: the daemon's
// HPACK table then follows what the follower sent, not what the client
// sent, so a call answered here and never forwarded leaves no gap in it,
// and the daemon reads every header exactly as it was decided. Other
// frames pass on as sent. The daemon's frames are passed on whole, one at
// a time, so that an error can go to the client between two of them. Everything the client sends is checked as the daemon would
// read it, and what cannot be read one way only ends the connection:
// frames larger than Config.MaxFrame, header lists larger than
// Config.MaxHeaderList, a CONTINUATION flood, a PUSH_PROMISE, a stream ID
// reused or out of order, DATA on a stream that is not open, a malformed
// HPACK block or a dynamic table larger than the daemon allows.
package grpcstream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Verdict is the decision on one call.
type Verdict struct {
	Allow bool
	// Code is the gRPC status code of a refusal (codes.PermissionDenied
	// is 7); Message its message.
	Code    uint32
	Message string
	// Rule is the rule that decided, for the record.
	Rule string
}

// Config says how calls are decided and how much the follower may hold.
type Config struct {
	// NeedMessage reports whether Decide needs the call's first request
	// message; Decide then gets it without gRPC's five-byte prefix.
	NeedMessage func(method string) bool
	Decide      func(method string, msg []byte) Verdict
	// Record is told each call's verdict once decided (the audit log).
	Record func(method string, v Verdict)

	MaxFrame      uint32 // the largest frame payload the client may send
	MaxHeaderList uint32 // the largest header list of a call, as HTTP/2 counts it
	MaxMessage    int    // the largest message Decide is given
	MaxHeld       int    // the most bytes held for all calls waiting for their message
	// Take and Give, when set, share the bytes held with other
	// connections: Take says whether n more may be held now.
	Take        func(n int64) bool
	Give        func(n int64)
	MaxStreams  int           // the most streams open at once
	HoldTimeout time.Duration // how long a call may wait for its message
}

// Defaults.
const (
	DefaultMaxFrame      = 16 << 10 // HTTP/2's initial SETTINGS_MAX_FRAME_SIZE; gRPC's frames are never larger
	DefaultMaxHeaderList = 64 << 10
	DefaultMaxStreams    = 256 // dockerd's HTTP/2 server allows 250 at once
	DefaultHoldTimeout   = 30 * time.Second
	// headerTableSize is HTTP/2's default SETTINGS_HEADER_TABLE_SIZE,
	// which dockerd's HTTP/2 server does not change: the client's HPACK
	// encoder may not use a larger dynamic table.
	headerTableSize = 4096
	maxMethodText   = 200 // of a method as recorded
)

// gRPC status codes of refusals.
const (
	CodeInvalidArgument   = 3
	CodePermissionDenied  = 7
	CodeResourceExhausted = 8
)

// Conn is one side of the relay: a connection whose write side can be
// shut on its own (a half-close).
type Conn interface {
	net.Conn
	CloseWrite() error
}

// ErrProtocol is what a client that breaks HTTP/2 or gRPC framing gets:
// the end of the connection.
var ErrProtocol = errors.New("grpcstream: protocol error")

// Result is what Serve says of a connection once it is over.
type Result struct {
	In, Out int64 // bytes from the client, to the client
	Err     error // why the client's side ended, when it was not a clean end
}

// Serve relays client and up until both sides are done: the client's
// frames, decided call by call, to up, and up's frames to the client.
// clientBuf and upBuf are what was read of each already. It closes
// neither connection unless a side fails, and then both.
func Serve(cfg Config, client, up Conn, clientBuf, upBuf []byte) Result {
	cfg = cfg.withDefaults()
	s := &session{cfg: cfg, client: client, up: up,
		streams: map[uint32]*stream{}}
	s.enc = hpack.NewEncoder(&s.hb)
	s.cw = bufio.NewWriterSize(client, 32<<10)
	s.cr = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(clientBuf), client), 32<<10)
	ur := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(upBuf), up), 32<<10)

	var wg sync.WaitGroup
	var out int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := s.fromDaemon(ur)
		out = n
		if err != nil {
			client.Close()
			up.Close()
			return
		}
		client.CloseWrite()
	}()
	err := s.fromClient()
	s.release(s.held)
	if errors.Is(err, io.EOF) {
		err = nil
		up.CloseWrite()
	} else {
		client.Close()
		up.Close()
	}
	wg.Wait()
	return Result{In: s.in, Out: out, Err: err}
}

func (c Config) withDefaults() Config {
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.MaxHeaderList == 0 {
		c.MaxHeaderList = DefaultMaxHeaderList
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = 1 << 20
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = c.MaxMessage + 64<<10
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.HoldTimeout == 0 {
		c.HoldTimeout = DefaultHoldTimeout
	}
	if c.NeedMessage == nil {
		c.NeedMessage = func(string) bool { return false }
	}
	if c.Take == nil || c.Give == nil {
		c.Take, c.Give = func(int64) bool { return true }, func(int64) {}
	}
	if c.Record == nil {
		c.Record = func(string, Verdict) {}
	}
	return c
}

type session struct {
	cfg    Config
	client Conn
	up     Conn
	cr     *bufio.Reader
	in     int64

	// cmu serializes writes to the client: the daemon's frames and the
	// refusals made here. cw buffers them.
	cmu sync.Mutex
	cw  *bufio.Writer

	// enc encodes the header blocks forwarded, into hb.
	enc *hpack.Encoder
	hb  bytes.Buffer

	streams map[uint32]*stream
	// lastStream is the highest stream the client opened, forwarded or
	// not; lastForwarded the highest the daemon saw.
	lastStream, lastForwarded uint32
	held                      int // bytes held for calls waiting for their message
}

type streamState int

const (
	opening streamState = iota // its HEADERS are being decided
	holding                    // waiting for the first message; the daemon has the HEADERS
	passing                    // allowed: every frame passes
	decided                    // the message passed; only an empty end may follow
	refused                    // answered here; the client's frames are dropped
)

type stream struct {
	state  streamState
	method string
	since  time.Time
	msg    []byte // the DATA payloads held
	raw    []byte // the DATA frames held, as sent
	flow   uint32 // flow-controlled bytes held (payloads and padding)
}

// recorder keeps what the framer reads, so that a frame passes on as
// sent; it refuses to keep more than limit bytes for one frame.
type recorder struct {
	r     io.Reader
	buf   []byte
	limit int
	n     *int64
}

var errTooMuch = errors.New("grpcstream: header block too large")

func (r *recorder) Read(p []byte) (int, error) {
	if len(r.buf)+len(p) > r.limit {
		p = p[:r.limit-len(r.buf)]
		if len(p) == 0 {
			return 0, errTooMuch
		}
	}
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	*r.n += int64(n)
	return n, err
}

// fromClient follows the client's side until it ends: io.EOF after a
// whole frame is a clean end.
func (s *session) fromClient() error {
	var pre [len(http2.ClientPreface)]byte
	if n, err := io.ReadFull(s.cr, pre[:]); err != nil {
		if n == 0 {
			return err
		}
		return fmt.Errorf("%w: no HTTP/2 client preface", ErrProtocol)
	}
	s.in += int64(len(pre))
	if string(pre[:]) != http2.ClientPreface {
		return fmt.Errorf("%w: no HTTP/2 client preface", ErrProtocol)
	}
	if _, err := s.up.Write(pre[:]); err != nil {
		return err
	}
	// A header block may come in many frames: its encoding is at most
	// about twice the header list, and each frame adds its own header.
	rec := &recorder{r: s.cr, limit: 2*int(s.cfg.MaxHeaderList) + int(s.cfg.MaxFrame) + 9*64, n: &s.in}
	fr := http2.NewFramer(nil, rec)
	fr.SetMaxReadFrameSize(s.cfg.MaxFrame)
	fr.MaxHeaderListSize = s.cfg.MaxHeaderList
	fr.ReadMetaHeaders = hpack.NewDecoder(headerTableSize, nil)
	fr.ReadMetaHeaders.SetMaxStringLength(int(s.cfg.MaxHeaderList))
	for {
		rec.buf = rec.buf[:0]
		s.setDeadline()
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) && len(rec.buf) == 0 {
				return io.EOF
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if err := s.frame(f, rec.buf); err != nil {
			return err
		}
	}
}

// setDeadline limits the wait for the client to the earliest a held call
// may wait for its message; a call that waits longer ends the connection.
func (s *session) setDeadline() {
	var first time.Time
	for _, st := range s.streams {
		if st.state == holding && (first.IsZero() || st.since.Before(first)) {
			first = st.since
		}
	}
	if first.IsZero() {
		s.client.SetReadDeadline(time.Time{})
		return
	}
	s.client.SetReadDeadline(first.Add(s.cfg.HoldTimeout))
}

func (s *session) frame(f http2.Frame, raw []byte) error {
	id := f.Header().StreamID
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return s.headers(f)
	case *http2.DataFrame:
		return s.data(f, raw)
	case *http2.RSTStreamFrame:
		st := s.streams[id]
		s.drop(id)
		if id > s.lastForwarded || (st != nil && st.state == refused) {
			return nil // the daemon never saw the stream, or was told
		}
		return s.toDaemon(raw)
	case *http2.WindowUpdateFrame, *http2.PriorityFrame:
		if id > s.lastForwarded {
			return nil // a stream the daemon never saw
		}
		return s.toDaemon(raw)
	case *http2.SettingsFrame, *http2.PingFrame, *http2.GoAwayFrame:
		return s.toDaemon(raw)
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: PUSH_PROMISE from the client", ErrProtocol)
	default:
		// Frames of unknown types are ignored by the receiver; they go
		// no further.
		return nil
	}
}

func (s *session) toDaemon(p []byte) error {
	_, err := s.up.Write(p)
	return err
}

func (s *session) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 || id <= s.lastStream {
		// A client's streams are odd and new; trailers from a client
		// are not gRPC.
		return fmt.Errorf("%w: HEADERS on stream %d, not a new stream of the client's", ErrProtocol, id)
	}
	if f.Truncated {
		return fmt.Errorf("%w: header list too large", ErrProtocol)
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		return fmt.Errorf("%w: more than %d streams open", ErrProtocol, s.cfg.MaxStreams)
	}
	s.lastStream = id
	method := f.PseudoValue("path")
	st := &stream{method: method, since: time.Now()}
	if v := s.framing(f); v != nil {
		return s.refuse(st, id, f.StreamEnded(), *v)
	}
	if s.cfg.NeedMessage(method) {
		if f.StreamEnded() {
			return s.refuse(st, id, true, Verdict{Code: CodeInvalidArgument, Rule: "bad-body",
				Message: "sockrelay: bad-body: the call ended before its request message"})
		}
		st.state = holding
		s.streams[id] = st
		s.lastForwarded = id
		return s.forwardHeaders(f)
	}
	v := s.cfg.Decide(method, nil)
	if !v.Allow {
		return s.refuse(st, id, f.StreamEnded(), v)
	}
	s.record(method, v)
	if !f.StreamEnded() {
		st.state = passing
		s.streams[id] = st
	}
	s.lastForwarded = id
	return s.forwardHeaders(f)
}

// outFrame is the largest frame payload sent to the daemon: HTTP/2's
// initial SETTINGS_MAX_FRAME_SIZE, which every peer accepts.
const outFrame = 16 << 10

// forwardHeaders sends the daemon the header list as decoded, encoded by
// the follower's own HPACK encoder (the daemon's table size, 4096, is
// the encoder's default): a HEADERS frame and CONTINUATION frames as
// needed, with the client's END_STREAM; priority and padding are left out.
func (s *session) forwardHeaders(f *http2.MetaHeadersFrame) error {
	s.hb.Reset()
	for _, h := range f.Fields {
		if err := s.enc.WriteField(h); err != nil {
			return err
		}
	}
	block := s.hb.Bytes()
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	n := min(len(block), outFrame)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: block[:n],
		EndStream: f.StreamEnded(), EndHeaders: n == len(block)})
	for block = block[n:]; len(block) > 0; block = block[n:] {
		n = min(len(block), outFrame)
		fr.WriteContinuation(f.StreamID, n == len(block), block[:n])
	}
	return s.toDaemon(b.Bytes())
}

// framing checks what makes the daemon read a call otherwise than as a
// gRPC call with protobuf messages.
func (s *session) framing(f *http2.MetaHeadersFrame) *Verdict {
	if f.PseudoValue("method") != "POST" {
		return &Verdict{Code: CodeInvalidArgument, Rule: "bad-request", Message: "sockrelay: bad-request: a gRPC call is a POST"}
	}
	var ct []string
	for _, h := range f.RegularFields() {
		if h.Name == "content-type" {
			ct = append(ct, h.Value)
		}
	}
	if len(ct) != 1 || (ct[0] != "application/grpc" && ct[0] != "application/grpc+proto") {
		return &Verdict{Code: CodeInvalidArgument, Rule: "bad-request", Message: "sockrelay: bad-request: a call's content-type must be application/grpc, once"}
	}
	return nil
}

func (s *session) data(f *http2.DataFrame, raw []byte) error {
	id := f.StreamID
	st := s.streams[id]
	if st == nil {
		return fmt.Errorf("%w: DATA on stream %d, which is not open", ErrProtocol, id)
	}
	flow := f.Header().Length
	switch st.state {
	case passing:
		if f.StreamEnded() {
			s.drop(id)
		}
		return s.toDaemon(raw)
	case refused:
		if f.StreamEnded() {
			s.drop(id)
		}
		return s.giveBack(flow)
	case decided:
		if len(f.Data()) > 0 {
			return fmt.Errorf("%w: a second message on a call that takes one", ErrProtocol)
		}
		if f.StreamEnded() {
			s.drop(id)
		}
		return s.toDaemon(raw)
	}
	// holding
	if s.held+len(raw) > s.cfg.MaxHeld || !s.cfg.Take(int64(len(raw))) {
		st.flow += flow
		return s.refuse(st, id, f.StreamEnded(), Verdict{Code: CodeResourceExhausted, Rule: "busy",
			Message: "sockrelay: busy: too many calls wait for their message on this connection"})
	}
	st.msg = append(st.msg, f.Data()...)
	st.raw = append(st.raw, raw...)
	st.flow += flow
	s.held += len(raw)
	if len(st.msg) >= 5 {
		if st.msg[0] != 0 {
			return s.refuse(st, id, f.StreamEnded(), Verdict{Code: CodeInvalidArgument, Rule: "bad-body",
				Message: "sockrelay: bad-body: a compressed message cannot be inspected; send it uncompressed"})
		}
		n := binary.BigEndian.Uint32(st.msg[1:5])
		if int64(n) > int64(s.cfg.MaxMessage) {
			return s.refuse(st, id, f.StreamEnded(), Verdict{Code: CodeResourceExhausted, Rule: "body-too-large",
				Message: fmt.Sprintf("sockrelay: body-too-large: the call's request message is larger than %d bytes", s.cfg.MaxMessage)})
		}
		if end := 5 + int(n); len(st.msg) >= end {
			if len(st.msg) > end {
				return s.refuse(st, id, f.StreamEnded(), Verdict{Code: CodeInvalidArgument, Rule: "bad-body",
					Message: "sockrelay: bad-body: a second message on a call that takes one"})
			}
			v := s.cfg.Decide(st.method, st.msg[5:end])
			if !v.Allow {
				return s.refuse(st, id, f.StreamEnded(), v)
			}
			s.record(st.method, v)
			held := st.raw
			s.release(len(held))
			st.msg, st.raw, st.state = nil, nil, decided
			if f.StreamEnded() {
				s.drop(id)
			}
			return s.toDaemon(held)
		}
	}
	if f.StreamEnded() {
		return s.refuse(st, id, true, Verdict{Code: CodeInvalidArgument, Rule: "bad-body",
			Message: "sockrelay: bad-body: the call ended before its request message"})
	}
	return nil
}

// refuse answers a call with a gRPC error, tells the daemon to drop it if
// it saw it, and gives the client back the flow-control window of what
// was held.
func (s *session) refuse(st *stream, id uint32, ended bool, v Verdict) error {
	v.Allow = false
	if v.Code == 0 {
		v.Code = CodePermissionDenied
	}
	s.record(st.method, v)
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	if st.state == holding {
		// The daemon has the call's HEADERS.
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
		if err := s.toDaemon(b.Bytes()); err != nil {
			return err
		}
		b.Reset()
		s.release(len(st.raw))
	}
	st.state, st.msg, st.raw = refused, nil, nil
	if ended {
		delete(s.streams, id)
	} else {
		s.streams[id] = st
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	// Never indexed: the client's HPACK table stays the daemon's.
	for _, h := range []hpack.HeaderField{
		{Name: ":status", Value: "200"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "grpc-status", Value: fmt.Sprint(v.Code)},
		{Name: "grpc-message", Value: encodeMessage(v.Message)},
	} {
		h.Sensitive = true
		enc.WriteField(h)
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	if !ended {
		// The client may stop sending now.
		fr.WriteRSTStream(id, http2.ErrCodeNo)
	}
	if st.flow > 0 {
		fr.WriteWindowUpdate(0, st.flow)
	}
	return s.toClient(b.Bytes())
}

func (s *session) release(n int) {
	s.held -= n
	s.cfg.Give(int64(n))
}

// giveBack returns to the client the connection's flow-control window
// of DATA that went nowhere.
func (s *session) giveBack(n uint32) error {
	if n == 0 {
		return nil
	}
	var b bytes.Buffer
	http2.NewFramer(&b, nil).WriteWindowUpdate(0, n)
	return s.toClient(b.Bytes())
}

func (s *session) toClient(p []byte) error {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if _, err := s.cw.Write(p); err != nil {
		return err
	}
	return s.cw.Flush()
}

func (s *session) drop(id uint32) {
	if st := s.streams[id]; st != nil {
		s.release(len(st.raw))
		delete(s.streams, id)
	}
}

func (s *session) record(method string, v Verdict) {
	if len(method) > maxMethodText {
		method = method[:maxMethodText]
	}
	s.cfg.Record(method, v)
}

// encodeMessage percent-encodes a grpc-message value as gRPC does:
// every byte outside printable ASCII, and '%'.
func encodeMessage(m string) string {
	var b []byte
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b = append(b, c)
			continue
		}
		b = fmt.Appendf(b, "%%%02X", c)
	}
	return string(b)
}

// fromDaemon passes the daemon's frames to the client, each whole, and a
// header block with its CONTINUATION frames at once, so that a refusal
// never lands inside one. It returns at the daemon's end.
func (s *session) fromDaemon(ur *bufio.Reader) (int64, error) {
	var hdr [9]byte
	var n int64
	inBlock := false
	defer func() {
		if inBlock {
			s.cmu.Unlock()
		}
	}()
	for {
		if _, err := io.ReadFull(ur, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) && !inBlock {
				s.cmu.Lock()
				err = s.cw.Flush()
				s.cmu.Unlock()
				return n, err
			}
			return n, err
		}
		length := int64(hdr[0])<<16 | int64(hdr[1])<<8 | int64(hdr[2])
		typ, flags := http2.FrameType(hdr[3]), http2.Flags(hdr[4])
		if !inBlock {
			s.cmu.Lock()
		}
		if _, err := s.cw.Write(hdr[:]); err != nil {
			inBlock = true // unlocked by the defer
			return n, err
		}
		k, err := io.CopyN(s.cw, ur, length)
		n += 9 + k
		if err != nil {
			inBlock = true
			return n, err
		}
		switch typ {
		case http2.FrameHeaders, http2.FramePushPromise, http2.FrameContinuation:
			inBlock = flags&http2.FlagHeadersEndHeaders == 0
		}
		if ur.Buffered() == 0 {
			if err := s.cw.Flush(); err != nil {
				inBlock = true
				return n, err
			}
		}
		if !inBlock {
			s.cmu.Unlock()
		}
	}
}
