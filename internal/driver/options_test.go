package driver

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"docker", true},
		{"my-vol_1.sock", true},
		{"0leading-digit", true},
		{"A.B-C_D", true},
		{strings.Repeat("n", 100), true},
		{"a..b", true}, // one path element: no '/' anywhere
		{"", false},
		{strings.Repeat("n", 101), false},
		{"a/b", false},
		{"/abs", false},
		{"../x", false},
		{"..", false},
		{".", false},
		{".hidden", false},
		{"-flag", false},
		{"_under", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\\b", false},
		{"a:b", false},
		{"vol\u00e9", false},    // é
		{"\u0430bc", false},     // Cyrillic a
		{"a\u200bb", false},     // zero-width space
		{"ｆｕｌｌ", false},         // full-width letters
		{"a;rm -rf /", false},   // shell
		{"a$(id)", false},       // shell
		{"a\xff", false},        // not UTF-8
		{"name\r", false},       // trailing CR
		{"trailing\n", false},   // regexp $ must not match before a newline
		{"x" + "\u0000", false}, // trailing NUL
		{"a%2fb", false},        // encoded slash
		{"a*", false},           // glob
		{strings.Repeat("\u00e9", 50), false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.name), func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.ok {
				if err != nil {
					t.Errorf("ValidateName(%q): got %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateName(%q): got nil, want an error", tt.name)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateName(%q): got %v, want an error wrapping ErrInvalid", tt.name, err)
			}
		})
	}
}

// The error quotes at most 64 bytes of a long name.
func TestValidateNameErrorShort(t *testing.T) {
	long := strings.Repeat("n", 4096)
	err := ValidateName(long)
	if err == nil {
		t.Fatal("ValidateName of 4 KiB: got nil, want an error")
	}
	if len(err.Error()) > 400 {
		t.Errorf("error length: got %d, want at most 400", len(err.Error()))
	}
}

const sock = "/var/run"

// testModes are this build's modes, for their option tables.
var testModes = Modes(ModeDeps{})

// spec is a parsed volume as these tests compare it: the socket's owner
// and mode as the options give them (not remapped), its name and target.
type spec struct {
	Mode           string
	UID, GID       uint32
	Perm           os.FileMode
	Socket, Target string
	Policy         string
}

func parse(opts map[string]string, dir string) (spec, error) {
	v, err := ParseOptions(opts, dir, testModes)
	if err != nil {
		return spec{}, err
	}
	s := spec{Mode: v.Mode, Socket: v.Socket, Target: v.Target, Policy: v.Options["policy"]}
	if o, err := v.SocketOwner(); err == nil {
		s.UID, s.GID, s.Perm = uint32(o.UID), uint32(o.GID), o.Perm
	}
	return s, nil
}

// Without options, the mode is left to Create (auto), and no mode's
// options are filled in yet.
func TestParseOptionsDefaults(t *testing.T) {
	for _, opts := range []map[string]string{nil, {}, {"mode": "auto"}, {"socket": DefaultSocket}} {
		v, err := ParseOptions(opts, sock, testModes)
		if err != nil {
			t.Fatalf("ParseOptions(%v): got %v, want nil", opts, err)
		}
		if v.Mode != Auto || len(v.Options) != 0 || v.Chosen != "" || v.Socket != DefaultSocket || v.Target != "/var/run/docker.sock" {
			t.Errorf("ParseOptions(%v): got %+v, want mode auto, no options yet, the default socket and target", opts, v)
		}
	}
	s, err := parse(nil, "/srv/socks")
	if err != nil || s.Target != "/srv/socks/docker.sock" {
		t.Errorf("default target below /srv/socks: got %q, %v, want %q, nil", s.Target, err, "/srv/socks/docker.sock")
	}
}

func TestParseOptionsGood(t *testing.T) {
	tests := []struct {
		key, val string
		dir      string // host socket directory; sock when empty
		check    func(s spec) (got, want any)
	}{
		{"uid", "0", "", func(s spec) (any, any) { return s.UID, uint32(0) }},
		{"uid", "1000", "", func(s spec) (any, any) { return s.UID, uint32(1000) }},
		{"uid", "65535", "", func(s spec) (any, any) { return s.UID, uint32(65535) }},
		{"uid", "007", "", func(s spec) (any, any) { return s.UID, uint32(7) }},
		{"gid", "0", "", func(s spec) (any, any) { return s.GID, uint32(0) }},
		{"gid", "999", "", func(s spec) (any, any) { return s.GID, uint32(999) }},
		{"gid", "65535", "", func(s spec) (any, any) { return s.GID, uint32(65535) }},
		{"perm", "0600", "", func(s spec) (any, any) { return s.Perm, os.FileMode(0o600) }},
		{"perm", "0660", "", func(s spec) (any, any) { return s.Perm, os.FileMode(0o660) }},
		{"perm", "0777", "", func(s spec) (any, any) { return s.Perm, os.FileMode(0o777) }},
		{"perm", "666", "", func(s spec) (any, any) { return s.Perm, os.FileMode(0o666) }},
		{"perm", "0700", "", func(s spec) (any, any) { return s.Perm, os.FileMode(0o700) }},
		{"socket", "docker.sock", "", func(s spec) (any, any) { return s.Socket, "docker.sock" }},
		{"socket", "a", "", func(s spec) (any, any) { return s.Socket, "a" }},
		{"socket", "api_v2-x.sock", "", func(s spec) (any, any) { return s.Socket, "api_v2-x.sock" }},
		{"socket", strings.Repeat("s", 64), "", func(s spec) (any, any) { return s.Socket, strings.Repeat("s", 64) }},
		{"target", "/var/run/docker.sock", "", func(s spec) (any, any) { return s.Target, "/var/run/docker.sock" }},
		{"target", "/var/run/containerd/containerd.sock", "", func(s spec) (any, any) { return s.Target, "/var/run/containerd/containerd.sock" }},
		{"target", "/run/docker.sock", "", func(s spec) (any, any) { return s.Target, "/var/run/docker.sock" }},
		{"target", "/run/user/1000/docker.sock", "", func(s spec) (any, any) { return s.Target, "/var/run/user/1000/docker.sock" }},
		{"target", "/var/run/docker.sock", "/run", func(s spec) (any, any) { return s.Target, "/run/docker.sock" }},
		{"target", "/run/docker.sock", "/run", func(s spec) (any, any) { return s.Target, "/run/docker.sock" }},
		{"target", "/srv/socks/d.sock", "/srv/socks", func(s spec) (any, any) { return s.Target, "/srv/socks/d.sock" }},
		{"target", "/var/run/" + strings.Repeat("t", 247), "", func(s spec) (any, any) { return len(s.Target), 256 }},
		{"mode", "relay", "", func(s spec) (any, any) { return s.Mode, "relay" }},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s=%.40s", tt.key, tt.val), func(t *testing.T) {
			dir := tt.dir
			if dir == "" {
				dir = sock
			}
			s, err := parse(map[string]string{tt.key: tt.val}, dir)
			if err != nil {
				t.Fatalf("ParseOptions: got %v, want nil", err)
			}
			if got, want := tt.check(s); got != want {
				t.Errorf("%s: got %v, want %v", tt.key, got, want)
			}
		})
	}
}

// An owner option leaves auto no choice: only relay makes a socket of
// its own. A named mode is taken as it is.
func TestParseOptionsAutoWithOwner(t *testing.T) {
	for _, opts := range []map[string]string{{"uid": "1000"}, {"gid": "0"}, {"perm": "0600"}, {"mode": "auto", "perm": "0600", "socket": "a.sock"}} {
		v, err := ParseOptions(opts, sock, testModes)
		if err != nil {
			t.Fatalf("ParseOptions(%v): got %v, want nil", opts, err)
		}
		if v.Mode != "relay" || v.Chosen != chosenOwner || v.Options["perm"] == "" {
			t.Errorf("ParseOptions(%v): got mode %q (%q), options %v; want relay, %q, with its defaults", opts, v.Mode, v.Chosen, v.Options, chosenOwner)
		}
	}
	for _, mode := range []string{"relay", "idmap"} {
		v, err := ParseOptions(map[string]string{"mode": mode}, sock, testModes)
		if err != nil || v.Mode != mode || v.Chosen != "" {
			t.Errorf("mode=%s: got %+v, %v; want mode %s, not chosen by auto", mode, v, err, mode)
		}
	}
	_, err := ParseOptions(map[string]string{"mode": "auto", "policy": "full"}, sock, testModes)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "does not apply to mode=auto") || !strings.Contains(err.Error(), "mode=policy") {
		t.Errorf("mode=auto with policy: got %v, want it refused, naming mode=policy", err)
	}
	_, err = ParseOptions(map[string]string{"mode": "bogus"}, sock, testModes)
	if err == nil || !strings.Contains(err.Error(), "want one of auto, relay, idmap, policy") {
		t.Errorf("mode=bogus: got %v, want the list of mode values, auto first", err)
	}
}

func TestParseOptionsAllTogether(t *testing.T) {
	s, err := parse(map[string]string{
		"uid": "1", "gid": "2", "perm": "0600", "socket": "d.sock", "target": "/run/x.sock", "mode": "relay",
	}, sock)
	if err != nil {
		t.Fatalf("ParseOptions: got %v, want nil", err)
	}
	want := spec{Mode: "relay", UID: 1, GID: 2, Perm: 0o600, Socket: "d.sock", Target: "/var/run/x.sock"}
	if s != want {
		t.Errorf("ParseOptions: got %+v, want %+v", s, want)
	}
}

func TestParseOptionsBad(t *testing.T) {
	tests := []struct {
		name    string
		opts    map[string]string
		dir     string
		want    string // in the error
		mayEcho bool   // the value is a word of the fixed message
	}{
		{"uid too big", map[string]string{"uid": "65536"}, "", "option uid", false},
		{"uid negative", map[string]string{"uid": "-1"}, "", "option uid", false},
		{"uid hex", map[string]string{"uid": "0x10"}, "", "option uid", false},
		{"uid empty", map[string]string{"uid": ""}, "", "option uid", false},
		{"uid space", map[string]string{"uid": " 1"}, "", "option uid", false},
		{"uid name", map[string]string{"uid": "root"}, "", "option uid", false},
		{"uid huge", map[string]string{"uid": "99999999999999999999"}, "", "option uid", false},
		{"gid too big", map[string]string{"gid": "70000"}, "", "option gid", false},
		{"gid word", map[string]string{"gid": "docker"}, "", "option gid", false},
		{"perm 0400", map[string]string{"perm": "0400"}, "", "option perm", false},
		{"perm 0200", map[string]string{"perm": "0200"}, "", "option perm", false},
		{"perm 0066", map[string]string{"perm": "0066"}, "", "option perm", false},
		{"perm 01777", map[string]string{"perm": "01777"}, "", "option perm", false},
		{"perm 04660 setuid", map[string]string{"perm": "4660"}, "", "option perm", false},
		{"perm 00660 too long", map[string]string{"perm": "00660"}, "", "option perm", false},
		{"perm abc", map[string]string{"perm": "abc"}, "", "option perm", false},
		{"perm 8", map[string]string{"perm": "8"}, "", "option perm", false},
		{"perm 0o660", map[string]string{"perm": "0o660"}, "", "option perm", false},
		{"perm empty", map[string]string{"perm": ""}, "", "option perm", false},
		{"perm negative", map[string]string{"perm": "-660"}, "", "option perm", false},
		{"socket empty", map[string]string{"socket": ""}, "", "option socket", false},
		{"socket slash", map[string]string{"socket": "a/b"}, "", "option socket", false},
		{"socket dotdot", map[string]string{"socket": ".."}, "", "option socket", false},
		{"socket hidden", map[string]string{"socket": ".sock"}, "", "option socket", false},
		{"socket dash", map[string]string{"socket": "-sock"}, "", "option socket", false},
		{"socket 65 chars", map[string]string{"socket": strings.Repeat("s", 65)}, "", "option socket", false},
		{"socket NUL", map[string]string{"socket": "a\x00b"}, "", "option socket", false},
		{"socket unicode", map[string]string{"socket": "d\u00f6cker"}, "", "option socket", false},
		{"target relative", map[string]string{"target": "var/run/docker.sock"}, "", "option target", false},
		{"target outside", map[string]string{"target": "/etc/passwd"}, "", "option target", false},
		{"target the dir itself", map[string]string{"target": "/var/run"}, "", "option target", true},
		{"target the dir with slash", map[string]string{"target": "/var/run/"}, "", "option target", false},
		{"target /run itself", map[string]string{"target": "/run"}, "", "option target", true},
		{"target sibling prefix", map[string]string{"target": "/var/runner/x.sock"}, "", "option target", false},
		{"target dotdot", map[string]string{"target": "/var/run/../etc/shadow"}, "", "option target", false},
		{"target dotdot inside", map[string]string{"target": "/var/run/a/../docker.sock"}, "", "option target", false},
		{"target trailing dotdot", map[string]string{"target": "/var/run/.."}, "", "option target", false},
		{"target dot", map[string]string{"target": "/var/run/./docker.sock"}, "", "option target", false},
		{"target double slash", map[string]string{"target": "/var/run//docker.sock"}, "", "option target", false},
		{"target leading double slash", map[string]string{"target": "//var/run/docker.sock"}, "", "option target", false},
		{"target trailing slash", map[string]string{"target": "/var/run/docker.sock/"}, "", "option target", false},
		{"target NUL", map[string]string{"target": "/var/run/a\x00b"}, "", "option target", false},
		{"target empty", map[string]string{"target": ""}, "", "option target", false},
		{"target /run under another dir", map[string]string{"target": "/run/x.sock"}, "/srv/socks", "option target", false},
		{"target /var/run under another dir", map[string]string{"target": "/var/run/x.sock"}, "/srv/socks", "option target", false},
		{"target /var/run/x when dir is /var/run/sub", map[string]string{"target": "/var/run/x.sock"}, "/var/run/sub", "option target", false},
		{"mode unknown", map[string]string{"mode": "x"}, "", "option mode", false},
		{"mode upper", map[string]string{"mode": "RELAY"}, "", "option mode", false},
		{"mode empty", map[string]string{"mode": ""}, "", "option mode", false},
		{"policy unknown", map[string]string{"policy": "default"}, "", "option policy", false},
		{"policy empty", map[string]string{"policy": ""}, "", "option policy", false},
		{"policy file escapes", map[string]string{"policy": "file:../etc/shadow"}, "", "option policy", false},
		{"policy file empty", map[string]string{"policy": "file:"}, "", "option policy", true},
		{"unknown key", map[string]string{"owner": "0:0"}, "", `unknown option "owner"`, false},
		{"unknown key case", map[string]string{"UID": "0"}, "", `unknown option "UID"`, false},
		{"unknown key empty", map[string]string{"": "x"}, "", `unknown option ""`, false},
		{"4 KiB uid", map[string]string{"uid": strings.Repeat("1", 4096)}, "", "longer than 256 bytes", false},
		{"4 KiB target", map[string]string{"target": "/var/run/" + strings.Repeat("t", 4096)}, "", "longer than 256 bytes", false},
		{"257 byte target", map[string]string{"target": "/var/run/" + strings.Repeat("t", 248)}, "", "longer than 256 bytes", false},
		{"4 KiB policy", map[string]string{"policy": strings.Repeat("p", 4096)}, "", "option policy", false},
		{"good then bad", map[string]string{"uid": "12345", "perm": "0400"}, "", "option perm", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir
			if dir == "" {
				dir = sock
			}
			_, err := parse(tt.opts, dir)
			if err == nil {
				t.Fatalf("parse(%q): got nil, want an error", tt.opts)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseOptions: got %v, want an error wrapping ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("ParseOptions: got %q, want it to contain %q", msg, tt.want)
			}
			for k, v := range tt.opts {
				if v == "" || tt.mayEcho || strings.Contains(tt.want, "unknown option") && k != "" {
					continue
				}
				if strings.Contains(msg, v) {
					t.Errorf("ParseOptions: got %q, want it without the value %q of %s", msg, v, k)
				}
			}
		})
	}
}

// Errors never show option values, whatever they hold.
func TestParseOptionsNeverEchoesValues(t *testing.T) {
	const secret = "Zq7-SECRET-9xK"
	for _, k := range OptionKeys(testModes) {
		for _, v := range []string{secret, "/var/run/" + secret, secret + "/../x", "0" + secret, strings.Repeat(secret, 40)} {
			_, err := parse(map[string]string{k: v}, sock)
			if err == nil {
				continue // a good socket name or target: nothing to show
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("parse(%s=...): got %q, want it without the value", k, err)
			}
		}
	}
	// Nor does an unknown key's error show its value.
	_, err := parse(map[string]string{"password": secret}, sock)
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("unknown key: got %v, want an error without the value", err)
	}
}

func TestParseOptionsUnknownKeyListsValidKeys(t *testing.T) {
	_, err := parse(map[string]string{"bogus": "1"}, sock)
	if err == nil {
		t.Fatal("parse(bogus=1): got nil, want an error")
	}
	for _, k := range OptionKeys(testModes) {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error: got %q, want it to list %q", err, k)
		}
	}
	// A 4 KiB key is cut short in the message.
	_, err = parse(map[string]string{strings.Repeat("k", 4096): "1"}, sock)
	if err == nil || len(err.Error()) > 400 {
		t.Errorf("4 KiB key: got %d bytes of error, want an error of at most 400", len(fmt.Sprint(err)))
	}
}

func TestParseOptionsManyOptions(t *testing.T) {
	for _, n := range []int{8, 33, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			opts := map[string]string{}
			for i := range n {
				opts[fmt.Sprintf("k%d", i)] = fmt.Sprintf("SECRET%d", i)
			}
			_, err := parse(opts, sock)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseOptions of %d options: got %v, want an error wrapping ErrInvalid", n, err)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("ParseOptions: got %q, want no value in it", err)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error length: got %d, want at most 400", len(err.Error()))
			}
		})
	}
	// Too many options is reported as such, even when the keys are valid
	// looking.
	opts := map[string]string{}
	for i := range 33 {
		opts[fmt.Sprintf("uid%d", i)] = "0"
	}
	if _, err := parse(opts, sock); err == nil || !strings.Contains(err.Error(), "too many options") {
		t.Errorf("33 options: got %v, want %q", err, "too many options")
	}
}

// The same bad options always give the same first error.
func TestParseOptionsDeterministic(t *testing.T) {
	opts := map[string]string{"uid": "x", "gid": "y", "perm": "z", "socket": "/", "mode": "m", "target": "t"}
	_, first := parse(opts, sock)
	for range 50 {
		_, err := parse(opts, sock)
		if err == nil || err.Error() != first.Error() {
			t.Fatalf("ParseOptions: got %v, want %v", err, first)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "vol-1", "..", "a/b", "-x", ".x", "a\x00", strings.Repeat("n", 101), "\u00e9", "x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateName(%q): got %v, want an error wrapping ErrInvalid", name, err)
			}
			return
		}
		if !nameRE.MatchString(name) || len(name) > maxNameLen || len(name) == 0 {
			t.Errorf("ValidateName(%q): got nil, want an error", name)
		}
		// An accepted name is one plain path element.
		if filepath.Base(name) != name || name == "." || name == ".." || strings.ContainsAny(name, "/\x00\n") ||
			filepath.Clean(name) != name || strings.HasPrefix(name, "-") || strings.HasPrefix(name, ".") {
			t.Errorf("ValidateName(%q): got nil, want an error: not a plain file name", name)
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add("uid", "0", "gid", "0", "/var/run")
	f.Add("perm", "0600", "socket", "docker.sock", "/var/run")
	f.Add("target", "/run/docker.sock", "mode", "relay", "/var/run")
	f.Add("target", "/var/run/../etc/shadow", "mode", "x", "/run")
	f.Add("target", "/srv/s/a.sock", "policy", "p", "/srv/s")
	f.Add("perm", "01777", "bogus", "1", "/var/run")
	f.Add("target", "/var/run//x", "uid", "65536", "/var/run")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, dir string) {
		// The host socket directory is a clean absolute path (config
		// checks SOCKET_DIR); keep the fuzzer to those.
		if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" || strings.ContainsRune(dir, 0) {
			dir = sock
		}
		opts := map[string]string{k1: v1, k2: v2}
		s, err := parse(opts, dir)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parse(%q): got %v, want an error wrapping ErrInvalid", opts, err)
			}
		} else {
			checkSpec(t, opts, dir, s)
		}

		// Values marked as secret never show in an error. Every option
		// refuses these values, so each gives an error.
		for _, mark := range []func(string) string{
			func(v string) string { return "\x01SECRET\x01" + v },
			func(v string) string { return v + "\x00SECRET" },
		} {
			marked := map[string]string{k1: mark(v1), k2: mark(v2)}
			_, err := parse(marked, dir)
			if err == nil {
				t.Fatalf("parse(%q): got nil, want an error", marked)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parse(%q): got %v, want an error wrapping ErrInvalid", marked, err)
			}
			msg := err.Error()
			// Keys may be quoted back (unknown keys); values may not.
			if !strings.Contains(k1+k2, "SECRET") && strings.Contains(msg, "SECRET") {
				t.Fatalf("parse(%q): got %q, want no value in it", marked, msg)
			}
		}
	})
}

// checkSpec checks what an accepted spec must hold.
func checkSpec(t *testing.T, opts map[string]string, dir string, s spec) {
	t.Helper()
	if !slices.Contains(modeValues(testModes), s.Mode) {
		t.Errorf("parse(%q): mode got %q, want one of %v", opts, s.Mode, modeValues(testModes))
	}
	if m, ok := opts["mode"]; ok && m != s.Mode && !(m == Auto && s.Mode == relayName) {
		t.Errorf("parse(%q): mode got %q, want %q as asked", opts, s.Mode, m)
	}
	if s.UID > 65535 || s.GID > 65535 {
		t.Errorf("parse(%q): ids got %d:%d, want at most 65535", opts, s.UID, s.GID)
	}
	if s.Mode != "idmap" && s.Mode != Auto && (s.Perm&^0o777 != 0 || s.Perm&0o600 != 0o600) {
		t.Errorf("parse(%q): perm got %o, want owner rw and no special bits", opts, s.Perm)
	}
	if len(s.Socket) == 0 || len(s.Socket) > 64 || !nameRE.MatchString(s.Socket) || path.Base(s.Socket) != s.Socket {
		t.Errorf("parse(%q): socket got %q, want a plain file name", opts, s.Socket)
	}
	if !path.IsAbs(s.Target) || path.Clean(s.Target) != s.Target || strings.ContainsRune(s.Target, 0) {
		t.Errorf("parse(%q): target got %q, want a clean absolute path", opts, s.Target)
	}
	rel, ok := strings.CutPrefix(s.Target, dir+"/")
	if !ok || rel == "" || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Errorf("parse(%q): target got %q, want it strictly below %s", opts, s.Target, dir)
	}
	for k := range opts {
		known := false
		for _, ok := range OptionKeys(testModes) {
			known = known || k == ok
		}
		if !known {
			t.Errorf("parse(%q): got nil, want unknown option %q refused", opts, k)
		}
	}
}
