package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// eventDaemon is a fake dockerd whose containers the test changes and
// whose event stream it feeds, or cuts.
type eventDaemon struct {
	mu     sync.Mutex
	names  map[string]string // name -> full ID
	labels map[string]string // full ID -> scope
	events chan string
	cut    chan struct{}
	asked  atomic.Int64
	// hold, when set, keeps each lookup until it is sent to; held says
	// a lookup is kept.
	hold, held chan struct{}
}

func (d *eventDaemon) handler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/events" {
		d.mu.Lock()
		cut := d.cut
		d.mu.Unlock()
		select {
		case <-cut:
			w.WriteHeader(http.StatusInternalServerError)
			return
		default:
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-d.events:
				io.WriteString(w, ev+"\n")
				w.(http.Flusher).Flush()
			case <-cut:
				return
			case <-r.Context().Done():
				return
			}
		}
	}
	d.asked.Add(1)
	ref := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/containers/"), "/json")
	d.mu.Lock()
	id, ok := d.names[ref]
	if !ok {
		if _, isID := d.labels[ref]; isID {
			id, ok = ref, true
		}
	}
	if !ok {
		var found []string
		for full := range d.labels {
			if strings.HasPrefix(full, ref) {
				found = append(found, full)
			}
		}
		if len(found) > 1 {
			d.mu.Unlock()
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"message":"multiple IDs found with provided prefix: %s"}`, ref)
			return
		}
		if len(found) == 1 {
			id, ok = found[0], true
		}
	}
	scope := d.labels[id]
	d.mu.Unlock()
	if d.hold != nil {
		d.held <- struct{}{}
		<-d.hold
	}
	if !ok {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"message":"No such container: %s"}`, ref)
		return
	}
	fmt.Fprintf(w, `{"Id":%q,"Config":{"Labels":{%q:%q}}}`, id, policy.ScopeLabel, scope)
}

func startResolver(t *testing.T) (*eventDaemon, *Resolver) {
	t.Helper()
	d := &eventDaemon{names: map[string]string{"web": "aaa"}, labels: map[string]string{"aaa": "A", "bbb": "B"},
		events: make(chan string, 8), cut: make(chan struct{})}
	r := &Resolver{Client: Client{Socket: fakeDaemon(t, d.handler)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the event stream", r.Live)
	return d, r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestResolverCachesWhileLive(t *testing.T) {
	d, r := startResolver(t)
	dm := r.Daemon(context.Background())
	for i := range 3 {
		obj, err := dm.Resolve(policy.KindContainer, "web")
		if err != nil || obj.ID != "aaa" || obj.Scope != "A" {
			t.Fatalf("Resolve(web) #%d: got %+v, %v", i, obj, err)
		}
	}
	if n := d.asked.Load(); n != 1 {
		t.Errorf("three resolutions of web: the daemon was asked %d times, want 1", n)
	}
	// The full ID it learnt is cached too.
	if _, err := dm.Resolve(policy.KindContainer, "aaa"); err != nil || d.asked.Load() != 1 {
		t.Errorf("Resolve(aaa) after web: %v, asked %d, want 1", err, d.asked.Load())
	}
	// A missing object is asked each time: it may come.
	for range 2 {
		if _, err := dm.Resolve(policy.KindContainer, "nothing"); !errors.Is(err, policy.ErrNoSuchObject) {
			t.Fatalf("Resolve(nothing): got %v, want ErrNoSuchObject", err)
		}
	}
	if n := d.asked.Load(); n != 3 {
		t.Errorf("the daemon was asked %d times, want 3", n)
	}
}

// A rename, a create or a destroy drops what the cache knew of
// containers; other events (start, exec) do not.
func TestResolverDropsOnEvents(t *testing.T) {
	d, r := startResolver(t)
	dm := r.Daemon(context.Background())
	resolveWeb := func() string {
		obj, err := dm.Resolve(policy.KindContainer, "web")
		if err != nil {
			return "error"
		}
		return obj.Scope
	}
	if got := resolveWeb(); got != "A" {
		t.Fatalf("web: got %s, want A", got)
	}
	d.mu.Lock()
	d.names["web"] = "bbb" // A's web is gone; B's container took its name
	d.mu.Unlock()
	d.events <- `{"Type":"container","Action":"start","Actor":{"ID":"aaa"}}`
	d.events <- `{"Type":"container","Action":"exec_start: sh","Actor":{"ID":"aaa"}}`
	time.Sleep(20 * time.Millisecond)
	if got := resolveWeb(); got != "A" {
		t.Errorf("after start and exec events: got %s, want A from the cache", got)
	}
	d.events <- `{"Type":"container","Action":"rename","Actor":{"ID":"bbb","Attributes":{"name":"web","oldName":"/db"}}}`
	waitFor(t, "the rename to drop the cache", func() bool { return resolveWeb() == "B" })
	// A create drops the names and prefixes it could take, no more.
	dm.Resolve(policy.KindContainer, "a")   // A's aaa, by prefix
	dm.Resolve(policy.KindContainer, "bbb") // B's, by full ID
	asked := d.asked.Load()
	d.events <- `{"Type":"container","Action":"create","Actor":{"ID":"ccc","Attributes":{"name":"other"}}}`
	time.Sleep(20 * time.Millisecond)
	dm.Resolve(policy.KindContainer, "a")
	dm.Resolve(policy.KindContainer, "bbb")
	if d.asked.Load() != asked {
		t.Errorf("an unrelated create dropped entries: asked %d more", d.asked.Load()-asked)
	}
	d.mu.Lock()
	d.labels["abc"] = "B"
	d.mu.Unlock()
	d.events <- `{"Type":"container","Action":"create","Actor":{"ID":"abc","Attributes":{"name":"new"}}}`
	waitFor(t, "a create to drop the prefix it shares", func() bool {
		before := d.asked.Load()
		dm.Resolve(policy.KindContainer, "a")
		return d.asked.Load() > before
	})
	before := d.asked.Load()
	dm.Resolve(policy.KindContainer, "bbb")
	if d.asked.Load() != before {
		t.Errorf("a create dropped a full ID's entry")
	}
	// Other kinds' events leave containers alone.
	asked = d.asked.Load()
	d.events <- `{"Type":"network","Action":"create"}`
	time.Sleep(20 * time.Millisecond)
	resolveWeb()
	if d.asked.Load() != asked {
		t.Errorf("a network event dropped the container entries")
	}
}

// A lost event stream drops the cache and every question goes to the
// daemon until the stream is back.
func TestResolverWithoutStream(t *testing.T) {
	d, r := startResolver(t)
	dm := r.Daemon(context.Background())
	dm.Resolve(policy.KindContainer, "web")
	close(d.cut)
	waitFor(t, "the stream's loss", func() bool { return !r.Live() })
	before := d.asked.Load()
	d.mu.Lock()
	d.names["web"] = "bbb"
	d.mu.Unlock()
	for range 2 {
		obj, err := dm.Resolve(policy.KindContainer, "web")
		if err != nil || obj.Scope != "B" {
			t.Fatalf("without a stream: got %+v, %v, want B's, from the daemon", obj, err)
		}
	}
	if n := d.asked.Load() - before; n != 2 {
		t.Errorf("without a stream: the daemon was asked %d times, want 2", n)
	}
	// The stream comes back (the fake serves it again): the cache too.
	d.mu.Lock()
	d.cut = make(chan struct{})
	d.mu.Unlock()
	waitFor(t, "the stream's return", r.Live)
}

// An answer the daemon gave before an event is not kept: the event may
// be about it.
func TestResolverEventDuringLookup(t *testing.T) {
	d, r := startResolver(t)
	d.hold, d.held = make(chan struct{}), make(chan struct{})
	dm := r.Daemon(context.Background())
	got := make(chan policy.Object)
	go func() {
		obj, _ := dm.Resolve(policy.KindContainer, "web")
		got <- obj
	}()
	<-d.held // the daemon has the question, and answers A's web
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	d.mu.Lock()
	d.names["web"] = "bbb"
	d.mu.Unlock()
	d.events <- `{"Type":"container","Action":"rename"}`
	waitFor(t, "the event", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.gen != gen })
	d.hold <- struct{}{}
	if obj := <-got; obj.Scope != "A" {
		t.Fatalf("the lookup in flight: got %+v, want A's web", obj)
	}
	go func() { <-d.held; d.hold <- struct{}{} }()
	if obj, err := dm.Resolve(policy.KindContainer, "web"); err != nil || obj.Scope != "B" {
		t.Errorf("after the event: got %+v, %v, want B's, asked again (the answer from before the event was kept)", obj, err)
	}
}
