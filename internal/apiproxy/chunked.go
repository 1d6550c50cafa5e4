package apiproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/rawio"
	"github.com/sockrelay/sockrelay/internal/splice"
)

// A chunked body is never passed on as the client framed it. Its framing
// is read here exactly as Go's net/http reads it (net/http/internal
// chunked.go and the trailer in transfer.go), which is the daemon's
// parser, and written again in a framing of the proxy's own: "%x\r\n",
// the data, "\r\n", and at the end "0\r\n\r\n". A body the daemon would
// read otherwise than the proxy, or not at all, is refused. So the daemon
// and the proxy always agree on where a body ends, whatever the client
// sent: a disagreement would leave each waiting for the other, or let the
// rest of one body be read as the next request on a pooled connection.
// The daemon's chunked responses are read by the same rules: one the
// proxy cannot frame exactly is cut, and its connection is not pooled.
//
// Only the framing passes through the proxy's memory: the data goes by
// splice(2) where the read buffer does not already hold it.

const (
	// maxChunkLine bounds a chunk's size line, CRLF included: Go's
	// maxLineLength, read through its server's 4096-byte buffer, refuses
	// any longer line.
	maxChunkLine = 4096
	// maxChunkExcess is Go's bound on framing bytes beyond 16 per chunk
	// and twice the data, against a sender who pads with extensions.
	maxChunkExcess = 16 << 10
	// chunkExcessFree and chunkExcessPerByte are the overhead Go allows
	// per chunk and per data byte before counting it as excess.
	chunkExcessFree    = 16
	chunkExcessPerByte = 2
	// maxChunkSize is the largest chunk accepted. Go takes any size that
	// fits 64 bits, and waits for the data; no client sends a chunk
	// this large, so one that claims to is refused at once, rather than
	// holding a daemon connection for data that will never come.
	maxChunkSize = 1 << 40
)

// errBadChunked is the class of every error in a chunked body's framing:
// the client's error (400), not an I/O error.
var errBadChunked = errors.New("malformed chunked body")

// errChunkTrailer refuses a trailer. The daemon reads none, and no docker
// client sends one; passing trailers on, or even dropping them, would
// need a second header parser that agrees byte for byte with the
// daemon's (textproto, whose rules on bare LF and folded lines change
// between Go releases). Refused, the body ends at "0\r\n\r\n" or not at
// all.
var errChunkTrailer = fmt.Errorf("%w: trailers are not accepted", errBadChunked)

func badChunked(why string) error { return fmt.Errorf("%w: %s", errBadChunked, why) }

// chunkReader reads the framing of a chunked body from br.
type chunkReader struct {
	br *bufio.Reader
	// excess is Go's count of framing bytes beyond what the data
	// allows, kept in the same arithmetic as Go's (int64, wrapping).
	excess int64
}

// next reads a chunk's size line and returns its size. At the last chunk
// (size 0) it reads the end of the body too.
func (cr *chunkReader) next() (int64, error) {
	line, err := cr.line()
	if err != nil {
		return 0, err
	}
	cr.excess += int64(len(line)) + 2 // the line's CRLF, and the data's
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	line, _, _ = bytes.Cut(line, []byte(";")) // extensions are dropped, whatever their syntax
	n, err := parseChunkSize(line)
	if err != nil {
		return 0, err
	}
	cr.excess -= chunkExcessFree + chunkExcessPerByte*int64(n)
	cr.excess = max(cr.excess, 0)
	if cr.excess > maxChunkExcess {
		return 0, badChunked("too much framing for its data")
	}
	if n > maxChunkSize {
		return 0, badChunked("chunk size too large")
	}
	if n == 0 {
		return 0, cr.end()
	}
	return int64(n), nil
}

// line reads a chunk's size line and returns it without its CRLF. Only
// CRLF ends a line, and a CR anywhere else is refused, as Go does.
func (cr *chunkReader) line() ([]byte, error) {
	br := cr.br
	for {
		n := br.Buffered()
		if n > 0 {
			b, _ := br.Peek(n)
			if i := bytes.IndexByte(b[:min(n, maxChunkLine)], '\n'); i >= 0 {
				line := b[:i+1]
				br.Discard(i + 1) // line stays valid until the next read
				if j := bytes.IndexByte(line, '\r'); j < 0 {
					return nil, badChunked("a chunk line ends with a bare LF")
				} else if j != len(line)-2 {
					return nil, badChunked("a CR inside a chunk line")
				}
				return line[:len(line)-2], nil
			}
			if n >= maxChunkLine {
				return nil, badChunked("a chunk line is too long")
			}
		}
		if _, err := br.Peek(n + 1); err != nil {
			return nil, noEOF(err)
		}
	}
}

// dataEnd reads the CRLF that must follow a chunk's data.
func (cr *chunkReader) dataEnd() error {
	return cr.crlf(badChunked("chunk data not followed by CRLF"))
}

// end reads what follows the last chunk: CRLF, or a trailer (refused).
func (cr *chunkReader) end() error { return cr.crlf(errChunkTrailer) }

// crlf reads a CRLF, or fails with bad as soon as a byte shows there is
// none: a client that sent a wrong byte is not waited for.
func (cr *chunkReader) crlf(bad error) error {
	for i, want := range crlf {
		b, err := cr.br.Peek(i + 1)
		if err != nil {
			return noEOF(err)
		}
		if b[i] != want {
			return bad
		}
	}
	cr.br.Discard(2)
	return nil
}

// noEOF makes an EOF inside a body io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize is Go's parseHexUint: hex digits only, at most 16.
func parseChunkSize(v []byte) (uint64, error) {
	if len(v) == 0 {
		return 0, badChunked("empty chunk size")
	}
	if len(v) > 16 {
		return 0, badChunked("chunk size too large")
	}
	var n uint64
	for _, b := range v {
		switch {
		case '0' <= b && b <= '9':
			b -= '0'
		case 'a' <= b && b <= 'f':
			b -= 'a' - 10
		case 'A' <= b && b <= 'F':
			b -= 'A' - 10
		default:
			return 0, badChunked("invalid byte in chunk size")
		}
		n = n<<4 | uint64(b)
	}
	return n, nil
}

// chunkedBody decodes a chunked body by chunkReader's rules, for the
// bodies the policy reads whole and for lingering.
type chunkedBody struct {
	cr   chunkReader
	left int64 // data left in the current chunk
	err  error // sticky: io.EOF at the end of the body
}

func newChunkedBody(br *bufio.Reader) *chunkedBody { return &chunkedBody{cr: chunkReader{br: br}} }

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		n, err := b.cr.next()
		switch {
		case err != nil:
			b.err = err
			return 0, err
		case n == 0:
			b.err = io.EOF
			return 0, io.EOF
		}
		b.left = n
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.cr.br.Read(p)
	b.left -= int64(n)
	if err != nil {
		b.err = noEOF(err)
		return n, b.err
	}
	if b.left == 0 {
		if err := b.cr.dataEnd(); err != nil {
			b.err = err
			return n, err
		}
	}
	return n, nil
}

// copyChunked passes a chunked body from br (and then src) to dst in the
// proxy's own framing, chunk by chunk as it comes, so streams (events,
// logs -f) flow at once; it returns the data bytes. The data goes by
// splice where br does not already hold it. dst gets the last chunk only
// once the whole body was read and found well framed: a body refused
// halfway leaves dst waiting for more, and the caller closes it.
//
// bulk is called before a chunk larger than bulkBody, and before each
// chunk once bulkBody bytes have passed.
//
// The CRLF after a chunk's data is held back, to go in one write with
// the next size line, when that line has already come: a write of two
// bytes of its own wakes the reader for nothing. When it has not, the
// CRLF goes at once: some readers (urllib3) wait for it before they hand
// on the chunk's data, and the next chunk of a stream may be far off.
func copyChunked(dst net.Conn, br *bufio.Reader, src net.Conn, bulk func()) (int64, error) {
	w, err := rawConn(dst)
	if err != nil {
		return 0, err
	}
	srcRC, _ := rawConn(src) // nil: the CRLF after spliced data is never held back
	cr := chunkReader{br: br}
	var total int64
	var hdr [2 + 16 + 2]byte
	held := false // a CRLF held back
	for {
		size, err := cr.next()
		if err != nil {
			return total, err
		}
		h := hdr[:0]
		if held {
			h = append(h, crlf...)
			held = false
		}
		if size == 0 {
			_, err := rawio.Write(w, append(h, "0\r\n\r\n"...))
			return total, err
		}
		if size > bulkBody || total >= bulkBody {
			bulk()
		}
		h = append(strconv.AppendInt(h, size, 16), '\r', '\n')
		k := int(min(int64(br.Buffered()), size))
		p, _ := br.Peek(k)
		if int64(k) == size {
			after, _ := br.Peek(br.Buffered())
			if held = nextLineIn(after[k:]); held {
				err = rawio.Writev(w, h, p)
			} else {
				err = rawio.Writev(w, h, p, crlf)
			}
			br.Discard(k)
			total += size
		} else {
			err = rawio.Writev(w, h, p)
			br.Discard(k)
			total += int64(k)
			if err == nil {
				var n int64
				n, err = splice.CopyN(dst, src, size-int64(k))
				total += n
			}
			if err == nil {
				if held = srcRC != nil && nextLineWaiting(srcRC); !held {
					_, err = rawio.Write(w, crlf)
				}
			}
		}
		if err != nil {
			return total, err
		}
		if err := cr.dataEnd(); err != nil {
			return total, err
		}
	}
}

var crlf = []byte("\r\n")

func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("no raw connection")
	}
	return sc.SyscallConn()
}

// nextLineIn reports whether b begins with the CRLF that ends a chunk's
// data and holds the whole size line after it.
func nextLineIn(b []byte) bool {
	return len(b) > 2 && b[0] == '\r' && b[1] == '\n' && bytes.IndexByte(b[2:], '\n') >= 0
}

// nextLineWaiting reports whether the socket holds, unread, the CRLF
// that ends a chunk's data and the whole size line after it. The look
// never blocks, so it is a raw system call.
func nextLineWaiting(rc syscall.RawConn) bool {
	ok := false
	rc.Control(func(fd uintptr) {
		var b [64]byte
		n, errno := rawio.Recv(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = errno == 0 && nextLineIn(b[:n])
	})
	return ok
}
