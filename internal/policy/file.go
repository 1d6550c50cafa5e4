package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid is the class of errors about a policy that cannot be used: an
// unknown preset, a bad name, an invalid file.
var ErrInvalid = errors.New("invalid policy")

// ErrNotFound is the class of errors about a policy file that does not exist.
var ErrNotFound = errors.New("policy file not found")

// FileError is an error in a policy file: where, and why, for the user who
// wrote it. It never quotes values from the file beyond keys and short
// tokens.
type FileError struct {
	File   string // path of the file, if known
	Line   int    // 1-based; 0 if the error has no line
	Reason string
}

func (e *FileError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	if e.Line > 0 {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FileError) Unwrap() error { return ErrInvalid }

const (
	maxFile  = 256 << 10
	maxRules = 1000
	maxName  = 100
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// fileExts are tried in this order; more than one present is an error.
var fileExts = []string{".yaml", ".yml", ".json"}

// Load reads and parses dir/NAME.yaml, dir/NAME.yml or dir/NAME.json. NAME
// must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$; the file is opened through an
// os.Root, so neither the name nor a symlink can leave dir.
func Load(dir, name string) (*Policy, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		class := ErrInvalid
		if errors.Is(err, fs.ErrNotExist) {
			class = ErrNotFound
		}
		return nil, fmt.Errorf("%w: policy file:%s: policy directory %s: %w", class, name, dir, unwrapPath(err))
	}
	defer root.Close()
	var found []string
	for _, ext := range fileExts {
		if _, err := root.Stat(name + ext); err == nil {
			found = append(found, name+ext)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: policy file:%s: %s: %w", ErrInvalid, name, filepath.Join(dir, name+ext), unwrapPath(err))
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: policy file:%s: no %s.yaml, %s.yml or %s.json in %s", ErrNotFound, name, name, name, name, dir)
	case 1:
	default:
		return nil, fmt.Errorf("%w: policy file:%s: both %s exist in %s; keep one", ErrInvalid, name, strings.Join(found, " and "), dir)
	}
	file := filepath.Join(dir, found[0])
	data, err := readFile(root, found[0])
	if err != nil {
		return nil, &FileError{File: file, Reason: err.Error()}
	}
	p, err := Parse(name, data)
	if fe, ok := err.(*FileError); ok {
		fe.File = file
	}
	return p, err
}

func readFile(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, unwrapPath(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("larger than %d bytes", maxFile)
	}
	return data, nil
}

// unwrapPath drops the *PathError's path, which the caller names already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func checkName(name string) error {
	if len(name) > maxName || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: policy name %s: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d characters",
			ErrInvalid, quoteShort(name), maxName)
	}
	return nil
}

// Parse compiles a policy file (YAML; JSON is YAML too) named NAME (with or
// without "file:"). Its errors are *FileError: "line N: reason".
func Parse(name string, data []byte) (*Policy, error) {
	name = strings.TrimPrefix(name, filePrefix)
	if err := checkName(name); err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, &FileError{Reason: fmt.Sprintf("the file is larger than %d bytes", maxFile)}
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	fp := fileParser{policy: filePrefix + name}
	p, err := fp.policyFile(root)
	if err != nil {
		return nil, err
	}
	p.digest = digest(data)
	return p, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &FileError{Line: 1, Reason: "the file is empty"}
		}
		return nil, yamlError(err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err != io.EOF {
		if err != nil {
			return nil, yamlError(err)
		}
		return nil, &FileError{Line: more.Line, Reason: "more than one YAML document; a policy file holds one"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &FileError{Line: 1, Reason: "the file is empty"}
	}
	return doc.Content[0], nil
}

// yamlParserProblems are the problems yaml.v3's parser (not its scanner)
// reports. It numbers their lines from 0, and its scanner's from 1.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"did not find expected '-' indicator", "did not find expected <document start>",
	"did not find expected <stream-start>", "did not find expected key",
	"did not find expected node content", "found duplicate %TAG directive",
	"found duplicate %YAML directive", "found incompatible YAML document",
	"found undefined tag handle",
}

// yamlError turns a yaml.v3 error into a FileError with a 1-based line.
// yaml.v3 leaves the line out when it is the first.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if slices.Contains(yamlParserProblems, msg) || line == 0 {
		line++
	}
	return &FileError{Line: line, Reason: "YAML: " + msg}
}

type fileParser struct {
	policy string // "file:NAME", for reasons
}

func errAt(n *yaml.Node, format string, args ...any) error {
	return &FileError{Line: n.Line, Reason: fmt.Sprintf(format, args...)}
}

// fields walks a mapping: every key once, every key known.
func fields(n *yaml.Node, what string, known []string, f func(key string, k, v *yaml.Node) error) error {
	if err := notAlias(n); err != nil {
		return err
	}
	if n.Kind != yaml.MappingNode {
		return errAt(n, "%s must be a mapping (key: value)", what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := notAlias(k); err != nil {
			return err
		}
		if k.Tag == "!!merge" {
			return errAt(k, "YAML merge keys (<<) are not supported in a policy file")
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			return errAt(k, "%s: keys must be strings", what)
		}
		if !slices.Contains(known, k.Value) {
			return errAt(k, "%s: unknown key %s; known keys are %s", what, quoteShort(k.Value), strings.Join(known, ", "))
		}
		if seen[k.Value] {
			return errAt(k, "%s: duplicate key %s", what, k.Value)
		}
		seen[k.Value] = true
		if err := notAlias(v); err != nil {
			return err
		}
		if err := f(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func notAlias(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		return errAt(n, "YAML aliases (*name) are not supported in a policy file")
	}
	return nil
}

func str(n *yaml.Node, what string) (string, error) {
	if err := notAlias(n); err != nil {
		return "", err
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", errAt(n, "%s must be a string", what)
	}
	return n.Value, nil
}

func boolean(n *yaml.Node, what string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, errAt(n, "%s must be true or false", what)
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE", nil
}

// strList reads a sequence of strings.
func strList(n *yaml.Node, what string, each func(n *yaml.Node, s string) error) error {
	if n.Kind != yaml.SequenceNode {
		return errAt(n, "%s must be a list", what)
	}
	for _, e := range n.Content {
		s, err := str(e, what+" entries")
		if err != nil {
			return err
		}
		if err := each(e, s); err != nil {
			return err
		}
	}
	return nil
}

var topKeys = []string{"version", "allow", "deny", "create", "upgrade", "scope"}

func (fp *fileParser) policyFile(root *yaml.Node) (*Policy, error) {
	p := &Policy{
		name:        fp.policy,
		defaultRule: RuleNotAllowed,
		defaultWhy:  "is not allowed by policy " + fp.policy,
		cons:        &constraints{},
		upgrade:     attachUpgrade,
	}
	var sawAllow bool
	err := fields(root, "the policy", topKeys, func(key string, k, v *yaml.Node) error {
		switch key {
		case "version":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Value != "1" {
				return errAt(v, "version must be 1")
			}
		case "allow":
			sawAllow = true
			rules, err := fp.rules(v, "allow")
			if err != nil {
				return err
			}
			if len(rules) == 0 {
				return errAt(v, "allow: the list is empty; a policy must allow something (everything not allowed is denied)")
			}
			p.allow = rules
		case "deny":
			rules, err := fp.rules(v, "deny")
			if err != nil {
				return err
			}
			p.deny = rules
		case "create":
			return fp.create(v, p.cons)
		case "scope":
			s, err := str(v, "scope")
			if err != nil {
				return err
			}
			if err := CheckScope(s); err != nil {
				return errAt(v, "scope: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d characters", MaxScope)
			}
			p.scope = s
		case "upgrade":
			p.upgrade = []pattern{} // present: exactly what it lists
			return strList(v, "upgrade", func(n *yaml.Node, s string) error {
				pt, err := compilePattern(s)
				if err != nil {
					return errAt(n, "upgrade: %v", err)
				}
				if !slices.ContainsFunc(upgradeSamples, pt.match) {
					return errAt(n, "upgrade: %s names no endpoint that switches protocols (/containers/{id}/attach, /containers/{id}/attach/ws, /exec/{id}/start, /session, /grpc)", quoteShort(s))
				}
				p.upgrade = append(p.upgrade, pt)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawAllow {
		return nil, errAt(root, "the policy has no allow list; a policy must allow something (everything not allowed is denied)")
	}
	return p, nil
}

var ruleKeys = []string{"method", "path"}

func (fp *fileParser) rules(n *yaml.Node, what string) ([]rule, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, "%s must be a list of {method, path} rules", what)
	}
	if len(n.Content) > maxRules {
		return nil, errAt(n, "%s has more than %d rules", what, maxRules)
	}
	rules := make([]rule, 0, len(n.Content))
	for _, e := range n.Content {
		var r rule
		var sawMethod, sawPath bool
		err := fields(e, what+" rule", ruleKeys, func(key string, k, v *yaml.Node) error {
			switch key {
			case "method":
				sawMethod = true
				m, err := methods(v, what)
				r.methods = m
				return err
			case "path":
				sawPath = true
				s, err := str(v, what+": path")
				if err != nil {
					return err
				}
				pt, err := compilePattern(s)
				if err != nil {
					return errAt(v, "%s: %v", what, err)
				}
				r.pat = pt
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !sawMethod || !sawPath {
			return nil, errAt(e, "%s rule needs both method and path", what)
		}
		if what == "deny" {
			r.id = RuleDenied
			r.why = fmt.Sprintf("is denied by policy %s (deny rule at line %d)", fp.policy, e.Line)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// methods reads a method, a list of methods, or "*".
func methods(n *yaml.Node, what string) (methodSet, error) {
	one := func(n *yaml.Node) (methodSet, error) {
		s, err := str(n, what+": method")
		if err != nil {
			return 0, err
		}
		if s == "*" {
			return mAll, nil
		}
		if b, ok := methodBits[strings.ToUpper(s)]; ok {
			return b, nil
		}
		return 0, errAt(n, "%s: unknown method %s; use GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH or \"*\"", what, quoteShort(s))
	}
	if n.Kind != yaml.SequenceNode {
		return one(n)
	}
	if len(n.Content) == 0 {
		return 0, errAt(n, "%s: the method list is empty", what)
	}
	var set methodSet
	for _, e := range n.Content {
		b, err := one(e)
		if err != nil {
			return 0, err
		}
		set |= b
	}
	return set, nil
}

var createKeys = []string{"privileged", "cap_add", "devices", "host_namespaces", "unconfined",
	"sysctls", "volumes_from", "annotations", "binds", "volume_types", "volume_drivers", "cgroup_parent", "log_drivers", "swarm_ca"}

func (fp *fileParser) create(n *yaml.Node, c *constraints) error {
	return fields(n, "create", createKeys, func(key string, k, v *yaml.Node) error {
		what := "create: " + key
		var err error
		switch key {
		case "privileged":
			c.privileged, err = boolean(v, what)
		case "devices":
			c.devices, err = boolean(v, what)
		case "host_namespaces":
			c.hostNS, err = boolean(v, what)
		case "unconfined":
			c.unconfined, err = boolean(v, what)
		case "sysctls":
			c.sysctls, err = boolean(v, what)
		case "volumes_from":
			c.volumesFrom, err = boolean(v, what)
		case "annotations":
			c.annotations, err = boolean(v, what)
		case "cgroup_parent":
			c.cgroupParent, err = boolean(v, what)
		case "swarm_ca":
			c.swarmCAs, err = boolean(v, what)
		case "cap_add":
			c.capAdd = []string{}
			err = strList(v, what, func(n *yaml.Node, s string) error {
				nc := normCap(s)
				if !plainToken(nc) {
					return errAt(n, "%s: %s is not a capability name (like NET_ADMIN or CAP_NET_ADMIN, or ALL)", what, quoteShort(s))
				}
				c.capAdd = append(c.capAdd, nc)
				return nil
			})
		case "binds":
			c.binds = []string{}
			err = strList(v, what, func(n *yaml.Node, s string) error {
				if !path.IsAbs(s) || path.Clean(s) != s || strings.ContainsRune(s, 0) {
					return errAt(n, "%s: entries must be clean absolute host paths (like /srv/ci/cache)", what)
				}
				c.binds = append(c.binds, s)
				return nil
			})
		case "volume_types":
			c.volumeTypes = []string{}
			err = strList(v, what, func(n *yaml.Node, s string) error {
				switch {
				case strings.EqualFold(s, "none") || strings.EqualFold(s, "bind"):
					return errAt(n, "%s: type none with o=bind is a bind mount; list its host path under binds instead", what)
				case !fsType(s):
					return errAt(n, "%s: %s is not a file system type (like tmpfs or nfs)", what, quoteShort(s))
				}
				c.volumeTypes = append(c.volumeTypes, strings.ToLower(s))
				return nil
			})
		case "volume_drivers":
			c.volumeDrivers, err = drivers(v, what, "local")
		case "log_drivers":
			c.logDrivers, err = drivers(v, what, logDriversBuiltIn...)
		}
		return err
	})
}

// drivers reads a list of plugin drivers. builtIn are the drivers that
// every policy allows; listing one of them is an error, since the same
// name with a tag would be a plugin.
func drivers(n *yaml.Node, what string, builtIn ...string) (driverList, error) {
	l := driverList{}
	err := strList(n, what, func(n *yaml.Node, s string) error {
		if slices.Contains(builtIn, s) {
			return errAt(n, "%s: %s is built in and always allowed; %s:latest would be a plugin of that name", what, s, s)
		}
		ref, err := pluginRef(s)
		switch {
		case errors.Is(err, errIDPrefix), errors.Is(err, errDigest):
			return errAt(n, "%s: %s %v; write it with its tag, like %s", what, quoteShort(s), err, quoteShort(nameOnly(s)+":latest"))
		case err != nil:
			return errAt(n, "%s: %s %v (like vieux/sshfs or vieux/sshfs:latest)", what, quoteShort(s), err)
		}
		l = append(l, driverName{written: s, plugin: ref})
		return nil
	})
	return l, err
}

// nameOnly cuts a digest off a reference, for a suggestion.
func nameOnly(s string) string {
	name, _, _ := strings.Cut(s, "@")
	return name
}

func fsType(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
