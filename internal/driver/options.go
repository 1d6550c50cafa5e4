package driver

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// OptionKeys are the volume options sockrelay understands.
var OptionKeys = []string{"uid", "gid", "perm", "socket", "target", "mode", "policy"}

// Modes lists the serving modes a volume may name.
var Modes = []string{"relay", "idmap", "policy"}

const (
	maxNameLen   = 100
	maxOptionLen = 256
	maxOptions   = 32
	defaultPerm  = 0o660
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

// Spec is a volume's parsed options.
type Spec struct {
	Mode string
	// UID and GID are the socket's owner as seen inside the container.
	UID, GID uint32
	Perm     os.FileMode
	Socket   string
	// Target is the upstream socket as a host path.
	Target string
	// Policy is the policy of mode=policy: a preset or file:NAME.
	Policy string
}

// ParseOptions checks the options of a Create. Errors name the option and
// what it wants, never the value given. hostSockDir is the host's socket
// directory (/var/run); a target must lie below it.
func ParseOptions(opts map[string]string, hostSockDir string) (Spec, error) {
	s := Spec{Mode: "relay", Perm: defaultPerm, Socket: DefaultSocket, Target: path.Join(hostSockDir, "docker.sock")}
	if len(opts) > maxOptions {
		return s, fmt.Errorf("%w: too many options; valid options are %s", ErrInvalid, strings.Join(OptionKeys, ", "))
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same first error every time
	for _, k := range keys {
		v := opts[k]
		if !slices.Contains(OptionKeys, k) {
			return s, fmt.Errorf("%w: unknown option %s; valid options are %s", ErrInvalid, quoteShort(k), strings.Join(OptionKeys, ", "))
		}
		if len(v) > maxOptionLen {
			return s, fmt.Errorf("%w: option %s: value longer than %d bytes", ErrInvalid, k, maxOptionLen)
		}
		var err error
		switch k {
		case "uid":
			s.UID, err = parseID(v)
		case "gid":
			s.GID, err = parseID(v)
		case "perm":
			s.Perm, err = parsePerm(v)
		case "socket":
			s.Socket, err = parseSocketName(v)
		case "target":
			s.Target, err = parseTarget(v, hostSockDir)
		case "mode":
			if !slices.Contains(Modes, v) {
				err = fmt.Errorf("want one of %s", strings.Join(Modes, ", "))
			}
			s.Mode = v
		case "policy":
			s.Policy, err = parsePolicyRef(v)
		}
		if err != nil {
			return s, fmt.Errorf("%w: option %s: %v", ErrInvalid, k, err)
		}
	}
	if s.Policy != "" {
		if m, ok := opts["mode"]; ok && m != "policy" {
			return s, fmt.Errorf("%w: option policy needs mode=policy (or no mode option)", ErrInvalid)
		}
		s.Mode = "policy"
	}
	if s.Mode == "policy" && s.Policy == "" {
		return s, fmt.Errorf("%w: mode=policy needs option policy: %s", ErrInvalid, policyHelp)
	}
	if s.Mode == "idmap" {
		for _, k := range []string{"uid", "gid", "perm"} {
			if _, ok := opts[k]; ok {
				return s, fmt.Errorf("%w: option %s does not apply to mode=idmap: the socket is the daemon's own, with its owner and mode seen through the remap; use mode=relay to choose them", ErrInvalid, k)
			}
		}
	}
	return s, nil
}

const policyHelp = "read-only, no-escalation, full, or file:NAME for a file in the plugin's policy directory"

// parsePolicyRef checks the form of a policy reference; whether the
// preset or file exists is checked at Create by the policy mode.
func parsePolicyRef(v string) (string, error) {
	if name, ok := strings.CutPrefix(v, "file:"); ok {
		if len(name) > 64 || !nameRE.MatchString(name) {
			return "", fmt.Errorf("file:NAME wants a NAME of letters, digits, '_', '.' and '-', starting with a letter or digit")
		}
		return v, nil
	}
	switch v {
	case "read-only", "no-escalation", "full":
		return v, nil
	}
	return "", fmt.Errorf("want %s", policyHelp)
}

func parseID(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > 65535 {
		return 0, fmt.Errorf("want a number from 0 to 65535, the id inside the container")
	}
	return uint32(n), nil
}

func parsePerm(v string) (os.FileMode, error) {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 || len(v) > 4 {
		return 0, fmt.Errorf("want octal permission bits such as 0660 or 0600 (no setuid, setgid or sticky bits)")
	}
	if n&0o600 != 0o600 {
		return 0, fmt.Errorf("the owner needs read and write (0600) to use a socket")
	}
	return os.FileMode(n), nil
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
