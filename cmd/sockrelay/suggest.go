package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/sockrelay/sockrelay/internal/policy"
)

const policyUsage = `usage: sockrelay policy suggest [-volume NAME] [-name NAME] [-o FILE] [LOG ...]

Writes the tightest policy file that allows every request an audit log
shows allowed: the file a learning volume (policy=learn) writes, made
from its audit lines. LOG is a file of audit lines ("-" or none: standard
input), in any of these forms:
  - JSON lines, as the audit file and sockrelay serve write them;
  - dockerd's log, where each audit line is the msg of a line of the
    plugin's, in text (msg="{\"time\":…}") or JSON form
    (journalctl -u docker -o cat, or dockerd's log file).
Other lines are skipped. Only the lines of a learning volume say what
each request used (its "uses"): from other policies' lines only the
endpoints are learned, and the file then refuses what their create-like
requests asked for beyond an unprivileged container.
`

// runPolicy runs `sockrelay policy SUBCOMMAND`.
func runPolicy(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "suggest" {
		fmt.Fprint(stderr, policyUsage)
		if len(args) == 0 {
			return errors.New("policy: no subcommand given")
		}
		return fmt.Errorf("policy: unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("policy suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage) }
	volume := fs.String("volume", "", "only the lines of this volume (default: every volume's; more than one is an error)")
	name := fs.String("name", "", "the policy's name, for the file's header (default: the learning policy's NAME, else the volume's)")
	out := fs.String("o", "", "the file to write (default: standard output)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	s := suggester{volume: *volume, learned: policy.NewLearned(), volumes: map[string]int{}, plain: map[string]int{}, names: map[string]int{}}
	for _, f := range files {
		if err := s.readFile(f, stdin); err != nil {
			return err
		}
	}
	if len(s.volumes) > 1 {
		return fmt.Errorf("policy suggest: the log holds the lines of more than one volume (%s); choose one with -volume",
			strings.Join(slices.Sorted(maps.Keys(s.volumes)), ", "))
	}
	if *name == "" && len(s.names) == 1 {
		for n := range s.names {
			*name = n
		}
	}
	if *name == "" {
		for v := range s.volumes {
			*name = v
		}
	}
	if s.learned.Requests() == 0 {
		return fmt.Errorf("policy suggest: no allowed request in the log%s; it needs the audit lines of a policy volume", forVolume(*volume))
	}
	file, err := s.learned.File(*name)
	if err == nil {
		_, err = policy.Parse("suggested", file)
	}
	if err != nil {
		return fmt.Errorf("policy suggest: %w", err)
	}
	for _, p := range slices.Sorted(maps.Keys(s.plain)) {
		fmt.Fprintf(stderr, "sockrelay: policy suggest: %d lines of policy %s say nothing of what their requests used (only a learning volume's do): their endpoints are learned, not what their create-like requests asked for\n", s.plain[p], p)
	}
	fmt.Fprintf(stderr, "sockrelay: policy suggest: %d requests learned, %d lines skipped\n", s.learned.Requests(), s.skipped)
	if *out == "" {
		_, err = stdout.Write(file)
		return err
	}
	if err := os.WriteFile(*out, file, 0o640); err != nil {
		return fmt.Errorf("policy suggest: %w", err)
	}
	return nil
}

func forVolume(v string) string {
	if v == "" {
		return ""
	}
	return " of volume " + strconv.Quote(v)
}

// suggester reads audit lines into a Learned.
type suggester struct {
	volume  string
	learned *policy.Learned
	volumes map[string]int // lines learned, by volume
	plain   map[string]int // lines learned without uses, by policy
	names   map[string]int // lines learned, by learning policy's NAME
	skipped int
}

// maxLogLine bounds a line of the log: an audit line is far shorter.
const maxLogLine = 1 << 20

func (s *suggester) readFile(name string, stdin io.Reader) error {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("policy suggest: %w", err)
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		s.line(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("policy suggest: %s: %w", name, err)
	}
	return nil
}

// auditLine is what suggest reads of an audit line.
type auditLine struct {
	Log      string   `json:"log"`
	Msg      string   `json:"msg"`
	Volume   string   `json:"volume"`
	Policy   string   `json:"policy"`
	Method   string   `json:"method"`
	Path     string   `json:"path"`
	Decision string   `json:"decision"`
	Uses     []string `json:"uses"`
}

func (s *suggester) line(b []byte) {
	a, ok := parseAuditLine(b)
	if !ok || a.Msg != "request" || a.Decision != "allow" || s.volume != "" && a.Volume != s.volume {
		s.skipped++
		return
	}
	if !s.learned.Add(a.Method, a.Path, a.Uses) {
		s.skipped++
		return
	}
	s.volumes[a.Volume]++
	if n, learning := policy.LearnName(a.Policy); learning {
		s.names[n]++
	} else {
		s.plain[a.Policy]++
	}
}

// parseAuditLine reads an audit line: a JSON line itself, or the msg of
// a line of dockerd's log, in JSON or text (logfmt, msg="…" quoted as Go
// quotes).
func parseAuditLine(b []byte) (auditLine, bool) {
	b = bytes.TrimSpace(b)
	var a auditLine
	if len(b) > 0 && b[0] == '{' {
		if json.Unmarshal(b, &a) != nil {
			return a, false
		}
		if a.Log == "audit" {
			return a, true
		}
		return parseAuditLine([]byte(a.Msg)) // dockerd's JSON log
	}
	i := bytes.Index(b, []byte(` msg="`)) + 1
	if i == 0 {
		if !bytes.HasPrefix(b, []byte(`msg="`)) {
			return a, false
		}
	}
	msg, ok := quoted(string(b[i+len("msg="):]))
	if !ok || !strings.HasPrefix(msg, "{") {
		return a, false
	}
	if json.Unmarshal([]byte(msg), &a) != nil || a.Log != "audit" {
		return a, false
	}
	return a, true
}

// quoted unquotes the Go-quoted string s starts with.
func quoted(s string) (string, bool) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			return v, err == nil
		}
	}
	return "", false
}
