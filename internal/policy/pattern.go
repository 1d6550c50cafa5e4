package policy

import (
	"errors"
	"fmt"
	"strings"
)

// A pattern matches normalised paths, segment by segment:
//
//   - a literal segment matches itself (case-sensitive, as dockerd's router);
//   - "{name}" matches one or more whole segments, like dockerd's own
//     "{name:.*}" route variables (image and plugin names contain "/");
//   - a last segment "*" matches zero or more further segments.
//
// Because a placeholder may span segments, the literal segments after it
// anchor the match: "/containers/{id}/json" matches "/containers/abc/json"
// and "/containers/a/b/json" (which dockerd also routes to container
// inspect), never "/containers/abc/export".
type pattern struct {
	src  string
	toks []tok
}

type tokKind uint8

const (
	tokLit  tokKind = iota // one segment equal to lit
	tokOne                 // one segment, any
	tokStar                // zero or more segments
)

type tok struct {
	kind tokKind
	lit  string
}

const (
	maxPatternLen  = 256
	maxPatternSegs = 32
)

// compilePattern parses a pattern. Its errors are the reason alone.
func compilePattern(s string) (pattern, error) {
	p := pattern{src: s}
	switch {
	case s == "":
		return p, errors.New("path pattern is empty")
	case len(s) > maxPatternLen:
		return p, fmt.Errorf("path pattern is longer than %d bytes", maxPatternLen)
	case s[0] != '/':
		return p, errors.New(`path pattern must start with "/"`)
	case s == "/":
		return p, nil
	}
	segs := strings.Split(s[1:], "/")
	if len(segs) > maxPatternSegs {
		return p, fmt.Errorf("path pattern has more than %d segments", maxPatternSegs)
	}
	for i, seg := range segs {
		last := i == len(segs)-1
		switch {
		case seg == "":
			if last {
				return p, errors.New(`path pattern must not end with "/"`)
			}
			return p, errors.New(`path pattern has an empty segment ("//")`)
		case seg == "." || seg == "..":
			return p, errors.New(`path pattern has a "." or ".." segment`)
		case seg == "*":
			if !last {
				return p, errors.New(`"*" is allowed only as the whole last segment of a path pattern`)
			}
			p.toks = append(p.toks, tok{kind: tokStar})
		case seg[0] == '{':
			if !validVar(seg) {
				return p, fmt.Errorf("path pattern segment %s: a placeholder is {name}: letters, digits and _ inside braces, as the whole segment", quoteShort(seg))
			}
			p.toks = append(p.toks, tok{kind: tokOne}, tok{kind: tokStar})
		default:
			if i == 0 && isVersion(seg) {
				return p, errors.New("path pattern starts with an API version; patterns match the path without its /vX.Y prefix")
			}
			for j := 0; j < len(seg); j++ {
				c := seg[j]
				if c == '*' {
					return p, errors.New(`"*" is allowed only as the whole last segment of a path pattern`)
				}
				if !rawOK(c) && c != '%' {
					return p, fmt.Errorf("path pattern segment %s has a character that is not allowed in a path", quoteShort(seg))
				}
			}
			canon, err := canonical("/" + seg)
			if err != nil || canon != "/"+seg {
				return p, fmt.Errorf("path pattern segment %s is not in canonical form (plain characters, upper-case %%XX only where needed)", quoteShort(seg))
			}
			p.toks = append(p.toks, tok{kind: tokLit, lit: seg})
		}
	}
	return p, nil
}

func validVar(seg string) bool {
	if len(seg) < 3 || seg[0] != '{' || seg[len(seg)-1] != '}' {
		return false
	}
	for _, c := range seg[1 : len(seg)-1] {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// mustPattern compiles a built-in pattern.
func mustPattern(s string) pattern {
	p, err := compilePattern(s)
	if err != nil {
		panic("policy: built-in pattern " + s + ": " + err.Error())
	}
	return p
}

// match reports whether the normalised path p matches. It runs the classic
// greedy wildcard algorithm over segments: O(len(segments)·len(tokens)) in
// the worst case, no allocation.
func (pt pattern) match(p string) bool {
	if pt.src == "/" {
		return p == "/"
	}
	rest := "" // the segments still to match; the root "/" has none
	if len(p) > 1 {
		rest = p[1:]
	}
	toks := pt.toks
	ti := 0
	starTi, starRest := -1, ""
	for rest != "" {
		seg, next := nextSeg(rest)
		if ti < len(toks) {
			t := toks[ti]
			if t.kind == tokStar {
				starTi, starRest = ti, rest
				ti++
				continue
			}
			if t.kind == tokOne || seg == t.lit {
				ti++
				rest = next
				continue
			}
		}
		if starTi < 0 {
			return false
		}
		// Let the last star swallow one more segment and retry after it.
		_, starRest = nextSeg(starRest)
		ti, rest = starTi+1, starRest
	}
	for ti < len(toks) && toks[ti].kind == tokStar {
		ti++
	}
	return ti == len(toks)
}

// nextSeg splits the first segment off rest (a path without its leading
// "/"). It returns "" as next at the end.
func nextSeg(rest string) (seg, next string) {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], rest[i+1:]
	}
	return rest, ""
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}
