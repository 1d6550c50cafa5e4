package apiproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chunkedThrough runs copyChunked on in, sent by a peer that then
// closes, over real sockets. It returns what the daemon's side received,
// what is left of in after the body (read from the proxy's reader, then
// the socket), the data bytes counted and the error.
func chunkedThrough(t *testing.T, in []byte) (out, rest []byte, n int64, err error) {
	t.Helper()
	src, srcPeer := unixPair(t)
	dst, dstPeer := unixPair(t)
	go func() {
		srcPeer.Write(in)
		srcPeer.Close()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(dstPeer)
		got <- b
	}()
	src.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(src, MaxHeader) // the proxy's readers
	n, err = copyChunked(dst, br, src, func() {})
	dst.Close()
	out = <-got
	buffered, _ := br.Peek(br.Buffered())
	rest = append([]byte(nil), buffered...)
	more, _ := io.ReadAll(src)
	return out, append(rest, more...), n, err
}

const nextRequest = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"

// chunkedCases are the table of TestCopyChunkedStrict and the seeds of
// FuzzChunkedBody.
var chunkedCases = []struct {
	name, in  string
	out, rest string // when accepted
	bad       bool
}{
	{name: "plain", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" + nextRequest,
		out: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", rest: nextRequest},
	{name: "extensions dropped", in: "5;a=b;c\r\nhello\r\n0;x\r\n\r\n",
		out: "5\r\nhello\r\n0\r\n\r\n"},
	{name: "white space after the size trimmed", in: "5 \t \r\nhello\r\n0 \r\n\r\n",
		out: "5\r\nhello\r\n0\r\n\r\n"},
	{name: "leading zeros and upper case", in: "000A\r\n0123456789\r\n000\r\n\r\n",
		out: "a\r\n0123456789\r\n0\r\n\r\n"},
	{name: "sixteen hex digits", in: "0000000000000005\r\nhello\r\n0\r\n\r\n",
		out: "5\r\nhello\r\n0\r\n\r\n"},
	{name: "empty body", in: "0\r\n\r\n" + nextRequest, out: "0\r\n\r\n", rest: nextRequest},
	{name: "a byte per chunk", in: strings.Repeat("1\r\nx\r\n", 3000) + "0\r\n\r\n",
		out: strings.Repeat("1\r\nx\r\n", 3000) + "0\r\n\r\n"},

	{name: "bare LF ends the trailer", in: "5\r\nhello\r\n0\r\n\n" + nextRequest, bad: true},
	{name: "CR and LF only trailer line", in: "5\r\nhello\r\n0\r\n\r\r\n" + nextRequest, bad: true},
	{name: "LF CR LF trailer", in: "0\r\n\n\r\n" + nextRequest, bad: true},
	{name: "size that overflows size+2", in: "7fffffffffffffff\r\n0\r\n\r\n" + nextRequest, bad: true},
	{name: "size over int64", in: "ffffffffffffffff\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "seventeen hex digits", in: "00000000000000005\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "bare LF after the size", in: "5\nhello\r\n0\r\n\r\n", bad: true},
	{name: "CR inside the size line", in: "5\r;x\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "white space before the size", in: " 5\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "white space before an extension", in: "5 ;x\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "sign", in: "+5\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "empty size", in: ";x\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "data not followed by CRLF", in: "5\r\nhelloXY0\r\n\r\n", bad: true},
	{name: "data followed by a bare LF", in: "5\r\nhello\n0\r\n\r\n", bad: true},
	{name: "line of more than 4096 bytes", in: "5;" + strings.Repeat("e", 4093) + "\r\nhello\r\n0\r\n\r\n", bad: true},
	{name: "too much non-data", in: strings.Repeat("1;"+strings.Repeat("e", 4000)+"\r\nx\r\n", 6) + "0\r\n\r\n", bad: true},
	{name: "a trailer", in: "5\r\nhello\r\n0\r\nX-A: b\r\n\r\n", bad: true},
	{name: "the body cut short", in: "5\r\nhel", bad: true},
	{name: "the end cut short", in: "5\r\nhello\r\n0\r\n\r", bad: true},
	{name: "no last chunk", in: "5\r\nhello\r\n", bad: true},
}

// copyChunked reads the client's framing as Go's net/http (the daemon)
// reads it, refuses what the daemon would read otherwise or not at all,
// and writes the daemon a framing of its own: never the client's bytes
// between the data.
func TestCopyChunkedStrict(t *testing.T) {
	for _, tc := range chunkedCases {
		t.Run(tc.name, func(t *testing.T) {
			out, rest, _, err := chunkedThrough(t, []byte(tc.in))
			switch {
			case tc.bad && err == nil:
				t.Fatalf("accepted, want refused; the daemon got %.80q", out)
			case tc.bad && bytes.HasSuffix(out, []byte("0\r\n\r\n")):
				t.Fatalf("refused, but the daemon got a whole body: %.80q", out)
			case !tc.bad && err != nil:
				t.Fatalf("refused (%v), want accepted", err)
			case !tc.bad && (string(out) != tc.out || string(rest) != tc.rest):
				t.Fatalf("got %.80q then %.80q, want %.80q then %.80q", out, rest, tc.out, tc.rest)
			}
		})
	}
	// A line of exactly 4096 bytes, CRLF included, is the longest Go reads.
	in := "5;" + strings.Repeat("e", 4092) + "\r\nhello\r\n0\r\n\r\n"
	if out, _, _, err := chunkedThrough(t, []byte(in)); err != nil || string(out) != "5\r\nhello\r\n0\r\n\r\n" {
		t.Fatalf("a 4096-byte line: got %.80q, %v; want it accepted", out, err)
	}
}

// goReads is the oracle: the body as Go's HTTP server reads it, through
// the same code (http.ReadRequest, whose body the server hands its
// handler) and a read buffer of the server's size. It returns the body,
// what follows it on the connection, and the error.
func goReads(in []byte) (body, rest []byte, err error) {
	const head = "POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
	br := bufio.NewReaderSize(io.MultiReader(strings.NewReader(head), bytes.NewReader(in)), 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		panic(err) // the head is ours
	}
	body, err = io.ReadAll(req.Body)
	rest, _ = io.ReadAll(br)
	return body, rest, err
}

// canonical reports whether out is a chunked body in the proxy's own
// framing: lower-case hex sizes without leading zeros, no extensions, no
// trailer, nothing after it.
func canonical(out []byte) bool {
	for {
		line, after, ok := bytes.Cut(out, crlf)
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(string(line), 16, 64)
		if err != nil || strconv.FormatInt(n, 16) != string(line) {
			return false
		}
		if n == 0 {
			return string(after) == "\r\n"
		}
		if int64(len(after)) < n+2 || string(after[n:n+2]) != "\r\n" {
			return false
		}
		out = after[n+2:]
	}
}

// The proxy and Go's server agree on every chunked body: on whether it
// is accepted, on its data and on where it ends. The proxy may refuse
// what Go accepts only at a trailer, which it refuses by design; and
// what the daemon is sent decodes, by Go, to what Go decodes from the
// client's bytes, in the proxy's own framing.
func FuzzChunkedBody(f *testing.F) {
	for _, tc := range chunkedCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		goBody, goRest, goErr := goReads(in)
		out, rest, n, err := chunkedThrough(t, in)
		switch {
		case goErr != nil && err == nil:
			t.Fatalf("Go refuses (%v), the proxy accepts; the daemon got %q", goErr, out)
		case goErr != nil:
			if _, _, derr := goReads(out); derr == nil {
				t.Fatalf("refused (%v), but the daemon got a whole body: %q", err, out)
			}
		case err != nil && !errors.Is(err, errChunkTrailer):
			t.Fatalf("Go accepts %q, the proxy refuses: %v", goBody, err)
		case err != nil:
			// Refused at the trailer: the daemon got all the data, in
			// chunks (the last one's CRLF perhaps held back), and no end.
			body, _, derr := goReads(append(bytes.Clone(out), "0\r\n\r\n"...))
			if derr != nil || !bytes.Equal(body, goBody) {
				body, _, derr = goReads(append(bytes.Clone(out), "\r\n0\r\n\r\n"...))
			}
			if derr != nil || !bytes.Equal(body, goBody) {
				t.Fatalf("refused at the trailer after sending %q (%v), want the data %q", out, derr, goBody)
			}
		default:
			if !canonical(out) {
				t.Fatalf("the daemon got %q, not in the proxy's framing", out)
			}
			body, after, derr := goReads(out)
			switch {
			case derr != nil || !bytes.Equal(body, goBody) || len(after) != 0:
				t.Fatalf("the daemon reads %q then %q (%v), Go read %q from the client", body, after, derr, goBody)
			case !bytes.Equal(rest, goRest):
				t.Fatalf("after the body: the proxy has %q, Go %q", rest, goRest)
			case n != int64(len(goBody)):
				t.Fatalf("data bytes counted %d, want %d", n, len(goBody))
			}
		}
	})
}

// A chunk's CRLF is held back only when the next size line has come: a
// stream's chunk goes whole at once, for readers (urllib3) that wait for
// the CRLF before they hand the data on.
func TestChunkCRLFNotHeldForAStream(t *testing.T) {
	for _, size := range []int{5, 64 << 10} { // within the read buffer, and spliced
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			src, srcPeer := unixPair(t)
			dst, dstPeer := unixPair(t)
			data := strings.Repeat("d", size)
			chunk := fmt.Sprintf("%x\r\n%s\r\n", size, data)
			done := make(chan error, 1)
			go func() {
				_, err := copyChunked(dst, bufio.NewReaderSize(src, MaxHeader), src, func() {})
				done <- err
			}()
			io.WriteString(srcPeer, chunk)
			dstPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(chunk))
			if _, err := io.ReadFull(dstPeer, got); err != nil || string(got) != chunk {
				t.Fatalf("while the next chunk has not come: got %d bytes (%v), want the chunk whole", len(got), err)
			}
			io.WriteString(srcPeer, "1\r\nx\r\n0\r\n\r\n")
			got = make([]byte, len("1\r\nx\r\n0\r\n\r\n"))
			if _, err := io.ReadFull(dstPeer, got); err != nil || string(got) != "1\r\nx\r\n0\r\n\r\n" {
				t.Fatalf("the end: got %q (%v)", got, err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}
