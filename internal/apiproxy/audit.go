package apiproxy

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AuditLog writes the audit log: one JSON line per request, in the shape
// of log/slog's JSON handler (time, level, msg, then the attributes), so
// that it reads like the plugin's other lines. It is shared by every
// proxy of a process.
//
// Lines are encoded by hand, without reflection, and written by group
// commit: a request whose line finds another write in progress leaves it
// to that writer, which writes everything waiting in one call when it is
// done. A lone request's line is written at once, as before; under load,
// many lines share one write. When the output is slower than the
// requests (a daemon not reading the plugin's stdout), lines wait up to
// maxPending bytes and then requests wait for the output, as they would
// with plain writes: the log is never dropped and memory stays bounded.
type AuditLog struct {
	w io.Writer

	mu      sync.Mutex
	drained sync.Cond // signalled when pending is taken for writing
	pending []byte
	spare   []byte
	writing bool
}

// maxPending bounds the bytes that wait for a write in progress.
const maxPending = 256 << 10

// NewAuditLog writes audit lines to w.
func NewAuditLog(w io.Writer) *AuditLog {
	a := &AuditLog{w: w}
	a.drained.L = &a.mu
	return a
}

// write adds one line (ending in a newline) to the log.
func (a *AuditLog) write(line []byte) {
	a.mu.Lock()
	for a.writing && len(a.pending) >= maxPending {
		a.drained.Wait()
	}
	a.pending = append(a.pending, line...)
	if a.writing {
		a.mu.Unlock()
		return
	}
	a.writing = true
	for len(a.pending) > 0 {
		out := a.pending
		a.pending = a.spare[:0]
		a.drained.Broadcast()
		a.mu.Unlock()
		a.w.Write(out) // a log that cannot be written is not a reason to fail a request
		a.mu.Lock()
		if cap(out) <= maxPending*2 {
			a.spare = out[:0]
		}
	}
	a.writing = false
	a.mu.Unlock()
}

// line encodes one audit line for x.
func (p *Proxy) auditLine(buf []byte, cc *clientConn, x *exchange, now time.Time) []byte {
	decision := "deny"
	if x.allow {
		decision = "allow"
	}
	buf = append(buf, `{"time":"`...)
	buf = now.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","level":"INFO","msg":"request","log":"audit"`...)
	buf = appendField(buf, "volume", p.Volume)
	buf = appendField(buf, "policy", x.policy)
	buf = appendField(buf, "method", x.method)
	buf = appendField(buf, "path", x.path)
	buf = appendField(buf, "decision", decision)
	buf = appendField(buf, "rule", x.rule)
	buf = appendInt(buf, "status", int64(x.status))
	buf = appendInt(buf, "bytes_in", x.in)
	buf = appendInt(buf, "bytes_out", x.out)
	buf = appendInt(buf, "duration_ms", now.Sub(x.start).Milliseconds())
	if cc.peer.ok {
		buf = appendInt(buf, "peer_pid", int64(cc.peer.pid))
		buf = appendInt(buf, "peer_uid", int64(cc.peer.uid))
	}
	return append(buf, "}\n"...)
}

func appendField(buf []byte, key, value string) []byte {
	buf = append(buf, `,"`...)
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	return appendJSONString(buf, value)
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
func appendJSONString(buf []byte, s string) []byte {
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
