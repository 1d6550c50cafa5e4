package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/volume"
)

// fobj is an object of the fake daemon.
type fobj struct {
	kind   Kind
	id     string // a volume's is its name
	name   string
	scope  string
	parent string // an exec's container
}

// scopeDaemon resolves references as dockerd does: a full ID first, then
// a name (a container's with or without its leading "/"), then a unique
// ID prefix; volumes by name and exec instances by ID only.
type scopeDaemon struct {
	objs  []*fobj
	asked int
}

func (d *scopeDaemon) find(k Kind, ref string) (*fobj, error) {
	if k == KindImage && !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") && len(ref) != 64 {
		ref += ":latest" // as a reference's tag defaults
	}
	var byName *fobj
	var prefixed []*fobj
	for _, o := range d.objs {
		if o.kind != k {
			continue
		}
		if o.id == ref {
			return o, nil
		}
		if o.name != "" && (o.name == ref || k == KindContainer && "/"+o.name == ref) {
			byName = o
		}
		if k != KindVolume && k != KindExec && ref != "" && strings.HasPrefix(o.id, ref) {
			prefixed = append(prefixed, o)
		}
	}
	switch {
	case byName != nil:
		return byName, nil
	case len(prefixed) == 1:
		return prefixed[0], nil
	case len(prefixed) > 1:
		return nil, fmt.Errorf("multiple IDs found with provided prefix: %w", ErrAmbiguous)
	}
	return nil, fmt.Errorf("no such %s: %w", k, ErrNoSuchObject)
}

func (d *scopeDaemon) Resolve(k Kind, ref string) (Object, error) {
	d.asked++
	o, err := d.find(k, ref)
	if err != nil {
		return Object{}, err
	}
	return Object{ID: o.id, Scope: o.scope, Parent: o.parent}, nil
}

func (d *scopeDaemon) List(k Kind, scope string) ([]Object, error) {
	d.asked++
	var out []Object
	for _, o := range d.objs {
		if o.kind == k && o.scope == scope {
			out = append(out, Object{ID: o.id, Scope: o.scope, Names: []string{o.name}})
		}
	}
	return out, nil
}

func (d *scopeDaemon) Container(ref string) (*container.InspectResponse, error) {
	o, err := d.find(KindContainer, ref)
	if err != nil {
		return nil, err
	}
	return &container.InspectResponse{ID: o.id, HostConfig: &container.HostConfig{}}, nil
}

func (d *scopeDaemon) Volume(name string) (*volume.Volume, error) {
	o, err := d.find(KindVolume, name)
	if err != nil {
		return nil, err
	}
	return &volume.Volume{Name: o.id, Driver: "local"}, nil
}

func (d *scopeDaemon) Exec(id string) (*container.ExecInspectResponse, error) {
	o, err := d.find(KindExec, id)
	if err != nil {
		return nil, err
	}
	return &container.ExecInspectResponse{ID: o.id, ContainerID: o.parent}, nil
}

func (d *scopeDaemon) HostNetworks() ([]Network, error) {
	return []Network{{ID: hexID("f0"), Name: "host"}}, nil
}

// hexID is a 64-digit ID starting with p.
func hexID(p string) string { return p + strings.Repeat("0", 64-len(p)) }

func twoScopes() *scopeDaemon {
	return &scopeDaemon{objs: []*fobj{
		{kind: KindContainer, id: hexID("a1"), name: "web", scope: "A"},
		{kind: KindContainer, id: hexID("b1"), name: "db", scope: "B"},
		{kind: KindContainer, id: hexID("c1"), name: "hostc"},
		{kind: KindExec, id: hexID("e1"), parent: hexID("a1")},
		{kind: KindExec, id: hexID("e2"), parent: hexID("b1")},
		{kind: KindNetwork, id: hexID("9a"), name: "anet", scope: "A"},
		{kind: KindNetwork, id: hexID("9b"), name: "bnet", scope: "B"},
		{kind: KindVolume, id: "avol", scope: "A"},
		{kind: KindVolume, id: "bvol", scope: "B"},
		{kind: KindVolume, id: "hostvol"},
		{kind: KindImage, id: hexID("1a"), name: "abuilt:latest", scope: "A"},
		{kind: KindImage, id: hexID("1b"), name: "alpine:latest"},
		{kind: KindImage, id: hexID("1c"), name: "bbuilt:latest", scope: "B"},
		{kind: KindSecret, id: hexID("5a"), name: "asecret", scope: "A"},
		{kind: KindSecret, id: hexID("5b"), name: "bsecret", scope: "B"},
	}}
}

func scopedDecide(t *testing.T, p *Policy, d Daemon, method, target, body string) Decision {
	t.Helper()
	var b []byte
	if p.BodyNeeded(method, target) {
		b = []byte(body)
	}
	return p.Decide(Request{Method: method, Target: target, Header: http.Header{}, Body: b, Daemon: d})
}

// Every endpoint that names an object, by name, full ID and unique
// prefix: A's are forwarded by full ID, B's and the host's get dockerd's
// own 404.
func TestScopePathReferences(t *testing.T) {
	for _, preset := range PresetNames() {
		if preset == presetReadOnly {
			continue
		}
		base, _ := Preset(preset)
		p := base.WithScope("A")
		type c struct {
			method, path string // {} is the reference
			kind         Kind
			mine, theirs []string // references; theirs: B's and the host's
			id           string   // the full ID forwarded for mine
		}
		ctr := []string{"web", hexID("a1"), "a1"}
		ctrOther := []string{"db", hexID("b1"), "b1", "hostc", hexID("c1"), "c", "nothing"}
		cases := []c{
			{"GET", "/v1.41/containers/{}/json", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/containers/{}/logs?stdout=1", KindContainer, ctr, ctrOther, hexID("a1")},
			{"POST", "/containers/{}/kill", KindContainer, ctr, ctrOther, hexID("a1")},
			{"DELETE", "/v1.41/containers/{}?force=1", KindContainer, ctr, ctrOther, hexID("a1")},
			{"POST", "/containers/{}/rename?name=x", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/containers/{}/archive?path=/etc", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/containers/{}/export", KindContainer, ctr, ctrOther, hexID("a1")},
			{"POST", "/containers/{}/wait", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/containers/{}/stats", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/containers/{}/top", KindContainer, ctr, ctrOther, hexID("a1")},
			{"GET", "/exec/{}/json", KindExec, []string{hexID("e1")}, []string{hexID("e2"), "e1", "nothing"}, hexID("e1")},
			// "9" is a prefix of A's and B's networks: among A's, it is unique.
			{"GET", "/networks/{}", KindNetwork, []string{"anet", hexID("9a"), "9a", "9"}, []string{"bnet", hexID("9b"), "9b", "bridge"}, hexID("9a")},
			{"DELETE", "/networks/{}", KindNetwork, []string{"anet", "9a"}, []string{"bnet", "9b"}, hexID("9a")},
			{"GET", "/volumes/{}", KindVolume, []string{"avol"}, []string{"bvol", "hostvol", "nothing"}, "avol"},
			{"DELETE", "/volumes/{}", KindVolume, []string{"avol"}, []string{"bvol", "hostvol"}, "avol"},
			{"GET", "/secrets/{}", KindSecret, []string{"asecret", "5a"}, []string{"bsecret", "5b"}, hexID("5a")},
		}
		for _, tc := range cases {
			for _, ref := range tc.mine {
				target := strings.Replace(tc.path, "{}", ref, 1)
				d := scopedDecide(t, p, twoScopes(), tc.method, target, "")
				if !d.Allow {
					t.Errorf("%s %s %s: got refused (%s: %s), want allowed", preset, tc.method, target, d.Rule, d.Reason)
					continue
				}
				want := strings.Replace(tc.path, "{}", tc.id, 1)
				if d.Target != want && !(ref == tc.id && d.Target == "") {
					t.Errorf("%s %s %s: got target %q, want %q", preset, tc.method, target, d.Target, want)
				}
			}
			for _, ref := range tc.theirs {
				target := strings.Replace(tc.path, "{}", ref, 1)
				d := scopedDecide(t, p, twoScopes(), tc.method, target, "")
				if d.Allow || d.Status != http.StatusNotFound || d.Message != notFoundMessage(tc.kind, ref) {
					t.Errorf("%s %s %s: got allow=%v %d %q, want 404 %q", preset, tc.method, target, d.Allow, d.Status, d.Message, notFoundMessage(tc.kind, ref))
				}
			}
		}
	}
}

// A reference resolves among the scope's own objects when dockerd's
// answer is another scope's object or an ambiguous prefix: that answer
// must not show through, by hiding one of the scope's own.
func TestScopeView(t *testing.T) {
	d := twoScopes()
	d.objs = append(d.objs,
		&fobj{kind: KindContainer, id: hexID("d7"), name: "a2", scope: "B"}, // B's name is a prefix of A's ID
		&fobj{kind: KindContainer, id: hexID("a2"), name: "w2", scope: "A"},
		&fobj{kind: KindContainer, id: hexID("a3"), name: "w3", scope: "A"})
	p := full.WithScope("A")
	for ref, want := range map[string]string{"a2": hexID("a2"), "a1": hexID("a1"), "w3": hexID("a3")} {
		dec := scopedDecide(t, p, d, "GET", "/containers/"+ref+"/json", "")
		if !dec.Allow || dec.Target != "/containers/"+want+"/json" {
			t.Errorf("A's %s: got %+v, want forwarded as %s", ref, dec, want)
		}
	}
	// "a" is a prefix of three of A's containers: none is meant.
	for _, ref := range []string{"a", "d7", "db"} {
		if dec := scopedDecide(t, p, d, "GET", "/containers/"+ref+"/json", ""); dec.Allow || dec.Message != "No such container: "+ref {
			t.Errorf("A's %s: got %+v, want a 404", ref, dec)
		}
	}
	// B sees its a2, by name, as dockerd does.
	if dec := scopedDecide(t, full.WithScope("B"), d, "GET", "/containers/a2/json", ""); !dec.Allow || dec.Target != "/containers/"+hexID("d7")+"/json" {
		t.Errorf("B's a2: got %+v", dec)
	}
}

// The 404 is dockerd's, word for word.
func TestScopeNotFoundMessages(t *testing.T) {
	cases := []struct {
		k    Kind
		want string
	}{
		{KindContainer, "No such container: x"},
		{KindExec, "No such exec instance: x"},
		{KindNetwork, "network x not found"},
		{KindVolume, "get x: no such volume"},
		{KindService, "service x not found"},
		{KindSecret, "secret x not found"},
		{KindConfig, "config x not found"},
		{KindTask, "task x not found"},
	}
	for _, tc := range cases {
		if got := notFoundMessage(tc.k, "x"); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.k, got, tc.want)
		}
	}
}

// filtersOf decodes the filters a decision forwards.
func filtersOf(t *testing.T, target string) map[string]map[string]bool {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	vs := u.Query()["filters"]
	if len(vs) != 1 {
		t.Fatalf("%s: got %d filters parameters, want 1", target, len(vs))
	}
	f, err := parseFilters(vs[0])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestScopeLists(t *testing.T) {
	p := full.WithScope("A")
	label := ScopeLabel + "=A"
	for _, path := range []string{"/containers/json", "/v1.41/networks", "/volumes", "/services", "/secrets", "/configs", "/events"} {
		for _, q := range []string{"", "?all=1", `?filters={"label":["x=y"]}`, `?filters={"label":{"x=y":true}}`,
			`?filters={"name":["web"]}`, `?filters=`, `?filters={"label":["sockrelay.scope=B"]}`} {
			target := path + q
			if q != "" {
				target = path + "?" + mustEscapeQuery(q[1:])
			}
			d := scopedDecide(t, p, twoScopes(), "GET", target, "")
			if !d.Allow {
				t.Errorf("GET %s: got refused (%s), want allowed", target, d.Reason)
				continue
			}
			f := filtersOf(t, d.Target)
			if !f["label"][label] {
				t.Errorf("GET %s: forwarded %s, want the label %s among the filters", target, d.Target, label)
			}
			// The client's own filters are kept: they only narrow.
			if orig, err := url.ParseQuery(strings.TrimPrefix(q, "?")); err == nil && orig.Get("filters") != "" {
				of, _ := parseFilters(orig.Get("filters"))
				for k, vs := range of {
					for v := range vs {
						if !f[k][v] {
							t.Errorf("GET %s: the client's filter %s=%s was dropped", target, k, v)
						}
					}
				}
			}
		}
	}
	for _, bad := range []string{"/containers/json?filters=%7B&x=1", "/containers/json?filters={}&filters={}",
		"/containers/json?filters=[1]", "/containers/json?a=%zz", "/containers/json?a;b"} {
		d := scopedDecide(t, p, twoScopes(), "GET", bad, "")
		if d.Allow || d.Status != StatusBadRequest {
			t.Errorf("GET %s: got allow=%v %d, want 400", bad, d.Allow, d.Status)
		}
	}
	for _, path := range []string{"/containers/prune", "/volumes/prune", "/networks/prune", "/images/prune"} {
		d := scopedDecide(t, p, twoScopes(), "POST", path, "")
		if !d.Allow || !filtersOf(t, d.Target)["label"][label] {
			t.Errorf("POST %s: got %+v, want allowed with the scope's label filter", path, d)
		}
	}
}

func mustEscapeQuery(q string) string {
	vs, err := url.ParseQuery(q)
	if err != nil {
		return q
	}
	return vs.Encode()
}

// labelsOf decodes the labels a forwarded create carries, as dockerd
// would.
func labelsOf(t *testing.T, body []byte) map[string]string {
	t.Helper()
	var v struct{ Labels map[string]string }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("forwarded body %s: %v", body, err)
	}
	return v.Labels
}

func TestScopeStamps(t *testing.T) {
	p := noEscalation.WithScope("A")
	cases := []struct{ path, body string }{
		{"/containers/create", `{"Image":"alpine"}`},
		{"/containers/create", `{"Image":"alpine","Labels":{"sockrelay.scope":"B","x":"y"}}`},
		{"/containers/create", `{"Image":"alpine","labels":{"sockrelay.scope":"B"},"LABELS":{"sockrelay.scope":"B"}}`},
		{"/networks/create", `{"Name":"n"}`},
		{"/networks/create", `{"Name":"n","Labels":{"sockrelay.scope":"B"}}`},
		{"/volumes/create", `{"Name":"v2"}`},
		{"/volumes/create", ` { } `},
		{"/secrets/create", `{"Name":"s","Data":"eA=="}`},
		{"/configs/create", `{"Name":"c","Data":"eA==","Labels":null}`},
	}
	for _, tc := range cases {
		d := scopedDecide(t, p, twoScopes(), "POST", tc.path, tc.body)
		if !d.Allow {
			t.Errorf("POST %s %s: got refused (%s: %s)", tc.path, tc.body, d.Rule, d.Reason)
			continue
		}
		if got := labelsOf(t, d.Body)[ScopeLabel]; got != "A" {
			t.Errorf("POST %s %s: forwarded %s, label %q, want A", tc.path, tc.body, d.Body, got)
		}
		if strings.Contains(tc.body, `"x":"y"`) && labelsOf(t, d.Body)["x"] != "y" {
			t.Errorf("POST %s %s: the client's own label was lost: %s", tc.path, tc.body, d.Body)
		}
	}
	// A service and its containers.
	d := scopedDecide(t, full.WithScope("A"), twoScopes(), "POST", "/services/create",
		`{"Name":"s","Labels":{"sockrelay.scope":"B"},"TaskTemplate":{"ContainerSpec":{"Image":"alpine","Labels":{"sockrelay.scope":"B"}}}}`)
	var spec struct {
		Labels       map[string]string
		TaskTemplate struct {
			ContainerSpec struct {
				Image  string
				Labels map[string]string
			}
		}
	}
	if !d.Allow || json.Unmarshal(d.Body, &spec) != nil || spec.Labels[ScopeLabel] != "A" ||
		spec.TaskTemplate.ContainerSpec.Labels[ScopeLabel] != "A" || spec.TaskTemplate.ContainerSpec.Image != "alpine" {
		t.Errorf("service create: got %+v %s, want both labels A and the image kept", d, d.Body)
	}
	// A build's image.
	d = scopedDecide(t, full.WithScope("A"), twoScopes(), "POST", "/build?t=x&labels="+url.QueryEscape(`{"sockrelay.scope":"B","k":"v"}`), "")
	u, _ := url.Parse(d.Target)
	var bl map[string]string
	if !d.Allow || json.Unmarshal([]byte(u.Query().Get("labels")), &bl) != nil || bl[ScopeLabel] != "A" || bl["k"] != "v" || u.Query().Get("t") != "x" {
		t.Errorf("build: got %+v, want labels with the scope A and k=v", d)
	}
	// A name spelt as a full ID could be reached by a forward by full ID.
	for _, r := range [][3]string{{"/containers/create?name=" + hexID("a1"), `{"Image":"x"}`}, {"/containers/web/rename?name=" + hexID("d"), ""},
		{"/networks/create", `{"Name":"` + hexID("e") + `"}`}} {
		if d := scopedDecide(t, full.WithScope("A"), twoScopes(), "POST", r[0], r[1]); d.Allow || d.Rule != RuleScope {
			t.Errorf("POST %s %s: got allow=%v %s, want refused by %s", r[0], r[1], d.Allow, d.Rule, RuleScope)
		}
	}
	// Not an object, or not JSON: refused, never forwarded unstamped.
	for _, body := range []string{``, `null`, `[]`, `{"Image":"x"`, `{"Image":"x"}{}`} {
		d := scopedDecide(t, full.WithScope("A"), twoScopes(), "POST", "/networks/create", body)
		if d.Allow {
			t.Errorf("POST /networks/create %q: got allowed, want refused", body)
		}
	}
}

func TestScopeBodyReferences(t *testing.T) {
	p := full.WithScope("A")
	cases := []struct {
		name, path, body string
		status           int    // 0: allowed
		message          string // of a 404
		forwarded        string // in the forwarded body, when allowed
	}{
		{"volumes-from mine", "/containers/create", `{"Image":"x","HostConfig":{"VolumesFrom":["web:ro"]}}`, 0, "", `"VolumesFrom":["` + hexID("a1") + `:ro"]`},
		{"volumes-from theirs", "/containers/create", `{"Image":"x","HostConfig":{"VolumesFrom":["db"]}}`, 404, "No such container: db", ""},
		{"volumes-from theirs by prefix", "/containers/create", `{"Image":"x","HostConfig":{"VolumesFrom":["b1:rw"]}}`, 404, "No such container: b1", ""},
		{"network container mine", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"container:web"}}`, 0, "", `"container:` + hexID("a1") + `"`},
		{"network container theirs", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"container:hostc"}}`, 400, "No such container: hostc", ""},
		{"pid container theirs", "/containers/create", `{"Image":"x","HostConfig":{"PidMode":"container:db"}}`, 400, "No such container: db", ""},
		{"ipc container theirs", "/containers/create", `{"Image":"x","HostConfig":{"IpcMode":"container:` + hexID("b1") + `"}}`, 400, "No such container: " + hexID("b1"), ""},
		{"link mine", "/containers/create", `{"Image":"x","HostConfig":{"Links":["web:w"]}}`, 0, "", `"Links":["` + hexID("a1") + `:w"]`},
		{"link mine, no alias", "/containers/create", `{"Image":"x","HostConfig":{"Links":["web"]}}`, 0, "", `"Links":["` + hexID("a1") + `:web"]`},
		{"link theirs", "/containers/create", `{"Image":"x","HostConfig":{"Links":["db:d"]}}`, 400, "could not get container for db: No such container: db", ""},
		{"link theirs with a slash", "/containers/create", `{"Image":"x","HostConfig":{"Links":["/db:/x/d"]}}`, 400, "could not get container for db: No such container: db", ""},
		{"legacy top-level volumes-from", "/containers/create", `{"Image":"x","VolumesFrom":["db"]}`, 404, "No such container: db", ""},
		{"network mine", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"anet"}}`, 0, "", ""},
		{"network theirs", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"bnet"}}`, 400, "network bnet not found", ""},
		{"endpoint theirs", "/containers/create", `{"Image":"x","NetworkingConfig":{"EndpointsConfig":{"bnet":{}}}}`, 400, "network bnet not found", ""},
		{"bridge", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"bridge"}}`, 0, "", ""},
		{"volume mine", "/containers/create", `{"Image":"x","HostConfig":{"Binds":["avol:/d"]}}`, 0, "", ""},
		{"volume theirs", "/containers/create", `{"Image":"x","HostConfig":{"Binds":["bvol:/d"]}}`, 403, "", ""},
		{"volume host's", "/containers/create", `{"Image":"x","HostConfig":{"Mounts":[{"Type":"volume","Source":"hostvol","Target":"/d"}]}}`, 403, "", ""},
		{"volume missing", "/containers/create", `{"Image":"x","HostConfig":{"Binds":["newvol:/d"]}}`, 403, "", ""},
		{"connect mine", "/networks/anet/connect", `{"Container":"web"}`, 0, "", `"Container":"` + hexID("a1") + `"`},
		{"connect theirs", "/networks/anet/connect", `{"Container":"db"}`, 404, "No such container: db", ""},
		{"connect to theirs", "/networks/bnet/connect", `{"Container":"web"}`, 404, "network bnet not found", ""},
		{"disconnect theirs", "/networks/anet/disconnect", `{"Container":"b1"}`, 404, "No such container: b1", ""},
		{"volume name taken", "/volumes/create", `{"Name":"bvol"}`, 403, "", ""},
		{"cgroup container theirs", "/containers/create", `{"Image":"x","HostConfig":{"Cgroup":"container:db"}}`, 400, "No such container: db", ""},
		{"endpoint link theirs", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"anet"},"NetworkingConfig":{"EndpointsConfig":{"anet":{"Links":["db:d"]}}}}`, 400, "could not get container for db: No such container: db", ""},
		{"endpoint link mine", "/containers/create", `{"Image":"x","HostConfig":{"NetworkMode":"anet"},"NetworkingConfig":{"EndpointsConfig":{"anet":{"Links":["web:w"]}}}}`, 0, "", `"Links":["` + hexID("a1") + `:w"]`},
		{"legacy start volumes-from theirs", "/v1.23/containers/web/start", `{"VolumesFrom":["db"]}`, 404, "No such container: db", ""},
		{"legacy start links mine", "/v1.23/containers/web/start", `{"Links":["web:w"]}`, 0, "", `"Links":["` + hexID("a1") + `:w"]`},
		{"network config-from theirs", "/networks/create", `{"Name":"n","ConfigFrom":{"Network":"bnet"}}`, 404, "network bnet not found", ""},
		{"build in their network namespace", "/build?networkmode=container:db", ``, 400, "No such container: db", ""},
		{"service secret theirs", "/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"x","Secrets":[{"SecretID":"` + hexID("5b") + `"}]}}}`, 404, "secret " + hexID("5b") + " not found", ""},
		{"build in my network namespace", "/build?networkmode=container:web", ``, 0, "", "networkmode=container%3A" + hexID("a1")},
		{"service network theirs", "/services/create", `{"TaskTemplate":{"ContainerSpec":{"Image":"x"},"Networks":[{"Target":"bnet"}]}}`, 404, "network bnet not found", ""},
	}
	for _, tc := range cases {
		d := scopedDecide(t, p, twoScopes(), "POST", tc.path, tc.body)
		switch {
		case tc.status == 0 && !d.Allow:
			t.Errorf("%s: got refused (%s: %s), want allowed", tc.name, d.Rule, d.Reason)
		case tc.status == 0 && !strings.Contains(string(d.Body), tc.forwarded) && !strings.Contains(d.Target, tc.forwarded):
			t.Errorf("%s: forwarded %s, want it to hold %s", tc.name, d.Body, tc.forwarded)
		case tc.status != 0 && (d.Allow || d.Status != tc.status || d.Message != tc.message):
			t.Errorf("%s: got allow=%v %d %q (%s), want %d %q", tc.name, d.Allow, d.Status, d.Message, d.Reason, tc.status, tc.message)
		}
	}
}

func TestScopeImagesShared(t *testing.T) {
	p := noEscalation.WithScope("A")
	cases := []struct {
		method, target string
		allow          bool
	}{
		{"GET", "/images/alpine:latest/json", true},
		{"GET", "/images/json", true},
		{"POST", "/images/create?fromImage=alpine&tag=latest", true},
		{"DELETE", "/images/abuilt:latest", true},
		{"DELETE", "/images/alpine:latest", false},
		{"DELETE", "/images/" + hexID("1b"), false},
		{"POST", "/images/alpine:latest/tag?repo=mine", false},
		{"POST", "/images/abuilt:latest/tag?repo=mine", true},
		{"DELETE", "/images/nothing", false},
		{"POST", "/images/abuilt:latest/tag?repo=alpine&tag=latest", false},
		{"POST", "/images/abuilt:latest/tag?repo=abuilt&tag=v2", true},
		{"POST", "/build?t=alpine:latest", false},
		{"POST", "/build?t=mine&t=alpine", false},
		{"POST", "/build?t=abuilt:latest", true},
		{"POST", "/build?t=new:1", true},
		{"POST", "/images/create?fromImage=alpine&tag=latest", true},
		{"POST", "/images/create?fromImage=bbuilt&tag=latest", false},
		{"POST", "/images/create?fromSrc=-&repo=alpine&tag=latest", false},
		{"POST", "/images/create?fromSrc=-&repo=fresh", true},
		{"POST", "/commit?container=web&repo=alpine&tag=latest", false},
		{"POST", "/commit?container=web&repo=fresh", true},
		{"POST", "/images/load", false},
	}
	for _, tc := range cases {
		d := scopedDecide(t, p, twoScopes(), tc.method, tc.target, "")
		if d.Allow != tc.allow || !d.Allow && d.Rule != RuleScope {
			t.Errorf("%s %s: got allow=%v (%s), want %v", tc.method, tc.target, d.Allow, d.Rule, tc.allow)
		}
		if d.Allow && d.Target != "" && strings.HasPrefix(tc.target, "/images/") {
			t.Errorf("%s %s: forwarded as %s; an image reference must go as sent", tc.method, tc.target, d.Target)
		}
	}
}

func TestScopeHostWide(t *testing.T) {
	p := full.WithScope("A")
	for _, r := range [][2]string{{"GET", "/system/df"}, {"GET", "/tasks"}, {"GET", "/tasks?filters=" + url.QueryEscape(`{"node":["n1"]}`)}, {"POST", "/grpc"}, {"POST", "/swarm/leave"},
		{"POST", "/plugins/pull"}, {"DELETE", "/nodes/x"}, {"GET", "/swarm"}, {"GET", "/swarm/unlockkey"}, {"POST", "/containers/web/frobnicate"}} {
		d := scopedDecide(t, p, twoScopes(), r[0], r[1], "")
		if d.Allow || d.Rule != RuleScope {
			t.Errorf("%s %s: got allow=%v %s, want refused by %s", r[0], r[1], d.Allow, d.Rule, RuleScope)
		}
	}
	// Unscoped, the same requests are the policy's to decide.
	if d := scopedDecide(t, full, twoScopes(), "GET", "/system/df", ""); !d.Allow {
		t.Errorf("GET /system/df unscoped: got refused, want allowed by full")
	}
}

// docker service ps: the tasks of the scope's services only.
func TestScopeTasks(t *testing.T) {
	d := twoScopes()
	d.objs = append(d.objs, &fobj{kind: KindService, id: hexID("5e"), name: "asvc", scope: "A"},
		&fobj{kind: KindService, id: hexID("6e"), name: "bsvc", scope: "B"})
	p := full.WithScope("A")
	dec := scopedDecide(t, p, d, "GET", "/tasks?filters="+url.QueryEscape(`{"service":{"asvc":true},"desired-state":{"running":true}}`), "")
	if !dec.Allow {
		t.Fatalf("tasks of asvc: got %+v", dec)
	}
	f := filtersOf(t, dec.Target)
	if len(f["service"]) != 1 || !f["service"][hexID("5e")] || !f["desired-state"]["running"] {
		t.Errorf("tasks of asvc: forwarded %v, want the service by full ID and the other filters", f)
	}
	for _, svc := range []string{"bsvc", "6e", "nothing"} {
		dec := scopedDecide(t, p, d, "GET", "/tasks?filters="+url.QueryEscape(`{"service":["asvc","`+svc+`"]}`), "")
		if dec.Allow || dec.Status != 404 || dec.Message != "service "+svc+" not found" {
			t.Errorf("tasks of asvc and %s: got %+v, want a 404", svc, dec)
		}
	}
}

// A lookup that fails is a 503 that names no object.
func TestScopeLookupFails(t *testing.T) {
	p := full.WithScope("A")
	d := p.Decide(Request{Method: "GET", Target: "/containers/web/json", Daemon: failingDaemon{twoScopes()}})
	if d.Allow || d.Status != StatusLookup {
		t.Errorf("got %+v, want a %d", d, StatusLookup)
	}
	d = p.Decide(Request{Method: "GET", Target: "/containers/web/json"})
	if d.Allow || d.Status != StatusLookup {
		t.Errorf("without a daemon: got %+v, want a %d", d, StatusLookup)
	}
}

type failingDaemon struct{ *scopeDaemon }

func (failingDaemon) Resolve(Kind, string) (Object, error) {
	return Object{}, errors.New("connection refused")
}

func TestCheckScope(t *testing.T) {
	for _, ok := range []string{"A", "ci-project_1.x", strings.Repeat("a", MaxScope)} {
		if err := CheckScope(ok); err != nil {
			t.Errorf("CheckScope(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a=b", "a b", "a,b", "ä", strings.Repeat("a", MaxScope+1), "a\n"} {
		if err := CheckScope(bad); err == nil {
			t.Errorf("CheckScope(%q): got nil, want an error", bad)
		}
	}
}

func TestParseScope(t *testing.T) {
	p, err := Parse("ci", []byte("version: 1\nscope: ci-a\nallow:\n  - {method: GET, path: /_ping}\n"))
	if err != nil || p.Scope() != "ci-a" {
		t.Fatalf("got %v, %v, want scope ci-a", p, err)
	}
	for _, bad := range []string{"scope: a=b", "scope: 7", "scope: [a]", "scope: ''", "scope: " + strings.Repeat("a", MaxScope+1)} {
		_, err := Parse("ci", []byte("version: 1\n"+bad+"\nallow:\n  - {method: GET, path: /_ping}\n"))
		var fe *FileError
		if !errors.As(err, &fe) || fe.Line != 2 || !strings.Contains(fe.Reason, "scope") {
			t.Errorf("%s: got %v, want an error on line 2 about scope", bad, err)
		}
	}
	// WithScope leaves the policy it was made from alone.
	if s := full.WithScope("x"); s.Scope() != "x" || full.Scope() != "" || s.Name() != full.Name() {
		t.Errorf("WithScope: got %q (of %q), %q", s.Scope(), s.Name(), full.Scope())
	}
}
