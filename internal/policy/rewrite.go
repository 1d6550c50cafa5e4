package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// A rewrite replaces, in a JSON body, the string value of every member
// named key (in any case, as encoding/json matches it) that equals from,
// with to: a reference the policy resolved, spelled as the full ID it
// checked, so that dockerd acts on that very object even if a name or an
// ID prefix would name another one by then.
type rewrite struct {
	key, from, to string
}

// resolved records a rewrite of the body.
func (c *checker) resolved(key, from, to string) {
	if from != to {
		c.rewrites = append(c.rewrites, rewrite{key, from, to})
	}
}

// rewriteJSON applies rws to body, changing nothing else of it: the
// values are found by encoding/json's own tokenizer and replaced in place.
func rewriteJSON(body []byte, rws []rewrite) ([]byte, error) {
	if len(rws) == 0 {
		return body, nil
	}
	type frame struct {
		object  bool
		wantKey bool
		key     string
	}
	var stack []frame
	var out bytes.Buffer
	dec := json.NewDecoder(bytes.NewReader(body))
	copied := 0 // body[:copied] is in out
	for {
		before := int(dec.InputOffset())
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		after := int(dec.InputOffset())
		var top *frame
		if n := len(stack); n > 0 {
			top = &stack[n-1]
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '}' || d == ']' {
				stack = stack[:len(stack)-1]
				continue
			}
			var key string
			if top != nil && top.object {
				top.wantKey = true // this object or array is the member's value
				key = top.key
			}
			// An array's strings are its member's values: VolumesFrom, Links.
			stack = append(stack, frame{object: d == '{', wantKey: d == '{', key: key})
			continue
		}
		if top != nil && top.object && top.wantKey {
			top.key, _ = tok.(string)
			top.wantKey = false
			continue
		}
		if top != nil && (top.object || top.key != "") {
			if top.object {
				top.wantKey = true
			}
			s, ok := tok.(string)
			if !ok {
				continue
			}
			for _, rw := range rws {
				if s != rw.from || !strings.EqualFold(top.key, rw.key) {
					continue
				}
				start := before + bytes.IndexByte(body[before:after], '"')
				out.Write(body[copied:start])
				lit, _ := json.Marshal(rw.to)
				out.Write(lit)
				copied = after
				break
			}
		}
	}
	out.Write(body[copied:])
	return out.Bytes(), nil
}
