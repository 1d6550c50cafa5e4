package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/volume"

	"github.com/sockrelay/sockrelay/internal/policy"
)

// Lookup answers a policy's questions about the objects a request names
// (policy.Daemon), each with one GET that dockerd resolves as it resolves
// the request itself: a container by full ID, name or unique ID prefix, a
// volume by name, an exec instance by ID.
type Lookup struct {
	Client
	Ctx context.Context
}

var _ policy.Daemon = Lookup{}

// Container is GET /containers/{ref}/json.
func (l Lookup) Container(ref string) (*container.InspectResponse, error) {
	var info container.InspectResponse
	if err := l.object("/containers/"+url.PathEscape(ref)+"/json", &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Volume is GET /volumes/{name}.
func (l Lookup) Volume(name string) (*volume.Volume, error) {
	var v volume.Volume
	if err := l.object("/volumes/"+url.PathEscape(name), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Exec is GET /exec/{id}/json.
func (l Lookup) Exec(id string) (*container.ExecInspectResponse, error) {
	var e container.ExecInspectResponse
	if err := l.object("/exec/"+url.PathEscape(id)+"/json", &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// HostNetworks is GET /networks with a filter on the host driver: the
// host's network and, on a swarm manager, the swarm's.
func (l Lookup) HostNetworks() ([]policy.Network, error) {
	filters, err := json.Marshal(map[string][]string{"driver": {"host"}})
	if err != nil {
		return nil, err
	}
	var list []struct {
		ID   string `json:"Id"`
		Name string
	}
	if err := l.get(l.Ctx, "/networks", url.Values{"filters": {string(filters)}}, &list); err != nil {
		return nil, err
	}
	nets := make([]policy.Network, 0, len(list))
	for _, n := range list {
		nets = append(nets, policy.Network{ID: n.ID, Name: n.Name})
	}
	return nets, nil
}

// object GETs one object; a 404 is policy.ErrNoSuchObject.
func (l Lookup) object(path string, v any) error {
	return l.Client.object(l.Ctx, path, nil, v)
}

// object GETs one object; a 404 is policy.ErrNoSuchObject.
func (c Client) object(ctx context.Context, path string, q url.Values, v any) error {
	_, err := c.objectHeader(ctx, path, q, v)
	return err
}

// objectHeader is object, and the answer's header.
func (c Client) objectHeader(ctx context.Context, path string, q url.Values, v any) (http.Header, error) {
	h, err := c.getHeader(ctx, path, q, v)
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return h, fmt.Errorf("%w: %w", policy.ErrNoSuchObject, err)
	case se != nil && ambiguous(se.Message):
		return h, fmt.Errorf("%w: %w", policy.ErrAmbiguous, err)
	}
	return h, err
}

// ambiguous reports whether a daemon's message says a reference is the
// prefix of several objects (container and image stores: "multiple IDs
// found with provided prefix", a 500 on Engine 20.10; networks: "is
// ambiguous").
func ambiguous(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "multiple ids found") || strings.Contains(msg, "ambiguous")
}
