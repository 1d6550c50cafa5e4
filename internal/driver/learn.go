package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// LearnDir is where a learning volume (policy=learn, learn:NAME) writes
// the policy it learned, NAME.yaml, and its records, NAME.records.
type LearnDir struct {
	// Dir is the directory as this process sees it; it is made (0750)
	// when a learning volume first needs it. Empty: learning is off.
	Dir string
	// Shown is Dir as the user names it, for Status and errors.
	Shown string
}

// learnEvery is how often a learning volume writes what it learned,
// when it learned something since.
const learnEvery = 2 * time.Second

// learnRef is a volume's learning policy reference, learn:NAME; a bare
// "learn" takes the volume's name.
func learnRef(v *Volume) (ref, name string, ok bool) {
	ref = v.Options[optPolicy]
	if ref == "learn" {
		ref = "learn:" + v.Name
	}
	name, ok = policy.LearnName(ref)
	return ref, name, ok
}

func (d LearnDir) shown() string {
	if d.Shown != "" {
		return d.Shown
	}
	return d.Dir
}

// open makes the directory if need be and opens it as a root, so that
// no name or symlink leads out of it.
func (d LearnDir) open() (*os.Root, error) {
	if d.Dir == "" {
		return nil, errors.New("this plugin has no directory for learned policies (the logdir mount)")
	}
	if err := os.MkdirAll(d.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot make the directory of learned policies %s: %w", d.shown(), unwrapPathErr(err))
	}
	root, err := os.OpenRoot(d.Dir)
	if err != nil {
		return nil, fmt.Errorf("cannot open the directory of learned policies %s: %w", d.shown(), unwrapPathErr(err))
	}
	return root, nil
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// learner is a learning volume's writer: it restores what the volume
// learned before (NAME.records), and writes the policy file and the
// records, atomically, while requests come, and when it stops.
type learner struct {
	root    *os.Root
	name    string
	shown   string // the file as the user names it
	learned *policy.Learned
	log     *slog.Logger

	mu        sync.Mutex
	written   int // requests in the file written last
	writtenAt time.Time
	lastErr   string
}

func newLearner(dir LearnDir, name string, log *slog.Logger) (*learner, error) {
	root, err := dir.open()
	if err != nil {
		return nil, err
	}
	l := &learner{root: root, name: name, shown: filepath.Join(dir.shown(), name+".yaml"),
		learned: policy.NewLearned(), log: log}
	data, err := root.ReadFile(name + ".records")
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		root.Close()
		return nil, fmt.Errorf("learned records %s: %w", filepath.Join(dir.shown(), name+".records"), unwrapPathErr(err))
	default:
		if err := l.learned.Restore(data); err != nil {
			// Learning starts again; the file of it stays until the
			// next write replaces it.
			log.Warn("learned records unreadable; learning starts afresh", "file", name+".records", "err", err)
		}
		l.written = l.learned.Requests()
	}
	return l, nil
}

// run writes what was learned every learnEvery, when there is more,
// until ctx ends.
func (l *learner) run(ctx context.Context) {
	t := time.NewTicker(learnEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.write()
		}
	}
}

// close writes what is left to write, after run ended.
func (l *learner) close() {
	l.write()
	l.root.Close()
}

// write writes the policy file and the records, when requests were
// learned since the last write.
func (l *learner) write() {
	n := l.learned.Requests()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.written {
		return
	}
	file, err := l.learned.File(l.name)
	if err == nil {
		// Never write a file that policy=file:NAME would refuse.
		_, err = policy.Parse(l.name, file)
	}
	if err == nil {
		err = writeAtomic(l.root, l.name+".records", l.learned.Records())
	}
	if err == nil {
		err = writeAtomic(l.root, l.name+".yaml", file)
	}
	if err != nil {
		if msg := err.Error(); msg != l.lastErr {
			l.log.Error("cannot write the learned policy; learning goes on and tries again", "file", l.shown, "err", err)
			l.lastErr = msg
		}
		return
	}
	if l.lastErr != "" {
		l.log.Info("learned policy written again", "file", l.shown)
	}
	l.written, l.writtenAt, l.lastErr = n, time.Now().UTC(), ""
}

// writeAtomic writes name in root by a temporary file, fsync and rename,
// so that a reader sees the old file or the new one, whole.
func writeAtomic(root *os.Root, name string, data []byte) error {
	tmp := "." + name + ".tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return unwrapPathErr(err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return unwrapPathErr(err)
	}
	return nil
}

// Status adds the learning keys to a volume's Status.
func (l *learner) Status(st map[string]any) {
	st["learned_file"] = l.shown
	st["learned_requests"] = l.learned.Requests()
	st["learned_rules"] = l.learned.Rules()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.writtenAt.IsZero() {
		st["learned_written_at"] = l.writtenAt.Format(time.RFC3339)
	}
	if l.lastErr != "" {
		st["learned_error"] = l.lastErr
	}
}
