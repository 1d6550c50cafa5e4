package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// worldDaemon is a fake dockerd whose containers change while the
// resolver caches: it resolves as dockerd does (full ID, name, unique
// prefix), lists by label, and tells its events, each after a random
// delay of a few steps, as a busy daemon's stream lags.
type worldDaemon struct {
	mu     sync.Mutex
	ctrs   []worldCtr
	events chan string
}

type worldCtr struct{ id, name, scope string }

func (d *worldDaemon) find(ref string) (worldCtr, int) {
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
	var found []worldCtr
	for _, c := range d.ctrs {
		if strings.HasPrefix(c.id, ref) {
			found = append(found, c)
		}
	}
	if len(found) == 1 {
		return found[0], 1
	}
	return worldCtr{}, len(found)
}

func (d *worldDaemon) handler(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/events":
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
	case r.URL.Path == "/containers/json":
		var f map[string][]string
		json.Unmarshal([]byte(r.URL.Query().Get("filters")), &f)
		d.mu.Lock()
		var out []map[string]any
		for _, c := range d.ctrs {
			if len(f["label"]) == 1 && f["label"][0] == policy.ScopeLabel+"="+c.scope && c.scope != "" {
				out = append(out, map[string]any{"Id": c.id, "Names": []string{"/" + c.name}, "Labels": map[string]string{policy.ScopeLabel: c.scope}})
			}
		}
		d.mu.Unlock()
		json.NewEncoder(w).Encode(out)
	default:
		ref, _ := url.PathUnescape(strings.TrimSuffix(strings.TrimPrefix(r.URL.EscapedPath(), "/containers/"), "/json"))
		d.mu.Lock()
		c, n := d.find(ref)
		d.mu.Unlock()
		switch n {
		case 1:
			fmt.Fprintf(w, `{"Id":%q,"Config":{"Labels":{%q:%q}},"HostConfig":{}}`, c.id, policy.ScopeLabel, c.scope)
		case 0:
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"message":"No such container: %s"}`, ref)
		default:
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"message":"Multiple IDs found with provided prefix: %s"}`, ref)
		}
	}
}

// With the cache in use and the event stream lagging, no request a scope
// is allowed reaches another scope's container.
func TestResolverProperty(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		d := &worldDaemon{events: make(chan string, 1024)}
		r := &Resolver{Client: Client{Socket: fakeDaemon(t, d.handler)}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.Watch(ctx); close(done) }()
		waitFor(t, "the event stream", r.Live)
		full, _ := policy.Preset("full")
		pols := map[string]*policy.Policy{"A": full.WithScope("A"), "B": full.WithScope("B")}
		names := []string{"web", "db", "a", "b1", "x"}
		var lag []string // events not yet sent
		serial := 0
		for range 150 {
			// Send some of the lagging events.
			for len(lag) > 0 && rng.IntN(3) == 0 {
				d.events <- lag[0]
				lag = lag[1:]
			}
			d.mu.Lock()
			switch op := rng.IntN(4); {
			case op == 0 || len(d.ctrs) == 0:
				name := names[rng.IntN(len(names))]
				serial++
				id := fmt.Sprintf("%c%c%04x", "ab"[rng.IntN(2)], "b1"[rng.IntN(2)], serial) + strings.Repeat("e", 58)
				free := true
				for _, c := range d.ctrs {
					free = free && c.name != name
				}
				if free {
					d.ctrs = append(d.ctrs, worldCtr{id: id, name: name, scope: []string{"A", "B", ""}[rng.IntN(3)]})
					lag = append(lag, fmt.Sprintf(`{"Type":"container","Action":"create","Actor":{"ID":%q,"Attributes":{"name":%q}}}`, id, name))
				}
			case op == 1:
				i := rng.IntN(len(d.ctrs))
				c := d.ctrs[i]
				d.ctrs = append(d.ctrs[:i], d.ctrs[i+1:]...)
				lag = append(lag, fmt.Sprintf(`{"Type":"container","Action":"destroy","Actor":{"ID":%q,"Attributes":{"name":%q}}}`, c.id, c.name))
			case op == 2:
				i := rng.IntN(len(d.ctrs))
				name := names[rng.IntN(len(names))]
				free := true
				for _, c := range d.ctrs {
					free = free && c.name != name
				}
				if free {
					d.ctrs[i].name = name
					lag = append(lag, fmt.Sprintf(`{"Type":"container","Action":"rename","Actor":{"ID":%q,"Attributes":{"name":%q}}}`, d.ctrs[i].id, name))
				}
			}
			d.mu.Unlock()
			if rng.IntN(2) == 0 {
				continue
			}
			scope := []string{"A", "B"}[rng.IntN(2)]
			var ref string
			d.mu.Lock()
			switch k := rng.IntN(3); {
			case k == 0 || len(d.ctrs) == 0:
				ref = names[rng.IntN(len(names))]
			case k == 1:
				ref = d.ctrs[rng.IntN(len(d.ctrs))].id
			default:
				ref = d.ctrs[rng.IntN(len(d.ctrs))].id[:1+rng.IntN(4)]
			}
			d.mu.Unlock()
			dec := pols[scope].Decide(policy.Request{Method: "GET", Target: "/containers/" + ref + "/json", Header: http.Header{},
				Daemon: r.Daemon(context.Background())})
			if !dec.Allow {
				continue
			}
			fwd := strings.TrimSuffix(strings.TrimPrefix(dec.Target, "/containers/"), "/json")
			if len(fwd) != 64 {
				t.Fatalf("seed %d: %s's %s forwarded as %q, want a full ID", seed, scope, ref, dec.Target)
			}
			d.mu.Lock()
			c, n := d.find(fwd)
			d.mu.Unlock()
			if n == 1 && c.scope != scope {
				t.Fatalf("seed %d: %s's reference %s reached %q's container %s (%s)", seed, scope, ref, c.scope, c.id, c.name)
			}
		}
		cancel()
		<-done
	}
}
