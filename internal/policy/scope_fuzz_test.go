package policy

import (
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

// scopeWorld drives random sequences of create, rename, rm and inspect
// through scoped policies of scopes A and B, and the host's unscoped
// requests, against scopeDaemon, which resolves references as dockerd
// does. Creates go through the policy and the fake keeps the label of
// the body the policy forwards, so stamping is under test too.
type scopeWorld struct {
	t      testing.TB
	d      *scopeDaemon
	next   func(n int) int // a choice in [0, n)
	policy map[string]*Policy
	serial int
}

var worldScopes = []string{"A", "B", ""} // "" is the host

// worldNames are the names objects take: plain words, and hex strings
// that are also ID prefixes (dockerd resolves a name before a prefix).
var worldNames = []string{"web", "db", "x", "a", "ab", "b0", "c", "0"}

func newWorld(t testing.TB, next func(int) int) *scopeWorld {
	return &scopeWorld{t: t, d: &scopeDaemon{}, next: next, policy: map[string]*Policy{
		"A": full.WithScope("A"), "B": noEscalation.WithScope("B"),
	}}
}

// newID is a fresh full ID; its first digits come from a small alphabet,
// so that prefixes are shared and become ambiguous.
func (w *scopeWorld) newID() string {
	w.serial++
	var b strings.Builder
	for range 3 {
		b.WriteByte("ab0c"[w.next(4)])
	}
	b.WriteString(hex.EncodeToString([]byte{byte(w.serial >> 8), byte(w.serial)}))
	return b.String() + strings.Repeat("f", 64-b.Len())
}

func (w *scopeWorld) nameFree(name string) bool {
	for _, o := range w.d.objs {
		if o.kind == KindContainer && o.name == name {
			return false
		}
	}
	return true
}

func (w *scopeWorld) containers() []*fobj {
	var out []*fobj
	for _, o := range w.d.objs {
		if o.kind == KindContainer {
			out = append(out, o)
		}
	}
	return out
}

// create makes a container as scope s asks it: a scoped create goes
// through the policy, and the fake takes the label the policy forwards.
func (w *scopeWorld) create(s string) {
	name := worldNames[w.next(len(worldNames))]
	if !w.nameFree(name) {
		return
	}
	label := ""
	if s != "" {
		// The client forges the other scope's label; it must not stick.
		body := `{"Image":"alpine","Labels":{"sockrelay.scope":"B"}}`
		d := w.policy[s].Decide(Request{Method: "POST", Target: "/containers/create?name=" + name, Header: http.Header{},
			Body: []byte(body), Daemon: w.d})
		if !d.Allow {
			w.t.Fatalf("scope %s: create %s refused: %s", s, name, d.Reason)
		}
		var got struct{ Labels map[string]string }
		if err := json.Unmarshal(d.Body, &got); err != nil {
			w.t.Fatalf("scope %s: create forwarded %s: %v", s, d.Body, err)
		}
		label = got.Labels[ScopeLabel]
		if label != s {
			w.t.Fatalf("scope %s: create forwarded the label %q", s, label)
		}
	}
	w.d.objs = append(w.d.objs, &fobj{kind: KindContainer, id: w.newID(), name: name, scope: label})
}

// mutate renames or removes a container, or creates one, of any scope.
func (w *scopeWorld) mutate() {
	cs := w.containers()
	switch op := w.next(3); {
	case op == 0 || len(cs) == 0:
		w.create(worldScopes[w.next(len(worldScopes))])
	case op == 1:
		o := cs[w.next(len(cs))]
		if name := worldNames[w.next(len(worldNames))]; w.nameFree(name) {
			o.name = name
		}
	default:
		o := cs[w.next(len(cs))]
		for i, x := range w.d.objs {
			if x == o {
				w.d.objs = append(w.d.objs[:i], w.d.objs[i+1:]...)
				break
			}
		}
	}
}

// ref is a reference as a client might spell one: a name, a full ID or
// a prefix of one, of any scope's container, or a made-up one.
func (w *scopeWorld) ref() string {
	cs := w.containers()
	if len(cs) == 0 || w.next(8) == 0 {
		return worldNames[w.next(len(worldNames))]
	}
	o := cs[w.next(len(cs))]
	switch w.next(3) {
	case 0:
		return o.name
	case 1:
		return o.id
	}
	return o.id[:1+w.next(12)]
}

// reach decides one request of scope s naming ref, lets the world
// change, then checks what the forwarded request reaches, resolved as
// dockerd resolves it then: nothing, or an object of s.
func (w *scopeWorld) reach(s string) {
	ref := w.ref()
	type req struct {
		method, target, body string
		forwarded            func(Decision) string // the reference dockerd acts on
	}
	fromPath := func(d Decision, target string) string {
		t := d.Target
		if t == "" {
			t = target
		}
		p, _, _ := strings.Cut(t, "?")
		p = strings.TrimPrefix(p, "/containers/")
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return p
		}
		return p[:i]
	}
	fromBody := func(key string) func(Decision) string {
		return func(d Decision) string {
			var v map[string]any
			json.Unmarshal(d.Body, &v)
			switch x := v[key].(type) {
			case string:
				return strings.TrimPrefix(x, "container:")
			case map[string]any:
				vf, _ := x["VolumesFrom"].([]any)
				if len(vf) > 0 {
					s, _ := vf[0].(string)
					id, _, _ := strings.Cut(s, ":")
					return id
				}
				nm, _ := x["NetworkMode"].(string)
				return strings.TrimPrefix(nm, "container:")
			}
			return ""
		}
	}
	esc := url.PathEscape(ref)
	reqs := []req{
		{"GET", "/containers/" + esc + "/json", "", nil},
		{"POST", "/containers/" + esc + "/kill", "", nil},
		{"DELETE", "/containers/" + esc + "?force=1", "", nil},
		{"POST", "/containers/" + esc + "/exec", `{"Cmd":["sh"]}`, nil},
		{"POST", "/containers/" + esc + "/rename?name=y", "", nil},
		{"POST", "/containers/create", `{"Image":"x","HostConfig":{"VolumesFrom":[` + quoteJSON(ref+":ro") + `]}}`, fromBody("HostConfig")},
		{"POST", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":` + quoteJSON("container:"+ref) + `}}`, fromBody("HostConfig")},
	}
	r := reqs[w.next(len(reqs))]
	pol := w.policy[s]
	var body []byte
	if pol.BodyNeeded(r.method, r.target) {
		body = []byte(r.body)
	}
	d := pol.Decide(Request{Method: r.method, Target: r.target, Header: http.Header{}, Body: body, Daemon: w.d})
	before, errBefore := w.d.find(KindContainer, ref)
	if !d.Allow {
		// Refused: then dockerd would not have reached one of s's
		// objects by this reference either, or the policy refused it.
		if d.Rule == RuleOutOfScope && errBefore == nil && before.scope == s {
			w.t.Fatalf("scope %s: %s %s refused as out of scope, but %s is %s's %s", s, r.method, r.target, ref, s, before.id)
		}
		return
	}
	// Between the check and the forward, anything may happen.
	for range w.next(3) {
		w.mutate()
	}
	var fwd string
	if r.forwarded != nil {
		fwd = r.forwarded(d)
	} else {
		fwd = fromPath(d, r.target)
	}
	fwd, _ = url.PathUnescape(fwd)
	if len(fwd) != 64 {
		w.t.Fatalf("scope %s: %s %s forwarded %q, want a full ID (target %q, body %s)", s, r.method, r.target, fwd, d.Target, d.Body)
	}
	if o, err := w.d.find(KindContainer, fwd); err == nil && o.scope != s {
		w.t.Fatalf("scope %s: %s %s reached %s's container %s (%s)", s, r.method, r.target, o.scope, o.id, o.name)
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (w *scopeWorld) step() {
	switch w.next(3) {
	case 0:
		w.mutate()
	default:
		w.reach([]string{"A", "B"}[w.next(2)])
	}
}

// No reference, by name, full ID or prefix, with the world changing
// between the check and the forward, reaches another scope's container.
func TestScopeProperty(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 15))
		w := newWorld(t, func(n int) int { return rng.IntN(n) })
		for range 200 {
			w.step()
		}
	}
}

func FuzzScope(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 1, 1, 1, 0, 2, 2, 2, 1, 0, 1})
	f.Add([]byte("create rename rm inspect across two scopes"))
	f.Fuzz(func(t *testing.T, data []byte) {
		i := 0
		next := func(n int) int {
			if i >= len(data) {
				return 0
			}
			i++
			return int(data[i-1]) % n
		}
		w := newWorld(t, next)
		for steps := 0; i < len(data) && steps < 200; steps++ {
			w.step()
		}
	})
}

// The filters a scoped list forwards are read by net/http as dockerd
// reads them (ParseForm, then Form.Get): they hold the scope's label
// and every filter of the client's, and the other parameters are as the
// client sent them. A query net/http cannot read is refused.
func FuzzScopedFilters(f *testing.F) {
	for _, q := range []string{"", "all=1", `filters={"label":["a=b"]}`, `filters={"label":{"a=b":true}}&all=1`,
		`filters=%7B%22name%22%3A%5B%22x%22%5D%7D`, "filters=a&filters=b", "a;b", "filters=null", `filters={"label":null}`,
		"%zz", "filters=", `filters={"label":["sockrelay.scope=B"]}`, `filters={"label":{"a=b":false}}`, `filters={"label":null,"x":{}}`} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		if strings.ContainsAny(query, "\x00\r\n #") {
			return
		}
		orig, err := http.NewRequest("GET", "http://docker/containers/json?"+query, nil)
		if err != nil {
			return
		}
		origErr := orig.ParseForm()
		out, v := scopedFilters(query, "A")
		if v != nil {
			return // refused: nothing forwarded
		}
		if origErr != nil {
			t.Fatalf("%q: net/http cannot read it (%v), and it was forwarded as %q", query, origErr, out)
		}
		fwd, err := http.NewRequest("GET", "http://docker/containers/json?"+out, nil)
		if err != nil {
			t.Fatalf("forwarded %q: %v", out, err)
		}
		if err := fwd.ParseForm(); err != nil {
			t.Fatalf("forwarded %q: net/http cannot read it: %v", out, err)
		}
		if len(fwd.Form["filters"]) != 1 {
			t.Fatalf("forwarded %q: %d filters parameters", out, len(fwd.Form["filters"]))
		}
		got, err := parseFilters(fwd.Form.Get("filters"))
		if err != nil || !got["label"][ScopeLabel+"=A"] {
			t.Fatalf("forwarded %q: filters %v, %v, want the scope's label", out, got, err)
		}
		if of := orig.Form.Get("filters"); of != "" {
			want, err := parseFilters(of)
			if err != nil {
				t.Fatalf("%q: forwarded filters dockerd could not read", query)
			}
			for k, vs := range want {
				for val := range vs {
					if _, ok := got[k][val]; !ok {
						t.Fatalf("%q: the client's filter %s=%s was lost: %v", query, k, val, got)
					}
				}
			}
			for k, vs := range got {
				for val := range vs {
					if _, ok := want[k][val]; !ok && !(k == "label" && val == ScopeLabel+"=A") {
						t.Fatalf("%q: a filter %s=%s was added: %v", query, k, val, got)
					}
				}
			}
		}
		for k, vs := range orig.Form {
			if k != "filters" && strings.Join(vs, "\x00") != strings.Join(fwd.Form[k], "\x00") {
				t.Fatalf("%q: parameter %q changed: %q, want %q", query, k, fwd.Form[k], vs)
			}
		}
	})
}

// A stamped body, read as dockerd reads it (encoding/json into its
// types), is the client's body with the scope's label, and nothing else
// changed; a body that cannot be stamped is refused.
func FuzzScopeStamp(f *testing.F) {
	for _, b := range []string{`{"Image":"x"}`, `{}`, ` { "Labels" : {"a":"b"} } `, `{"labels":{"sockrelay.scope":"B"},"Labels":null}`,
		`{"Image":"x","HostConfig":{"Privileged":false},"Labels":{"sockrelay.scope":"B"}}`, `null`, `[]`, `{"Image":"x"`, `{"a":1}{}`,
		`{"Labels":{"\u0073ockrelay.scope":"B"}}`, `{"Labels":{"sockrelay.scope":"B","sockrelay.scope":"C"}}`} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		out, v := stamp([]byte(body), "A", false)
		var before container.CreateRequest
		beforeErr := json.Unmarshal([]byte(body), &before)
		if v != nil {
			return
		}
		if beforeErr != nil {
			t.Fatalf("%q: encoding/json refuses it (%v), and it was stamped as %s", body, beforeErr, out)
		}
		var after container.CreateRequest
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("%q: stamped as %s, which encoding/json refuses: %v", body, out, err)
		}
		if after.Config == nil || after.Labels[ScopeLabel] != "A" {
			t.Fatalf("%q: stamped as %s, labels %v", body, out, after.Config)
		}
		if before.Config == nil {
			before.Config = &container.Config{}
		}
		if before.Labels == nil {
			before.Labels = map[string]string{}
		}
		before.Labels[ScopeLabel] = "A"
		bj, _ := json.Marshal(before)
		aj, _ := json.Marshal(after)
		if string(bj) != string(aj) {
			t.Fatalf("%q: stamped as %s, which reads as\n%s\nwant\n%s", body, out, aj, bj)
		}
	})
}
