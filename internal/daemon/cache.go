package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// Resolver answers a scoped policy's questions for the volumes of one
// daemon socket, and caches what Resolve learns. The cache is used only
// while Watch follows the daemon's event stream: an event that may change
// what a reference names (a create, which can make an ID prefix
// ambiguous or take a freed name; a rename; a removal) drops that kind's
// entries, and a lost stream drops them all until it is back.
//
// A stale entry never reaches another scope's object: an entry names an
// object by full ID with the scope it was made in, which never changes
// for containers, networks and volumes, and the request goes to dockerd
// naming that full ID. At worst a request names an object that is gone,
// and dockerd says so.
type Resolver struct {
	Client
	Log *slog.Logger

	mu    sync.Mutex
	live  bool   // the event stream is followed: entries may be used
	gen   uint64 // bumped by every drop: an answer asked before is not kept
	cache map[policy.Kind]map[string]policy.Object

	header atomic.Pointer[http.Header]
	// Asked counts the questions that went to the daemon.
	Asked atomic.Int64
}

// maxEntries bounds each kind's entries; past it the kind is dropped.
const maxEntries = 4096

// Daemon is a policy.Daemon for one request: the cache for Resolve, a
// Lookup for the rest.
func (r *Resolver) Daemon(ctx context.Context) policy.Daemon {
	return cached{Lookup: Lookup{Client: r.Client, Ctx: ctx}, r: r}
}

type cached struct {
	Lookup
	r *Resolver
}

func (c cached) Resolve(kind policy.Kind, ref string) (policy.Object, error) {
	return c.r.resolve(c.Ctx, kind, ref)
}

// Header is the header of the daemon's last answer, with what names the
// daemon (Server, Api-Version, Ostype, Docker-Experimental); nil before
// the first.
func (r *Resolver) Header() http.Header {
	if h := r.header.Load(); h != nil {
		return *h
	}
	return nil
}

func (r *Resolver) resolve(ctx context.Context, kind policy.Kind, ref string) (policy.Object, error) {
	r.mu.Lock()
	if r.live {
		if obj, ok := r.cache[kind][ref]; ok {
			r.mu.Unlock()
			return obj, nil
		}
	}
	gen := r.gen
	r.mu.Unlock()

	r.Asked.Add(1)
	obj, h, err := resolveHeader(ctx, r.Client, kind, ref)
	if h != nil {
		keep := h.Clone()
		r.header.Store(&keep)
	}
	if err != nil {
		return obj, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.live || gen != r.gen {
		return obj, nil
	}
	if r.cache == nil {
		r.cache = map[policy.Kind]map[string]policy.Object{}
	}
	m := r.cache[kind]
	if m == nil || len(m) >= maxEntries {
		m = map[string]policy.Object{}
		r.cache[kind] = m
	}
	m[ref] = obj
	m[obj.ID] = obj
	return obj, nil
}

// drop forgets the entries of kinds (all when none is named).
func (r *Resolver) drop(kinds ...policy.Kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	if len(kinds) == 0 {
		r.cache = nil
		return
	}
	for _, k := range kinds {
		delete(r.cache, k)
	}
}

func (r *Resolver) setLive(live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = live
	r.gen++
	r.cache = nil
}

// Live reports whether the cache is in use.
func (r *Resolver) Live() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

// Watch follows the daemon's event stream until ctx ends, reconnecting
// after a loss (with a backoff up to maxBackoff); while it is lost, every
// question goes to the daemon.
func (r *Resolver) Watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := r.follow(ctx)
		r.setLive(false)
		if ctx.Err() != nil {
			return
		}
		if r.Log != nil {
			r.Log.Debug("daemon event stream lost; resolving without a cache", "err", err)
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

const maxBackoff = 10 * time.Second

// watchedTypes are the event types whose events can change what a
// reference names.
var watchedTypes = []string{"container", "network", "volume", "service", "secret", "config", "image"}

// event is what follow reads of an event.
type event struct {
	Type   string
	Action string
	Actor  struct {
		ID         string
		Attributes map[string]string
	}
}

func (r *Resolver) follow(ctx context.Context) error {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.Socket)
		},
		DisableKeepAlives: true,
	}}
	filters, err := json.Marshal(map[string][]string{"type": watchedTypes})
	if err != nil {
		return err
	}
	u := "http://docker/events?" + url.Values{"filters": {string(filters)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode}
	}
	// From here every event is seen: entries may be kept.
	r.setLive(true)
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		r.event(ev)
	}
}

// event drops what an event may have made stale. A new object can take
// a name, or make an ID prefix ambiguous; a renamed or removed one frees
// a name. Entries by full ID stay right until their object goes.
func (r *Resolver) event(ev event) {
	id, name := ev.Actor.ID, ev.Actor.Attributes["name"]
	named := func(ref string) bool { return name != "" && (ref == name || ref == "/"+name) }
	switch ev.Type {
	case "container", "network":
		kind := policy.KindContainer
		if ev.Type == "network" {
			kind = policy.KindNetwork
		}
		switch ev.Action {
		case "create":
			r.dropWhere(kind, id == "", func(ref string, _ policy.Object) bool {
				return strings.HasPrefix(id, ref) || named(ref)
			})
		case "rename", "destroy", "remove":
			r.dropWhere(kind, id == "", func(ref string, o policy.Object) bool { return o.ID == id || named(ref) })
		}
	case "volume":
		switch ev.Action {
		case "create", "destroy", "remove":
			r.dropWhere(policy.KindVolume, id == "", func(ref string, _ policy.Object) bool { return ref == id })
		}
	case "service":
		r.drop(policy.KindService, policy.KindTask)
	case "secret":
		r.drop(policy.KindSecret)
	case "config":
		r.drop(policy.KindConfig)
	case "image":
		r.drop(policy.KindImage)
	default:
		r.drop()
	}
}

// dropWhere forgets kind's entries that match (all of them when all).
func (r *Resolver) dropWhere(kind policy.Kind, all bool, match func(ref string, o policy.Object) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	if all {
		delete(r.cache, kind)
		return
	}
	for ref, o := range r.cache[kind] {
		if match(ref, o) {
			delete(r.cache[kind], ref)
		}
	}
}
