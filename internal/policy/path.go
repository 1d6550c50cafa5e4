package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrPath is the class of the errors NormalizePath returns.
var ErrPath = errors.New("path not canonical")

// PathError is NormalizePath's error: Reason says, for a user, what is
// wrong with the path (it never quotes the path).
type PathError struct{ Reason string }

func (e *PathError) Error() string { return ErrPath.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrPath) hold.
func (e *PathError) Unwrap() error { return ErrPath }

func pathErr(format string, args ...any) error {
	return &PathError{Reason: fmt.Sprintf(format, args...)}
}

// maxPath bounds the length of a request path. The longest real Docker paths
// (an image reference with a registry, a repository and a digest) stay far
// below it.
const maxPath = 4096

// NormalizePath splits a request-target into its path and raw query, checks
// that the path has exactly one reading and strips one API version prefix
// ("/v1.41"), as dockerd's router does.
//
// It refuses, rather than guesses at: an empty path, a path not starting
// with "/" (absolute-form or "*" targets), "." and ".." segments, empty
// segments ("//", a trailing "/"), backslashes, NUL and other control
// characters, raw characters that are not allowed in a path (space, '#',
// non-ASCII bytes), invalid percent-encoding, an encoded "/" (%2F),
// percent-encoded unreserved characters (letters, digits, "-._~": %61 is "a"
// in disguise), and encoded bytes that do not decode to UTF-8.
//
// The returned path is canonical: characters allowed in a path appear
// plainly, every other byte as %XX with upper-case hex. Prefixing it with a
// version ("/v1.41"+path) and normalising again gives the same path. The
// query is returned as sent; it must not hold control characters (net/url,
// and so dockerd, refuses them too).
func NormalizePath(target string) (path string, query string, err error) {
	p, query, _ := strings.Cut(target, "?")
	if p == "" {
		return "", query, pathErr("the request path is empty")
	}
	if p[0] != '/' {
		return "", query, pathErr("the request path does not start with /")
	}
	if len(p) > maxPath {
		return "", query, pathErr("the request path is longer than %d bytes", maxPath)
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c < 0x20 || c == 0x7f {
			return "", query, pathErr("the query string has a control character")
		}
	}
	canon, err := canonical(p)
	if err != nil {
		return "", query, err
	}
	if err := checkSegments(canon); err != nil {
		return "", query, err
	}
	return stripVersion(canon), query, nil
}

// canonical checks every byte and percent-escape of p and returns its
// canonical spelling. It allocates only when p has a percent-escape.
func canonical(p string) (string, error) {
	var b []byte // nil while p is its own canonical form
	high := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			switch {
			case c == '/' || rawOK(c):
			case c == '\\':
				return "", pathErr("the request path has a backslash")
			case c == 0:
				return "", pathErr("the request path has a NUL byte")
			case c < 0x20 || c == 0x7f:
				return "", pathErr("the request path has a control character")
			default:
				return "", pathErr("the request path has a character that must be percent-encoded")
			}
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", pathErr("the request path has an invalid percent-encoding")
		}
		d := unhex(p[i+1])<<4 | unhex(p[i+2])
		switch {
		case d == '/':
			return "", pathErr("the request path has an encoded slash (%%2F)")
		case d == 0:
			return "", pathErr("the request path has an encoded NUL (%%00)")
		case d == '\\':
			return "", pathErr("the request path has an encoded backslash (%%5C)")
		case d < 0x20 || d == 0x7f:
			return "", pathErr("the request path has an encoded control character")
		case unreserved(d):
			return "", pathErr("the request path percent-encodes a letter, digit or one of -._~; send it plainly")
		}
		if b == nil {
			b = make([]byte, 0, len(p))
			b = append(b, p[:i]...)
		}
		if rawOK(d) {
			b = append(b, d)
		} else {
			b = append(b, '%', upperHex[d>>4], upperHex[d&15])
		}
		if d >= 0x80 {
			high = true
		}
		i += 2
	}
	if b == nil {
		return p, nil
	}
	if high && !utf8.ValidString(decode(string(b))) {
		return "", pathErr("the request path has encoded bytes that are not UTF-8")
	}
	return string(b), nil
}

// checkSegments refuses empty, "." and ".." segments. The root path "/" is
// the only path allowed to end in "/".
func checkSegments(p string) error {
	if p == "/" {
		return nil
	}
	for rest := p[1:]; ; {
		seg, more, found := strings.Cut(rest, "/")
		switch seg {
		case "":
			if found {
				return pathErr("the request path has an empty segment (//)")
			}
			return pathErr("the request path ends with /")
		case ".", "..":
			return pathErr("the request path has a . or .. segment")
		}
		if !found {
			return nil
		}
		rest = more
	}
}

// stripVersion removes one leading "/v{version:[0-9.]+}" segment, the prefix
// dockerd's router accepts, when a path follows it.
func stripVersion(p string) string {
	seg, _, found := strings.Cut(p[1:], "/")
	if !found || !isVersion(seg) {
		return p
	}
	return p[1+len(seg):] // "/" + rest, without allocating
}

func isVersion(seg string) bool {
	if len(seg) < 2 || seg[0] != 'v' {
		return false
	}
	for i := 1; i < len(seg); i++ {
		if c := seg[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// decode percent-decodes a canonical path.
func decode(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			b = append(b, unhex(p[i+1])<<4|unhex(p[i+2]))
			i += 2
			continue
		}
		b = append(b, p[i])
	}
	return string(b)
}

// unreserved reports whether c is an RFC 3986 unreserved character.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// rawOK reports whether c may appear unencoded in a path segment (RFC 3986
// pchar without pct-encoded).
func rawOK(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}
