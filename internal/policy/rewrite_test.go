package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// rewriteJSON changes exactly the values it is asked to: decoding the
// result gives the decoded original with those values replaced, for any
// body encoding/json reads; a body it does not read is an error.
func FuzzRewriteJSON(f *testing.F) {
	for _, s := range []string{
		`{"HostConfig":{"NetworkMode":"container:a","PidMode":"container:a"}}`,
		`{"networkmode":"container:a","x":["container:a",{"NetworkMode":"container:a"}]}`,
		`{"NetworkMode" : "container:\u0061" , "NetworkMode":"container:a"}`,
		`[{"NetworkMode":"container:a"}]`,
		`{"NetworkMode":{"NetworkMode":"container:a"}}`,
		`{"a":1,"NetworkMode":null}`,
		`{"NetworkMode":"container:a"`,
		`"container:a"`,
	} {
		f.Add([]byte(s))
	}
	rws := []rewrite{{"NetworkMode", "container:a", "container:" + strings.Repeat("f", 64)}, {"PidMode", "container:a", "container:b"}}
	f.Fuzz(func(t *testing.T, body []byte) {
		var orig any
		origErr := json.Unmarshal(body, &orig)
		out, err := rewriteJSON(body, rws)
		if err != nil {
			if origErr == nil {
				t.Fatalf("rewriteJSON refused %q, which encoding/json reads: %v", body, err)
			}
			return
		}
		if origErr != nil {
			return // several values: decodeJSON refuses such a body before any rewrite
		}
		var got any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("rewritten %q does not decode: %v (from %q)", out, err, body)
		}
		want := apply(orig, rws)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("rewriteJSON(%q) = %q:\ngot  %#v\nwant %#v", body, out, got, want)
		}
	})
}

// apply is rewriteJSON on a decoded value: a string member's value, or a
// string of an array that is a member's value, under a key of rws.
func apply(v any, rws []rewrite) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				for _, rw := range rws {
					if s == rw.from && strings.EqualFold(k, rw.key) {
						x[k] = rw.to
						break
					}
				}
				continue
			}
			if a, ok := e.([]any); ok {
				// An array's strings are its member's values (VolumesFrom,
				// Links): rewritten under the member's key, one level deep.
				for i, ae := range a {
					if s, ok := ae.(string); ok {
						for _, rw := range rws {
							if s == rw.from && strings.EqualFold(k, rw.key) {
								a[i] = rw.to
								break
							}
						}
					}
				}
			}
			x[k] = apply(e, rws)
		}
	case []any:
		for i, e := range x {
			x[i] = apply(e, rws)
		}
	}
	return v
}
