package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// apiTimeout bounds each Docker API call of the setup and cleanup; a
// volume Create or Mount may take dockerd up to 2 minutes of the plugin's.
const apiTimeout = 3 * time.Minute

// dockerAPI speaks the Docker Engine API on a daemon's socket: the few
// calls the bench makes to set up and remove what it measures through
// the installed plugin.
type dockerAPI struct {
	sock   string
	client *http.Client
}

func newDockerAPI(sock string) *dockerAPI {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx, sock) }}
	return &dockerAPI{sock: sock, client: &http.Client{Transport: tr, Timeout: apiTimeout}}
}

func (a *dockerAPI) close() { a.client.CloseIdleConnections() }

// call sends a request with body (JSON-encoded unless it is an
// io.Reader) and decodes a JSON answer into out, if out is not nil. An
// answer of 300 or more is an error carrying the daemon's message.
func (a *dockerAPI) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/x-tar"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	u := "http://docker" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Message)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
		return err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// info is what the bench needs of GET /info.
type info struct {
	DockerRootDir   string
	SecurityOptions []string
}

func (i info) remapped() bool {
	for _, o := range i.SecurityOptions {
		if strings.Contains(o, "name=userns") {
			return true
		}
	}
	return false
}

func (a *dockerAPI) info(ctx context.Context) (info, error) {
	var i info
	err := a.call(ctx, http.MethodGet, "/info", nil, nil, &i)
	return i, err
}

// pluginInfo is what the bench needs of GET /plugins/NAME/json.
type pluginInfo struct {
	ID       string `json:"Id"`
	Name     string
	Enabled  bool
	Settings struct {
		Env    []string
		Mounts []struct {
			Name, Source, Destination string
		}
	}
}

// env is the value of the plugin setting key.
func (p pluginInfo) env(key string) string {
	for _, e := range p.Settings.Env {
		if k, v, ok := strings.Cut(e, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func (a *dockerAPI) plugin(ctx context.Context, name string) (pluginInfo, error) {
	var p pluginInfo
	err := a.call(ctx, http.MethodGet, "/plugins/"+url.PathEscape(name)+"/json", nil, nil, &p)
	return p, err
}
