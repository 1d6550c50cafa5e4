package audit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FileConfig is an audit log file: JSON lines, rotated by size.
type FileConfig struct {
	// Path is the file written; rotated files are Path.1 (the newest) to
	// Path.Keep. Its directory must exist.
	Path string
	// MaxSize is the size at which the file is rotated: a write that
	// would take it past MaxSize goes to a new file.
	MaxSize int64
	// Keep is how many rotated files are kept (at least 1).
	Keep int
	// Refuse says what happens while lines cannot be written (the disk
	// full or failing, or so slow that MaxQueue bytes wait): false, the
	// lines are dropped and counted; true, the policy proxies refuse
	// requests (Log.Refusing) until a write succeeds again.
	Refuse bool
	// Log gets the sink's warnings: a failed write, lines dropped, a
	// failed rotation.
	Log *slog.Logger
}

// Limits of a file sink.
const (
	// MaxQueue bounds the bytes that wait for the file; past it, lines
	// are dropped (and requests refused, with Refuse).
	MaxQueue = 4 << 20
	// warnEvery spaces the warnings about dropped lines.
	warnEvery = 10 * time.Second
	// MinFileSize is the smallest MaxSize taken.
	MinFileSize = 64 << 10
)

// fileSink writes lines to a file from a goroutine of its own, so that no
// request ever waits for the disk: requests queue their lines, up to
// MaxQueue bytes, and the writer writes what waits in one write.
type fileSink struct {
	cfg  FileConfig
	wake chan struct{}
	done chan struct{}

	mu      sync.Mutex
	queue   []byte
	spare   []byte
	closed  bool
	dropped uint64 // lines, since the last warning
	warned  time.Time

	// Owned by the writer goroutine.
	f    appendFile
	size int64

	failing atomic.Bool   // the last write failed, or the queue is full
	total   atomic.Uint64 // lines dropped since the start
}

// OpenFile opens (or creates, mode 0640) the audit file cfg.Path and
// returns a Log that writes to it. It fails, having changed nothing but
// the file's creation, when the file cannot be opened for writing.
func OpenFile(cfg FileConfig) (*Log, error) {
	if cfg.MaxSize < MinFileSize {
		return nil, fmt.Errorf("audit file: a maximum size below %d bytes", MinFileSize)
	}
	if cfg.Keep < 1 {
		return nil, errors.New("audit file: keep at least 1 rotated file")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(cfg.Path)
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("audit file %s: its directory: %w", cfg.Path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("audit file %s: %s is not a directory", cfg.Path, dir)
	}
	f, size, err := openFile(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("audit file: %w", err)
	}
	s := &fileSink{cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{}), f: f, size: size}
	go s.run()
	return &Log{sink: s}, nil
}

// appendFile is what the sink needs of its file.
type appendFile interface {
	Write([]byte) (int, error)
	Truncate(size int64) error
	Close() error
}

// openFile opens the audit file; tests put a failing disk here.
var openFile = func(path string) (appendFile, int64, error) { return openAppend(path) }

// openAppend opens path for appending, creating it 0640; a symbolic link
// is refused.
func openAppend(path string) (*os.File, int64, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	return f, st.Size(), nil
}

// add queues one line; it never waits.
func (s *fileSink) add(line []byte) {
	s.mu.Lock()
	if s.closed || len(s.queue)+len(line) > MaxQueue {
		s.drop(1)
		s.failing.Store(true)
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, line...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drop counts lines dropped and warns, at most every warnEvery; callers
// hold mu.
func (s *fileSink) drop(lines uint64) {
	s.dropped += lines
	s.total.Add(lines)
	if now := time.Now(); now.Sub(s.warned) >= warnEvery {
		s.cfg.Log.Warn("audit lines dropped: the audit file cannot take them (disk full, failing or too slow)",
			"file", s.cfg.Path, "dropped", s.dropped, "dropped_total", s.total.Load(), "refusing_requests", s.cfg.Refuse)
		s.warned, s.dropped = now, 0
	}
}

// run writes what is queued until the sink is closed and empty.
func (s *fileSink) run() {
	defer close(s.done)
	for {
		<-s.wake
		s.mu.Lock()
		if len(s.queue) == 0 {
			closed := s.closed
			s.mu.Unlock()
			if closed {
				if s.f != nil {
					s.f.Close()
				}
				return
			}
			continue
		}
		out := s.queue
		s.queue = s.spare[:0]
		s.spare = nil
		s.mu.Unlock()

		written := s.writeOut(out)
		s.mu.Lock()
		if lost := uint64(bytes.Count(out[written:], []byte{'\n'})); lost > 0 {
			s.drop(lost)
			s.failing.Store(true)
		} else if len(s.queue) < MaxQueue/2 {
			s.failing.Store(false)
		}
		if cap(out) <= 2*MaxQueue {
			s.spare = out[:0]
		}
		s.mu.Unlock()
		// More may have come while writing, or the sink been closed.
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// writeOut writes whole lines, rotating the file before a line that
// would take it past its size (a line larger than that on its own goes
// to a file of its own). A write that fails (ENOSPC, EIO) is undone, so
// that the file never holds part of a line, and what is left is not
// written: it returns the bytes written.
func (s *fileSink) writeOut(out []byte) (written int) {
	rotated := false
	for written < len(out) {
		rest := out[written:]
		room := s.cfg.MaxSize - s.size
		n := 0 // whole lines that fit
		if int64(len(rest)) <= room {
			n = len(rest)
		} else if room > 0 {
			n = bytes.LastIndexByte(rest[:room], '\n') + 1
		}
		if n == 0 {
			if s.f != nil && (s.size == 0 || rotated) {
				// A line larger than a file, or a rotation that did
				// not give an empty file: the file grows on.
				n = bytes.IndexByte(rest, '\n') + 1
			} else {
				s.rotate()
				rotated = true
				continue
			}
		}
		if s.f == nil {
			s.rotate()
			if s.f == nil {
				return written
			}
			continue
		}
		m, err := s.f.Write(rest[:n])
		if err != nil {
			if m > 0 {
				s.f.Truncate(s.size)
			}
			s.cfg.Log.Warn("audit file write failed", "file", s.cfg.Path, "err", err)
			return written
		}
		s.size += int64(m)
		written += n
		rotated = false
	}
	return written
}

// rotate renames Path.(i) to Path.(i+1), the oldest dropped, and Path
// to Path.1, and opens a new Path. When the new file cannot be opened,
// lines are dropped until it can.
func (s *fileSink) rotate() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
		p := s.cfg.Path
		for i := s.cfg.Keep - 1; i >= 1; i-- {
			os.Rename(p+"."+strconv.Itoa(i), p+"."+strconv.Itoa(i+1)) // a missing one is no matter
		}
		if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cfg.Log.Warn("audit file rotation failed; the file grows on", "file", p, "err", err)
		}
	}
	f, size, err := openFile(s.cfg.Path)
	if err != nil {
		s.cfg.Log.Warn("audit file cannot be opened; lines are dropped until it can", "file", s.cfg.Path, "err", err)
		return
	}
	s.f, s.size = f, size
}

// close writes what waits and closes the file.
func (s *fileSink) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
	return nil
}

// Refusing says whether the policy proxies should refuse requests now:
// the log goes to a file set to refuse (FileConfig.Refuse), and lines
// cannot be written.
func (a *Log) Refusing() bool {
	return a != nil && a.sink != nil && a.sink.cfg.Refuse && a.sink.failing.Load()
}

// Dropped is the number of lines the log dropped since it started: only
// a file sink drops lines.
func (a *Log) Dropped() uint64 {
	if a == nil || a.sink == nil {
		return 0
	}
	return a.sink.total.Load()
}
