package metrics

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// Listen listens where addr says: unix:PATH is a Unix socket (its
// directory must exist), anything else a TCP address such as
// 127.0.0.1:9323. A Unix socket is owned by this process's user and
// group, mode 0660: whoever may scrape it is in that group.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return ListenUnix(path)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("want unix:PATH or a TCP address HOST:PORT: %w", err)
	}
	return net.Listen("tcp", addr)
}

// ListenUnix listens on the Unix socket path, owned by this process's
// user and group, mode 0660. A stale socket left by a process that is
// gone is replaced; a live one, or any other file, is an error.
func ListenUnix(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, errors.New("want a clean absolute socket path")
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("the socket's directory: %w", err)
	}
	defer dir.Close()
	return unixsock.Listen(dir, filepath.Base(path), unixsock.Owner{UID: os.Geteuid(), GID: os.Getegid(), Perm: 0o660})
}

// Driver counts every call of d.
func (m *Metrics) Driver(d volume.Driver) volume.Driver {
	if m == nil {
		return d
	}
	return &countedDriver{d: d, m: m}
}

type countedDriver struct {
	d volume.Driver
	m *Metrics
}

// Each method's label is its name in the protocol (VolumeDriver.NAME).

func (c *countedDriver) Create(r *volume.CreateRequest) error {
	start := time.Now()
	err := c.d.Create(r)
	c.m.Call("Create", time.Since(start), err)
	return err
}

func (c *countedDriver) List() (*volume.ListResponse, error) {
	start := time.Now()
	res, err := c.d.List()
	c.m.Call("List", time.Since(start), err)
	return res, err
}

func (c *countedDriver) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	start := time.Now()
	res, err := c.d.Get(r)
	c.m.Call("Get", time.Since(start), err)
	return res, err
}

func (c *countedDriver) Remove(r *volume.RemoveRequest) error {
	start := time.Now()
	err := c.d.Remove(r)
	c.m.Call("Remove", time.Since(start), err)
	return err
}

func (c *countedDriver) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	start := time.Now()
	res, err := c.d.Path(r)
	c.m.Call("Path", time.Since(start), err)
	return res, err
}

func (c *countedDriver) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	start := time.Now()
	res, err := c.d.Mount(r)
	c.m.Call("Mount", time.Since(start), err)
	return res, err
}

func (c *countedDriver) Unmount(r *volume.UnmountRequest) error {
	start := time.Now()
	err := c.d.Unmount(r)
	c.m.Call("Unmount", time.Since(start), err)
	return err
}

func (c *countedDriver) Capabilities() *volume.CapabilitiesResponse {
	start := time.Now()
	res := c.d.Capabilities()
	c.m.Call("Capabilities", time.Since(start), nil)
	return res
}
