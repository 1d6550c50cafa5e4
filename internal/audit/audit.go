// Package audit writes the policy proxy's audit log: one JSON line per
// request, in the shape of log/slog's JSON handler, shared by every proxy
// of a process.
package audit

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sockrelay/sockrelay/internal/rawio"
)

// Log writes the audit log: one JSON line per request, in the shape of
// log/slog's JSON handler (time, level, msg, then the attributes), so that
// it reads like the plugin's other lines.
//
// Lines are encoded by hand, without reflection, and written by group
// commit: a request whose line finds another write in progress leaves it
// to that writer, which writes everything waiting in one call when it is
// done. A lone request's line is written at once; under load,
// many lines share one write. When the output is slower than the
// requests (a daemon not reading the plugin's stdout), lines wait up to
// maxPending bytes and then requests wait for the output, as they would
// with plain writes: the log is never dropped and memory stays bounded.
//
// A managed plugin's stdout is a pipe. The log then opens that pipe again
// for itself, non-blocking, and writes it by raw system calls (rawio),
// each write at most PIPE_BUF bytes and cut at the end of a line: such a
// write is atomic, so a line of the process's other writers of the pipe
// (its operational log) never lands inside an audit line, nor the
// reverse.
//
// On a pipe, a line also waits up to linger for others to share its
// write. Each write to a plugin's stdout wakes containerd's shim, which
// copies it on, and dockerd, which reads it and logs every line: with a
// write per request, those two spend more CPU on a request than the
// proxy does (docs/performance.md). A write of many lines costs them one
// wakeup. Close writes what waits.
type Log struct {
	w io.Writer
	// pipe is the log's own open of w, when w is a pipe; prc is its
	// descriptor's.
	pipe *os.File
	prc  syscall.RawConn

	mu      sync.Mutex
	drained sync.Cond // signalled when pending is taken for writing, and when writing ends
	pending []byte
	spare   []byte
	writing bool
	timer   *time.Timer // on a pipe: writes what waited for linger
	armed   bool        // timer is set

	// sink, when set, takes every line instead (OpenFile, file.go).
	sink *fileSink
}

const (
	// maxPending bounds the bytes that wait for a write in progress.
	maxPending = 256 << 10
	// linger is how long a line waits on a pipe for others to share its
	// write; flushAt bytes waiting are written at once.
	linger  = 50 * time.Millisecond
	flushAt = 32 << 10
)

// New writes audit lines to w. Close releases what it opened.
func New(w io.Writer) *Log {
	a := &Log{w: w}
	a.drained.L = &a.mu
	if f, ok := w.(*os.File); ok {
		if p := reopenPipe(f); p != nil {
			if rc, err := p.SyscallConn(); err == nil {
				a.pipe, a.prc = p, rc
				a.timer = time.AfterFunc(time.Hour, a.lingered)
				a.timer.Stop()
			} else {
				p.Close()
			}
		}
	}
	return a
}

// Close writes the lines that wait, and closes the log's own open of its
// pipe, if it has one. Lines written after Close go to w as it is, at
// once.
func (a *Log) Close() error {
	if a.sink != nil {
		return a.sink.close()
	}
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.armed = false
	}
	for a.writing {
		a.drained.Wait()
	}
	if len(a.pending) > 0 {
		a.flush() // unlocks
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	p := a.pipe
	a.pipe, a.prc, a.timer = nil, nil, nil
	if p == nil {
		return nil
	}
	return p.Close()
}

// reopenPipe opens f's pipe again, write-only and non-blocking, when f is
// a pipe; otherwise, or if that fails, it returns nil. The new open file
// has flags of its own: f stays as it was for its other users.
func reopenPipe(f *os.File) *os.File {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	nfd := -1
	rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(fd), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return
		}
		nfd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(int(fd)), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			nfd = -1
		}
	})
	if nfd < 0 {
		return nil
	}
	return os.NewFile(uintptr(nfd), f.Name())
}

// pipeBuf is PIPE_BUF on Linux: a write to a pipe of at most this many
// bytes is atomic.
const pipeBuf = 4096

// output writes out, whole lines, to w, or by prc to the log's own open
// of w's pipe.
func (a *Log) output(prc syscall.RawConn, out []byte) {
	if prc == nil {
		a.w.Write(out) // a log that cannot be written is not a reason to fail a request
		return
	}
	for len(out) > 0 {
		n := len(out)
		if n > pipeBuf {
			// Whole lines up to pipeBuf; a longer line on its own.
			if i := bytes.LastIndexByte(out[:pipeBuf], '\n'); i >= 0 {
				n = i + 1
			} else if i := bytes.IndexByte(out, '\n'); i >= 0 {
				n = i + 1
			}
		}
		if _, err := rawio.Write(prc, out[:n]); err != nil {
			return // as above; the pipe's reader is gone
		}
		out = out[n:]
	}
}

// write adds one line (ending in a newline) to the log.
func (a *Log) write(line []byte) {
	if a.sink != nil {
		a.sink.add(line)
		return
	}
	a.mu.Lock()
	for a.writing && len(a.pending) >= maxPending {
		a.drained.Wait()
	}
	a.pending = append(a.pending, line...)
	if a.writing {
		a.mu.Unlock()
		return
	}
	if a.timer != nil && len(a.pending) < flushAt {
		if !a.armed {
			a.armed = true
			a.timer.Reset(linger)
		}
		a.mu.Unlock()
		return
	}
	a.flush()
}

// lingered writes the lines that waited for linger.
func (a *Log) lingered() {
	a.mu.Lock()
	a.armed = false
	if a.writing || len(a.pending) == 0 {
		a.mu.Unlock() // the write in progress takes them
		return
	}
	a.flush()
}

// flush writes what is pending, and what comes in meanwhile, in as few
// writes as it can. Callers hold mu, with no write in progress; flush
// releases it.
func (a *Log) flush() {
	a.writing = true
	for len(a.pending) > 0 {
		out := a.pending
		a.pending = a.spare[:0]
		a.drained.Broadcast()
		prc := a.prc
		a.mu.Unlock()
		a.output(prc, out)
		a.mu.Lock()
		if cap(out) <= maxPending*2 {
			a.spare = out[:0]
		}
	}
	a.writing = false
	a.drained.Broadcast()
	a.mu.Unlock()
}

// Entry is one request, as its audit line tells it.
type Entry struct {
	Time           time.Time // when its answer went out
	Volume, Policy string
	Method, Path   string
	Allow          bool
	Rule           string
	Status         int
	In, Out        int64 // body bytes each way
	Duration       time.Duration
	// Uses, under a learning policy, is what of a policy file's create
	// section the request needed (policy.Decision.Uses); the line
	// carries it as "uses", a list of strings, when it is not empty.
	Uses []string
	// Peer is the client process (SO_PEERCRED), when it could be had.
	Peer *Peer
}

// Peer is a client process's ids, as the kernel gives them, and the
// container it runs in, when known.
type Peer struct {
	PID, UID int32
	// Caller is "container", "host" or "unknown" (package peer); ""
	// leaves it and what follows out.
	Caller string
	// The container's full ID, name, image as asked for, and image ID:
	// each left out when not known.
	ContainerID, ContainerName, Image, ImageID string
}

// Request writes e's line.
func (a *Log) Request(e Entry) {
	var buf [512]byte
	a.write(appendEntry(buf[:0], e))
}

// CallEntry is one gRPC call on BuildKit's API, followed inside an
// allowed POST /grpc.
type CallEntry struct {
	Time           time.Time // when it was decided
	Volume, Policy string
	// Method is the call's method as sent (its :path), cut short.
	Method string
	Allow  bool
	Rule   string
	Peer   *Peer
}

// Call writes e's line: msg "grpc", the method as grpc_method.
func (a *Log) Call(e CallEntry) {
	var buf [512]byte
	a.write(appendCall(buf[:0], e))
}

func appendCall(buf []byte, e CallEntry) []byte {
	buf = appendHead(buf, e.Time, "grpc", e.Volume, e.Policy)
	buf = appendField(buf, "grpc_method", e.Method)
	buf = appendField(buf, "decision", decision(e.Allow))
	buf = appendField(buf, "rule", e.Rule)
	return appendTail(buf, e.Peer)
}

// appendHead opens a line with what every audit line starts with.
func appendHead(buf []byte, t time.Time, msg, volume, policy string) []byte {
	buf = append(buf, `{"time":"`...)
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","level":"INFO","msg":"`...)
	buf = append(buf, msg...)
	buf = append(buf, `","log":"audit"`...)
	buf = appendField(buf, "volume", volume)
	return appendField(buf, "policy", policy)
}

// appendTail closes a line with its peer, when known.
func appendTail(buf []byte, p *Peer) []byte {
	if p != nil {
		buf = appendInt(buf, "peer_pid", int64(p.PID))
		buf = appendInt(buf, "peer_uid", int64(p.UID))
		if p.Caller != "" {
			buf = appendField(buf, "caller", p.Caller)
		}
		for _, f := range [...]struct{ k, v string }{
			{"container_id", p.ContainerID}, {"container_name", p.ContainerName},
			{"image", p.Image}, {"image_id", p.ImageID},
		} {
			if f.v != "" {
				buf = appendField(buf, f.k, f.v)
			}
		}
	}
	return append(buf, "}\n"...)
}

func decision(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// appendEntry encodes e's line.
func appendEntry(buf []byte, e Entry) []byte {
	buf = appendHead(buf, e.Time, "request", e.Volume, e.Policy)
	buf = appendField(buf, "method", e.Method)
	buf = appendField(buf, "path", e.Path)
	buf = appendField(buf, "decision", decision(e.Allow))
	buf = appendField(buf, "rule", e.Rule)
	buf = appendInt(buf, "status", int64(e.Status))
	buf = appendInt(buf, "bytes_in", e.In)
	buf = appendInt(buf, "bytes_out", e.Out)
	buf = appendInt(buf, "duration_ms", e.Duration.Milliseconds())
	buf = appendList(buf, "uses", e.Uses)
	return appendTail(buf, e.Peer)
}

func appendField(buf []byte, key, value string) []byte {
	buf = append(buf, `,"`...)
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	return appendJSONString(buf, value)
}

// appendList appends a list of strings, unless it is empty.
func appendList(buf []byte, key string, vs []string) []byte {
	if len(vs) == 0 {
		return buf
	}
	buf = append(buf, `,"`...)
	buf = append(buf, key...)
	buf = append(buf, `":[`...)
	for i, v := range vs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendListString(buf, v)
	}
	return append(buf, ']')
}

func appendInt(buf []byte, key string, v int64) []byte {
	buf = append(buf, `,"`...)
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	return strconv.AppendInt(buf, v, 10)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as log/slog
// escapes it: quotes, backslashes and control characters escaped, bytes
// that are not UTF-8 replaced by U+FFFD, and U+2028 and U+2029 escaped so
// that the line stays one line for every reader.
func appendJSONString(buf []byte, s string) []byte { return appendString(buf, s, false) }

// appendListString appends s as a member of a list. log/slog encodes a
// list with encoding/json, which writes a backspace and a form feed as
// \b and \f where slog's own strings have \u0008 and \u000c: the line
// keeps to slog's, byte for byte.
func appendListString(buf []byte, s string) []byte { return appendString(buf, s, true) }

func appendString(buf []byte, s string, list bool) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '"', '\\':
				buf = append(buf, '\\', b)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			case '\b', '\f':
				if list {
					c := byte('b')
					if b == '\f' {
						c = 'f'
					}
					buf = append(buf, '\\', c)
					break
				}
				fallthrough
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
