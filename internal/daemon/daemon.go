// Package daemon asks the Docker daemon, over its API socket, the few
// things the plugin needs to know of it.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/api/types/volume"
)

// Timeout bounds each question.
const Timeout = 5 * time.Second

// maxAnswer bounds what an answer may hold.
const maxAnswer = 16 << 20

// Client asks the daemon listening on Socket.
type Client struct {
	Socket string
}

// Info is GET /info.
func (c Client) Info(ctx context.Context) (*system.Info, error) {
	var info system.Info
	if err := c.get(ctx, "/info", nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// VolumeInUse says whether any container, running or not, uses the
// volume name (GET /containers/json?all=1 with a volume filter).
func (c Client) VolumeInUse(ctx context.Context, name string) (bool, error) {
	filters, err := json.Marshal(map[string][]string{"volume": {name}})
	if err != nil {
		return false, err
	}
	q := url.Values{"all": {"1"}, "filters": {string(filters)}}
	var list []container.Summary
	if err := c.get(ctx, "/containers/json", q, &list); err != nil {
		return false, err
	}
	return len(list) > 0, nil
}

// StatusError is an answer other than 200 OK.
type StatusError struct {
	Code    int
	Message string // the daemon's message, if it gave one
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("status %d", e.Code)
	}
	m := e.Message
	if len(m) > 200 {
		m = m[:200] + "…"
	}
	return fmt.Sprintf("status %d: %s", e.Code, m)
}

// get decodes the JSON answer to GET path?query into v.
func (c Client) get(ctx context.Context, path string, query url.Values, v any) error {
	_, err := c.getHeader(ctx, path, query, v)
	return err
}

// getHeader is get, and the answer's header.
func (c Client) getHeader(ctx context.Context, path string, query url.Values, v any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Socket)
		},
		DisableKeepAlives: true,
	}}
	what := "GET " + path
	u := "http://docker" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Message string }
		json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&e)
		err := &StatusError{Code: resp.StatusCode, Message: e.Message}
		return resp.Header, fmt.Errorf("%s: %w", what, err)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(v); err != nil {
		return resp.Header, fmt.Errorf("%s: %w", what, err)
	}
	return resp.Header, nil
}

// Volume is what the daemon holds of a volume (GET /volumes/NAME); an
// error wrapping a StatusError of 404 when it has none.
func (c Client) Volume(ctx context.Context, name string) (*volume.Volume, error) {
	var v volume.Volume
	if err := c.get(ctx, "/volumes/"+url.PathEscape(name), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// RunningWith lists the IDs of the running containers that use the
// volume name (GET /containers/json with a volume filter).
func (c Client) RunningWith(ctx context.Context, name string) ([]string, error) {
	filters, err := json.Marshal(map[string][]string{"volume": {name}})
	if err != nil {
		return nil, err
	}
	var list []container.Summary
	if err := c.get(ctx, "/containers/json", url.Values{"filters": {string(filters)}}, &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids, nil
}
