package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sockrelay/sockrelay/internal/peer"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// InspectCaller is peer.Resolver's Inspect: GET /containers/{id}/json on
// the daemon at socket, for the audit log's container_name and image.
func InspectCaller(ctx context.Context, socket, id string) (peer.Container, error) {
	info, err := Lookup{Client: Client{Socket: socket}, Ctx: ctx}.Container(id)
	if errors.Is(err, policy.ErrNoSuchObject) {
		return peer.Container{}, fmt.Errorf("%w: %w", peer.ErrNotFound, err)
	}
	if err != nil {
		return peer.Container{}, err
	}
	c := peer.Container{ID: info.ID, Name: strings.TrimPrefix(info.Name, "/"), ImageID: info.Image}
	if info.Config != nil {
		c.Image = info.Config.Image
	}
	return c, nil
}
