package apiproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/sockrelay/sockrelay/internal/splice"
)

// MaxHeader bounds a request's or response's head (its first line and
// header block): it must fit in a connection's read buffer.
const MaxHeader = 16 << 10

func hostOr(h string) string {
	if h == "" {
		return "docker"
	}
	return h
}

var errHeadTooLarge = fmt.Errorf("the head is larger than %s", sizeText(MaxHeader))

// peekHead returns the raw header block at the head of br (through the
// blank line) without consuming it.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		n := br.Buffered()
		if n > 0 {
			b, _ := br.Peek(n)
			if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
				return b[:i+4], nil
			}
			if n >= br.Size() {
				return nil, errHeadTooLarge
			}
		}
		// Wait for at least one more byte.
		if _, err := br.Peek(n + 1); err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return nil, errors.New("the connection closed inside a header")
			}
			return nil, err
		}
	}
}

// framingConflict refuses the ambiguous framings that smuggling relies
// on; Go's parser would quietly pick one, so they are caught raw.
func framingConflict(head []byte) string {
	var te, cl int
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch strings.ToLower(string(bytes.TrimSpace(k))) {
		case "transfer-encoding":
			te++
		case "content-length":
			cl++
		}
		if bytes.ContainsAny(k, " \t") {
			return "a header name with white space"
		}
	}
	switch {
	case te > 0 && cl > 0:
		return "both Transfer-Encoding and Content-Length"
	case te > 1:
		return "more than one Transfer-Encoding"
	}
	return ""
}

// copyN copies n bytes: those br already holds, then the rest from src
// directly (by splice between Unix sockets).
func copyN(dst net.Conn, br *bufio.Reader, src net.Conn, n int64) (int64, error) {
	var done int64
	if k := min(int64(br.Buffered()), n); k > 0 {
		p, _ := br.Peek(int(k))
		if _, err := dst.Write(p); err != nil {
			return 0, err
		}
		br.Discard(int(k))
		done = k
	}
	if done == n {
		return done, nil
	}
	k, err := splice.CopyN(dst, src, n-done)
	return done + k, err
}

// bulkBody is the body size, or chunk size, from which a connection's
// sockets get the relay's large buffers: fewer and larger wakeups for
// images, archives and build contexts, and no setsockopt for the rest.
const bulkBody = 256 << 10

// bulk sizes both sockets of the connection for bulk transfers, once.
func (cc *clientConn) bulk() {
	if cc.sized == cc.up {
		return
	}
	cc.sized = cc.up
	splice.SizeForBulk(cc.c)
	splice.SizeForBulk(cc.up)
}
