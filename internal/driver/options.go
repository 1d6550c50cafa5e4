package driver

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The options of every volume, whatever its mode.
const (
	optMode   = "mode"
	optSocket = "socket"
	optTarget = "target"
)

// Auto is the mode= value that lets Create choose the mode (chooseMode):
// idmap where idmapped mounts of the target work and no socket owner is
// asked for, relay otherwise. It is no Mode of its own: a volume's record
// holds the mode chosen, so a volume keeps its mode whatever changes later.
const Auto = "auto"

// DefaultMode serves a volume that names no mode and no option only one
// mode takes.
const DefaultMode = Auto

// The modes auto chooses between.
const (
	relayName = "relay"
	idmapName = "idmap"
)

const (
	maxNameLen   = 100
	maxOptionLen = 256
	maxOptions   = 32
	// DefaultSocket is the socket's file name in the volume directory.
	DefaultSocket = "docker.sock"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// ValidateName checks a volume name. dockerd does not check the names of
// plugin volumes, so anything can arrive here.
func ValidateName(name string) error {
	if len(name) > maxNameLen || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: volume name %s: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d characters",
			ErrInvalid, quoteShort(name), maxNameLen)
	}
	return nil
}

// OptionKeys lists every option key of modes: the default mode's, then
// those of every volume, then the other modes'.
func OptionKeys(modes []Mode) []string {
	var keys []string
	add := func(k string) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, o := range autoOptions(modes) {
		add(o.Key)
	}
	for _, k := range []string{optSocket, optTarget, optMode} {
		add(k)
	}
	for _, m := range modes {
		for _, o := range m.Options() {
			add(o.Key)
		}
	}
	return keys
}

func findMode(modes []Mode, name string) Mode {
	for _, m := range modes {
		if m.Name() == name {
			return m
		}
	}
	return nil
}

func modeNames(modes []Mode) []string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.Name()
	}
	return names
}

// modeValues are the values the mode option takes: auto, then every mode.
func modeValues(modes []Mode) []string {
	return append([]string{Auto}, modeNames(modes)...)
}

// autoOptions are the options mode=auto takes besides those of every
// volume: relay's, since asking for one of them means relay.
func autoOptions(modes []Mode) []Option {
	if m := findMode(modes, relayName); m != nil {
		return m.Options()
	}
	return nil
}

// ParseOptions checks the options of a Create against modes and returns
// the volume they describe (without its name, upstream and remap range).
// Errors name the option and what it wants, never the value given.
// hostSockDir is the host's socket directory (/var/run); a target must
// lie below it.
func ParseOptions(opts map[string]string, hostSockDir string, modes []Mode) (*Volume, error) {
	all := OptionKeys(modes)
	if len(opts) > maxOptions {
		return nil, fmt.Errorf("%w: too many options; valid options are %s", ErrInvalid, strings.Join(all, ", "))
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same first error every time
	for _, k := range keys {
		if !slices.Contains(all, k) {
			return nil, fmt.Errorf("%w: unknown option %s; valid options are %s", ErrInvalid, quoteShort(k), strings.Join(all, ", "))
		}
		if len(opts[k]) > maxOptionLen {
			return nil, fmt.Errorf("%w: option %s: value longer than %d bytes", ErrInvalid, k, maxOptionLen)
		}
	}

	m, err := pickMode(opts, modes)
	if err != nil {
		return nil, err
	}
	v := &Volume{Mode: Auto, Socket: DefaultSocket, Target: path.Join(hostSockDir, "docker.sock"), Options: map[string]string{}}
	own := autoOptions(modes)
	if m != nil {
		v.Mode, own = m.Name(), m.Options()
	}
	for _, k := range keys {
		val := opts[k]
		var err error
		switch k {
		case optMode:
			continue
		case optSocket:
			v.Socket, err = parseSocketName(val)
		case optTarget:
			v.Target, err = parseTarget(val, hostSockDir)
		default:
			i := slices.IndexFunc(own, func(o Option) bool { return o.Key == k })
			if i < 0 {
				return nil, notForMode(m, k, modes)
			}
			v.Options[k], err = own[i].Parse(val)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: option %s: %v", ErrInvalid, k, err)
		}
	}
	if m == nil {
		if len(v.Options) == 0 {
			return v, nil // chooseMode decides, at Create
		}
		// Only relay makes a socket whose owner and mode can be chosen.
		if m = findMode(modes, relayName); m == nil {
			return nil, fmt.Errorf("%w: this build has no mode %s; pick one of %s", ErrInvalid, relayName, strings.Join(modeNames(modes), ", "))
		}
		v.Mode, v.Chosen = m.Name(), chosenOwner
	}
	if err := fillDefaults(v, m); err != nil {
		return nil, err
	}
	return v, nil
}

// fillDefaults gives v the defaults of m's options it was not given, and
// refuses it when it lacks one that m requires.
func fillDefaults(v *Volume, m Mode) error {
	for _, o := range m.Options() {
		if _, ok := v.Options[o.Key]; ok {
			continue
		}
		if o.Required {
			return fmt.Errorf("%w: mode=%s needs option %s: %s", ErrInvalid, m.Name(), o.Key, o.Help)
		}
		if o.Default != "" {
			v.Options[o.Key] = o.Default
		}
	}
	return nil
}

// pickMode is the mode the options name; without one, the mode of an
// option that only one mode takes (policy=… is a policy volume), or
// DefaultMode. It returns nil for auto.
func pickMode(opts map[string]string, modes []Mode) (Mode, error) {
	if name, ok := opts[optMode]; ok {
		if name == Auto {
			return nil, nil
		}
		if m := findMode(modes, name); m != nil {
			return m, nil
		}
		return nil, fmt.Errorf("%w: option mode: want one of %s", ErrInvalid, strings.Join(modeValues(modes), ", "))
	}
	var only Mode
	for k := range opts {
		var takers []Mode
		for _, m := range modes {
			if slices.ContainsFunc(m.Options(), func(o Option) bool { return o.Key == k }) {
				takers = append(takers, m)
			}
		}
		if len(takers) == 1 && (only == nil || only == takers[0]) {
			only = takers[0]
		}
	}
	return only, nil // nil: DefaultMode, auto
}

// notForMode refuses an option that mode m (nil: auto) does not take.
func notForMode(m Mode, key string, modes []Mode) error {
	name := Auto
	if m != nil {
		name = m.Name()
	}
	if h, ok := m.(Hinter); ok {
		if hint := h.Hint(key); hint != "" {
			return fmt.Errorf("%w: option %s does not apply to mode=%s: %s", ErrInvalid, key, name, hint)
		}
	}
	var takers []string
	for _, o := range modes {
		if slices.ContainsFunc(o.Options(), func(opt Option) bool { return opt.Key == key }) {
			takers = append(takers, "mode="+o.Name())
		}
	}
	return fmt.Errorf("%w: option %s does not apply to mode=%s; it is an option of %s", ErrInvalid, key, name, strings.Join(takers, " and "))
}

func parseID(v string) (string, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > 65535 {
		return "", fmt.Errorf("want a number from 0 to 65535, the id inside the container")
	}
	return strconv.FormatUint(n, 10), nil
}

func parsePerm(v string) (string, error) {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 || len(v) > 4 {
		return "", fmt.Errorf("want octal permission bits such as 0660 or 0600 (no setuid, setgid or sticky bits)")
	}
	if n&0o600 != 0o600 {
		return "", fmt.Errorf("the owner needs read and write (0600) to use a socket")
	}
	return fmt.Sprintf("%04o", n), nil
}

func parseSocketName(v string) (string, error) {
	if len(v) > 64 || !nameRE.MatchString(v) {
		return "", fmt.Errorf("want a file name of letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters")
	}
	return v, nil
}

// parseTarget accepts an absolute, clean host path strictly below
// hostSockDir; /run and /var/run are one directory on every current
// distribution, so either spelling is taken for the other.
func parseTarget(v, hostSockDir string) (string, error) {
	bad := fmt.Errorf("want the absolute path of a socket below %s, with no '..' or repeated '/'", hostSockDir)
	if !path.IsAbs(v) || path.Clean(v) != v || strings.ContainsRune(v, 0) {
		return "", bad
	}
	for _, dir := range sockDirAliases(hostSockDir) {
		if rel, ok := strings.CutPrefix(v, dir+"/"); ok && rel != "" {
			return path.Join(hostSockDir, rel), nil
		}
	}
	return "", bad
}

func sockDirAliases(dir string) []string {
	switch dir {
	case "/var/run", "/run":
		return []string{"/var/run", "/run"}
	}
	return []string{dir}
}

func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}
