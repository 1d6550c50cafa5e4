package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Learned gathers the requests served under a learning policy, each as
// its method, its normalised path and what it used (Decision.Uses), and
// writes the tightest policy file that allows them all: File. The records
// may come from the proxy or be read back from an audit log, so Add
// checks each as it checks a policy file's entries, and skips what a
// policy file could not hold. It is safe for concurrent use, and bounded:
// past maxLearnedRules endpoints or maxLearnedUses create entries, new
// ones are counted and left out.
type Learned struct {
	mu       sync.Mutex
	requests int                     // added and learned
	endpts   map[string]*learnedPath // by pattern
	uses     map[string]*seen        // by Uses entry
	upgrade  map[string]*seen        // by hijack pattern
	// refused are requests that a policy file cannot allow, by rule and
	// route; left are records skipped as malformed or past the bounds.
	refused map[string]*seen
	left    int
	// records are the requests learned, one per method, endpoint and
	// uses, with a path of each: what Records saves and Restore reads.
	records map[string]*Record
}

// Record is one kind of request learned: its method, a path of its
// endpoint, what it used, and how many such requests were seen.
type Record struct {
	Method string   `json:"method"`
	Path   string   `json:"path"`
	Uses   []string `json:"uses,omitempty"`
	N      int      `json:"n"`
}

type learnedPath struct {
	methods map[string]*seen // by method, upper case
}

// seen counts the requests that needed one entry, and the routes they
// took (at most maxSeenRoutes named).
type seen struct {
	n      int
	routes map[string]int
	more   bool // routes beyond those named
}

const (
	maxLearnedRules = 500
	maxLearnedUses  = 300
	// maxLearnedRecords bounds the kinds of request Records keeps.
	maxLearnedRecords = 4 * maxLearnedRules
	// maxRecordN bounds a restored record's count.
	maxRecordN    = 1 << 40
	maxSeenRoutes = 4
)

// NewLearned returns an empty Learned.
func NewLearned() *Learned {
	return &Learned{endpts: map[string]*learnedPath{}, uses: map[string]*seen{},
		upgrade: map[string]*seen{}, refused: map[string]*seen{}, records: map[string]*Record{}}
}

func (s *seen) add(route string, n int) {
	s.n += n
	if _, ok := s.routes[route]; ok || len(s.routes) < maxSeenRoutes {
		s.routes[route] += n
	} else {
		s.more = true
	}
}

func newSeen() *seen { return &seen{routes: map[string]int{}} }

func (l *Learned) count(m map[string]*seen, key string, max int, route string, n int) bool {
	s := m[key]
	if s == nil {
		if len(m) >= max {
			return false
		}
		s = newSeen()
		m[key] = s
	}
	s.add(route, n)
	return true
}

// Add records one request that was served: method, its normalised path
// (Decision.Path) and uses (Decision.Uses). It reports whether the record
// was learned; one that is malformed, or past the bounds, is counted as
// left out.
func (l *Learned) Add(method, p string, uses []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.add(method, p, uses, 1)
}

// add learns n requests alike; callers hold mu.
func (l *Learned) add(method, p string, uses []string, n int) bool {
	pat, route, ok := learnEndpoint(method, p)
	if ok {
		for _, u := range uses {
			if !validUse(u) {
				ok = false
			}
		}
	}
	if !ok {
		l.left++
		return false
	}
	m := strings.ToUpper(method)
	lp := l.endpts[pat]
	if lp == nil {
		if len(l.endpts) >= maxLearnedRules {
			l.left++
			return false
		}
		lp = &learnedPath{methods: map[string]*seen{}}
		l.endpts[pat] = lp
	}
	if lp.methods[m] == nil {
		lp.methods[m] = newSeen()
	}
	lp.methods[m].add(route, n)
	l.requests += n
	mb := methodBit(m)
	for _, h := range hijackEndpoints {
		if h.match(mb, p) {
			l.count(l.upgrade, h.pat.src, len(hijackEndpoints), route, n)
		}
	}
	for _, u := range uses {
		if rule, ok := strings.CutPrefix(u, useRefused+"="); ok {
			if !l.count(l.refused, rule+"\x00"+route, maxLearnedUses, route, n) {
				l.left++
			}
			continue
		}
		if !l.count(l.uses, u, maxLearnedUses, route, n) {
			l.left++
		}
	}
	uses = slices.Compact(slices.Sorted(slices.Values(uses)))
	key := m + "\x00" + pat + "\x00" + strings.Join(uses, "\x00")
	if r := l.records[key]; r != nil {
		r.N += n
	} else if len(l.records) < maxLearnedRecords {
		l.records[key] = &Record{Method: m, Path: p, Uses: uses, N: n}
	}
	return true
}

// Records returns what was learned, as JSON: a list of Record, which
// Restore reads back (a learning volume's state across restarts).
func (l *Learned) Records() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := make([]Record, 0, len(l.records))
	for _, k := range slices.Sorted(maps.Keys(l.records)) {
		rs = append(rs, *l.records[k])
	}
	b, _ := json.Marshal(rs) // plain strings and ints: cannot fail
	return b
}

// Restore adds the records that Records returned, checked as Add checks
// them. It reports the first error of the JSON; records that do not
// check are counted as left out.
func (l *Learned) Restore(data []byte) error {
	var rs []Record
	if err := json.Unmarshal(data, &rs); err != nil {
		return fmt.Errorf("learned records: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range rs {
		if r.N < 1 || r.N > maxRecordN {
			l.left++
			continue
		}
		l.add(r.Method, r.Path, r.Uses, r.N) // counts what it leaves out
	}
	return nil
}

// Requests is the number of requests learned; Rules the number of
// endpoints (allow rules) they make.
func (l *Learned) Requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests
}

// Rules is the number of allow rules learned so far.
func (l *Learned) Rules() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.endpts)
}

// learnEndpoint gives the pattern of a request's allow rule: dockerd's
// route when one matches, else the path itself as literal segments; and
// the route's name, for comments.
func learnEndpoint(method, p string) (pat, route string, ok bool) {
	if !validMethod(method) {
		return "", "", false
	}
	m := methodBit(method)
	if m == mOther {
		return "", "", false // a policy file names only the usual methods, or "*"
	}
	if np, q, err := NormalizePath(p); err != nil || np != p || q != "" {
		return "", "", false
	}
	for _, r := range routes {
		if r.match(m, p) {
			return r.pat.src, r.name, true
		}
	}
	// The path as a pattern of literal segments only: a "*" or "{x}"
	// segment would match more than this path.
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "*" || strings.HasPrefix(seg, "{") {
			return "", "", false
		}
	}
	pt, err := compilePattern(p)
	if err != nil || !pt.match(p) {
		return "", "", false
	}
	return p, strings.ToUpper(method) + " " + p, true
}

// validUse checks a Uses entry as a policy file's create section checks
// its values.
func validUse(u string) bool {
	if slices.Contains(switchKeys, u) {
		return true
	}
	key, v, ok := strings.Cut(u, "=")
	if !ok || v == "" || len(v) > maxLearnValue {
		return false
	}
	switch key {
	case useRefused:
		return ruleToken(v)
	case useCapAdd:
		return plainToken(v) && normCap(v) == v
	case useBinds:
		return path.IsAbs(v) && path.Clean(v) == v && !strings.ContainsRune(v, 0)
	case useVolType:
		return fsType(v) && strings.ToLower(v) == v && v != "none" && v != "bind"
	case useVolDrv:
		return learnableDriver(v, "local")
	case useLogDrv:
		return learnableDriver(v, logDriversBuiltIn...)
	}
	return false
}

// ruleToken reports whether s looks like a rule id: lower-case letters,
// digits and '-'.
func ruleToken(s string) bool {
	if len(s) > 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// fileMethods is the order methods are written in.
var fileMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}

// File writes the policy file that allows exactly what was learned, for
// a policy named name (as in file:NAME), with comments that say which
// requests each rule is for. It is valid input for Parse, unless nothing
// was learned yet (a policy must allow something): then it returns an
// error.
func (l *Learned) File(name string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.endpts) == 0 {
		return nil, fmt.Errorf("no request learned yet; a policy must allow something")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Learned by sockrelay: the tightest policy that allows the %s seen.\n", plural(l.requests, "request"))
	b.WriteString("# Review it, then install it as NAME.yaml in the policy directory and use\n")
	b.WriteString("# policy=file:NAME. Everything not listed here is denied.\n")
	if name != "" {
		fmt.Fprintf(&b, "# Learning policy: learn:%s.\n", name)
	}
	if l.left > 0 {
		fmt.Fprintf(&b, "# %s left out: malformed, or past the learner's bounds (%d endpoints, %d create entries).\n",
			plural(l.left, "record"), maxLearnedRules, maxLearnedUses)
	}
	b.WriteString("version: 1\n\nallow:\n")
	for _, pat := range slices.Sorted(maps.Keys(l.endpts)) {
		lp := l.endpts[pat]
		var ms, notes []string
		for _, m := range fileMethods {
			if s := lp.methods[m]; s != nil {
				ms = append(ms, m)
				notes = append(notes, fmt.Sprintf("%s %s", m, plural(s.n, "request")))
			}
		}
		method := ms[0]
		if len(ms) > 1 {
			method = "[" + strings.Join(ms, ", ") + "]"
		}
		fmt.Fprintf(&b, "  - {method: %s, path: %s}  # %s\n", method, yamlString(pat), strings.Join(notes, ", "))
	}

	b.WriteString("\n# What the inspected requests (container create, exec, volume create, …)\n")
	b.WriteString("# asked for beyond an unprivileged container. false: never asked for.\n")
	b.WriteString("create:\n")
	for _, key := range switchKeys {
		if s := l.uses[key]; s != nil {
			fmt.Fprintf(&b, "  %s: true  # %s\n", key, s.describe())
		} else {
			fmt.Fprintf(&b, "  %s: false\n", key)
		}
	}
	for _, key := range []string{useCapAdd, useBinds, useVolType, useVolDrv, useLogDrv} {
		var vals []string
		for u := range l.uses {
			if v, ok := strings.CutPrefix(u, key+"="); ok {
				vals = append(vals, v)
			}
		}
		if len(vals) == 0 {
			fmt.Fprintf(&b, "  %s: []\n", key)
			continue
		}
		fmt.Fprintf(&b, "  %s:\n", key)
		slices.Sort(vals)
		for _, v := range vals {
			fmt.Fprintf(&b, "    - %s  # %s\n", yamlString(v), l.uses[key+"="+v].describe())
		}
	}

	b.WriteString("\n# The endpoints that switched protocols (attach, exec, BuildKit).\n")
	if len(l.upgrade) == 0 {
		b.WriteString("upgrade: []\n")
	} else {
		b.WriteString("upgrade:\n")
		for _, pat := range slices.Sorted(maps.Keys(l.upgrade)) {
			fmt.Fprintf(&b, "  - %s  # %s\n", yamlString(pat), plural(l.upgrade[pat].n, "request"))
		}
	}
	if len(l.refused) > 0 {
		b.WriteString("\n# Seen, and refused under this file whatever it says (no policy file can\n")
		b.WriteString("# allow them; lookup-failed: the daemon did not answer while learning):\n")
		for _, k := range slices.Sorted(maps.Keys(l.refused)) {
			rule, route, _ := strings.Cut(k, "\x00")
			fmt.Fprintf(&b, "#   %s: %s, %s\n", route, rule, plural(l.refused[k].n, "request"))
		}
	}
	return b.Bytes(), nil
}

// describe says how many requests needed an entry, and of which routes.
func (s *seen) describe() string {
	routes := slices.Sorted(maps.Keys(s.routes))
	if s.more {
		routes = append(routes, "…")
	}
	return plural(s.n, "request") + ": " + strings.Join(routes, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// yamlString writes s as a YAML double-quoted scalar: JSON's escapes are
// YAML's.
func yamlString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}
