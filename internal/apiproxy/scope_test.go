package apiproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/daemon"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// fakeDockerd answers like dockerd the few routes a scoped volume uses:
// container inspect by full ID, name or unique prefix, the container
// list with label filters, and the event stream; its errors are
// dockerd's (httputils.WriteJSON, its version headers).
type fakeDockerd struct {
	mu       sync.Mutex
	ctrs     []fakeCtr
	requests []string // "GET /path", in order
	events   chan string
	created  []string // the bodies of container creates
}

type fakeCtr struct {
	id, name string
	labels   map[string]string
}

func (d *fakeDockerd) find(ref string) (fakeCtr, int) {
	var prefixed []fakeCtr
	for _, c := range d.ctrs {
		if c.id == ref {
			return c, 1
		}
	}
	for _, c := range d.ctrs {
		if c.name == strings.TrimPrefix(ref, "/") {
			return c, 1
		}
	}
	for _, c := range d.ctrs {
		if strings.HasPrefix(c.id, ref) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0], 1
	}
	return fakeCtr{}, len(prefixed)
}

func writeDockerJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func (d *fakeDockerd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Api-Version", "1.41")
	w.Header().Set("Docker-Experimental", "false")
	w.Header().Set("Ostype", "linux")
	w.Header().Set("Server", "Docker/20.10.24 (linux)")
	d.mu.Lock()
	d.requests = append(d.requests, r.Method+" "+r.URL.Path)
	d.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/v1.41")
	switch {
	case path == "/events":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-d.events:
				io.WriteString(w, ev+"\n")
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	case path == "/containers/json":
		f, _ := url.ParseQuery(r.URL.RawQuery)
		var filters map[string]map[string]bool
		json.Unmarshal([]byte(f.Get("filters")), &filters)
		d.mu.Lock()
		var out []map[string]any
		for _, c := range d.ctrs {
			ok := true
			for kv := range filters["label"] {
				k, v, _ := strings.Cut(kv, "=")
				if c.labels[k] != v {
					ok = false
				}
			}
			if ok {
				out = append(out, map[string]any{"Id": c.id, "Names": []string{"/" + c.name}, "Labels": c.labels})
			}
		}
		d.mu.Unlock()
		writeDockerJSON(w, 200, out)
	case strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		ref := strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json")
		d.mu.Lock()
		c, n := d.find(ref)
		d.mu.Unlock()
		switch n {
		case 1:
			writeDockerJSON(w, 200, map[string]any{"Id": c.id, "Name": "/" + c.name, "Config": map[string]any{"Labels": c.labels},
				"HostConfig": map[string]any{}})
		case 0:
			writeDockerJSON(w, 404, map[string]string{"message": "No such container: " + ref})
		default:
			writeDockerJSON(w, 400, map[string]string{"message": "multiple IDs found with provided prefix: " + ref})
		}
	case path == "/containers/create":
		b, _ := io.ReadAll(r.Body)
		d.mu.Lock()
		d.created = append(d.created, string(b))
		d.mu.Unlock()
		writeDockerJSON(w, 201, map[string]string{"Id": strings.Repeat("d", 64)})
	default:
		writeDockerJSON(w, 404, map[string]string{"message": "page not found"})
	}
}

func (d *fakeDockerd) asked() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.requests)
}

func (d *fakeDockerd) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests = nil
}

type scopeFixture struct {
	d        *fakeDockerd
	up, sock string
	res      *daemon.Resolver
	audit    *syncBuffer
}

// startScoped serves a proxy of policy full in scope A before a fake
// dockerd with A's container web, B's container db and the host's hostc.
func startScoped(t *testing.T) *scopeFixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "srs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &scopeFixture{d: &fakeDockerd{events: make(chan string, 16), ctrs: []fakeCtr{
		{id: strings.Repeat("a", 64), name: "web", labels: map[string]string{policy.ScopeLabel: "A"}},
		{id: strings.Repeat("b", 64), name: "db", labels: map[string]string{policy.ScopeLabel: "B"}},
		{id: "c" + strings.Repeat("0", 63), name: "hostc"},
	}}, up: filepath.Join(dir, "up.sock"), sock: filepath.Join(dir, "p.sock"), audit: &syncBuffer{}}
	uln, err := net.Listen("unix", f.up)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.d}
	go srv.Serve(uln)
	t.Cleanup(func() { srv.Close() })

	f.res = &daemon.Resolver{Client: daemon.Client{Socket: f.up}}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { f.res.Watch(ctx); close(watched) }()
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Preset
	full, _ := pol("full")
	scoped := full.WithScope("A")
	p := &Proxy{Volume: "v", Upstream: f.up, Policy: func() *policy.Policy { return scoped },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: audit.New(f.audit), Stats: &Stats{}, Resolver: f.res}
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-watched
	})
	deadline := time.Now().Add(5 * time.Second)
	for !f.res.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the resolver never followed the event stream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.d.reset()
	return f
}

// rawGet sends one GET on c and reads the response head and body.
func rawGet(t *testing.T, br *bufio.Reader, c net.Conn, path string) *http.Response {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: docker\r\n\r\n", path)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

func bodyOf(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// A container of another scope gets the very answer dockerd gives for a
// missing one: status, headers and body, and the connection stays open.
func TestScopeNotFoundIsDockerds(t *testing.T) {
	f := startScoped(t)
	direct, err := net.Dial("unix", f.up)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	dbr := bufio.NewReader(direct)
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, ref := range []string{"db", strings.Repeat("b", 64), "bbb", "hostc", "c0", "nothing", "<x&y>"} {
		path := "/v1.41/containers/" + url.PathEscape(ref) + "/json"
		want := rawGet(t, dbr, direct, "/v1.41/containers/"+url.PathEscape("missing-"+ref)+"/json")
		got := rawGet(t, br, c, path)
		wantBody := strings.Replace(bodyOf(want), "missing-", "", 1)
		if got.StatusCode != want.StatusCode || bodyOf(got) != wantBody {
			t.Errorf("GET %s: got %d %q, want %d %q", path, got.StatusCode, bodyOf(got), want.StatusCode, wantBody)
		}
		for _, k := range []string{"Api-Version", "Content-Type", "Docker-Experimental", "Ostype", "Server", "Content-Length"} {
			if k == "Content-Length" {
				continue // differs with the reference's length
			}
			if got.Header.Get(k) != want.Header.Get(k) {
				t.Errorf("GET %s: header %s: got %q, want %q", path, k, got.Header.Get(k), want.Header.Get(k))
			}
		}
		var gotKeys, wantKeys []string
		for k := range got.Header {
			gotKeys = append(gotKeys, k)
		}
		for k := range want.Header {
			wantKeys = append(wantKeys, k)
		}
		slices.Sort(gotKeys)
		slices.Sort(wantKeys)
		if !slices.Equal(gotKeys, wantKeys) {
			t.Errorf("GET %s: headers %v, want %v", path, gotKeys, wantKeys)
		}
	}
	// The same connection serves A's container.
	if got := rawGet(t, br, c, "/v1.41/containers/web/json"); got.StatusCode != 200 {
		t.Errorf("GET web after the 404s: got %d, want 200", got.StatusCode)
	}
}

// A scoped docker ps costs no extra round trip; a cold docker inspect
// one, a warm one none; a rename drops what the cache knew.
func TestScopeRoundTrips(t *testing.T) {
	f := startScoped(t)
	c := (&fixture{sock: f.sock}).client()
	count := func(what string, do func()) []string {
		t.Helper()
		f.d.reset()
		do()
		return f.d.asked()
	}
	got := count("ps", func() {
		if st, body := get(t, c, "/v1.41/containers/json?all=1"); st != 200 || !strings.Contains(body, "web") || strings.Contains(body, "db") || strings.Contains(body, "hostc") {
			t.Errorf("docker ps: got %d %s, want A's container only", st, body)
		}
	})
	if len(got) != 1 {
		t.Errorf("docker ps: the daemon got %v, want the list alone", got)
	}
	got = count("inspect cold", func() {
		if st, _ := get(t, c, "/v1.41/containers/web/json"); st != 200 {
			t.Errorf("cold inspect: got %d", st)
		}
	})
	if len(got) != 2 {
		t.Errorf("cold inspect: the daemon got %v, want one lookup and the request", got)
	}
	got = count("inspect warm", func() {
		if st, _ := get(t, c, "/v1.41/containers/web/json"); st != 200 {
			t.Errorf("warm inspect: got %d", st)
		}
	})
	if len(got) != 1 || got[0] != "GET /v1.41/containers/"+strings.Repeat("a", 64)+"/json" {
		t.Errorf("warm inspect: the daemon got %v, want the request alone, by full ID", got)
	}
	// B renames db to web2, A's web is removed and B takes its name:
	// the events drop the cache, and A's "web" is B's container now.
	f.d.mu.Lock()
	f.d.ctrs[0].name = "gone"
	f.d.ctrs[1].name = "web"
	f.d.mu.Unlock()
	f.d.events <- `{"Type":"container","Action":"rename"}`
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, body := get(t, c, "/v1.41/containers/web/json")
		if st == 404 && strings.Contains(body, "No such container: web") {
			break
		}
		if strings.Contains(body, strings.Repeat("b", 64)) {
			t.Fatalf("A reached B's container: %s", body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the rename: got %d %s, want a 404", st, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A create through the proxy reaches dockerd with the scope's label, the
// client's own overwritten; a refused request with a body it did not
// need leaves the connection usable.
func TestScopeCreateAndBodies(t *testing.T) {
	f := startScoped(t)
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	body := `{"Image":"alpine","Labels":{"sockrelay.scope":"B","keep":"me"}}`
	fmt.Fprintf(c, "POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create: got %d", resp.StatusCode)
	}
	f.d.mu.Lock()
	created := slices.Clone(f.d.created)
	f.d.mu.Unlock()
	var got struct{ Labels map[string]string }
	if len(created) != 1 || json.Unmarshal([]byte(created[0]), &got) != nil || got.Labels[policy.ScopeLabel] != "A" || got.Labels["keep"] != "me" {
		t.Fatalf("dockerd got %q, want the labels sockrelay.scope=A and keep=me", created)
	}
	// An exec in B's container, with a body the policy does not read.
	exec := `{"Cmd":["sh"]}`
	fmt.Fprintf(c, "POST /v1.41/containers/db/exec HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(exec), exec)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || string(b) != `{"message":"No such container: db"}`+"\n" || resp.Close {
		t.Fatalf("exec in B's: got %d %q close=%v, want dockerd's 404 on a kept connection", resp.StatusCode, b, resp.Close)
	}
	if got := rawGet(t, br, c, "/v1.41/containers/web/json"); got.StatusCode != 200 {
		t.Errorf("the next request on the connection: got %d, want 200", got.StatusCode)
	}
	lines := f.audit.lines(t)
	if len(lines) < 2 || lines[1]["rule"] != policy.RuleOutOfScope {
		t.Errorf("audit: got %v, want the 404 logged as %s", lines, policy.RuleOutOfScope)
	}
}
