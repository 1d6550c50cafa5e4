package driver

import (
	"context"
	"fmt"
	"os"

	"github.com/sockrelay/sockrelay/internal/owner"
	"github.com/sockrelay/sockrelay/internal/unixsock"
)

// A Mode is one way of serving a volume's socket: relay, idmap, policy.
// The driver knows a mode only through this interface; the modes of a
// build are listed once (Modes).
type Mode interface {
	// Name is the value of the mode option that picks it.
	Name() string
	// Options are the volume options the mode takes besides the ones of
	// every volume (mode, socket, target).
	Options() []Option
	// Check vets a volume at Create: that this mode can serve it here. Its
	// error reaches the user.
	Check(v *Volume) error
	// Start serves v's socket in dir until ctx ends or the Server is
	// stopped. dir's files are the caller's: a server dups what it keeps.
	Start(ctx context.Context, dir Dir, v *Volume) (Server, error)
	// Describe adds what the mode shows of a volume to its Status; a
	// running Server adds live figures.
	Describe(v *Volume, st map[string]any)
}

// An Option is a volume option a mode takes.
type Option struct {
	Key string
	// Default is the value of an option not given; "" leaves it out.
	Default string
	// Required options must be given; Help says what they want.
	Required bool
	Help     string
	// Parse checks a value and returns it in canonical form. Its error
	// says what it wants and never repeats the value.
	Parse func(string) (string, error)
}

// Hinter is a Mode that explains why it refuses an option another mode
// takes.
type Hinter interface {
	Hint(key string) string
}

// Volume is a volume as a mode sees it: its options, checked, and what
// the plugin resolved for it. It is not the persisted record.
type Volume struct {
	Name string
	Mode string
	// Socket is the socket's file name in the volume directory.
	Socket string
	// Target is the upstream socket as a host path; Upstream is where
	// this process reaches it.
	Target, Upstream string
	// Options are the mode's options in canonical form, defaults filled in.
	Options map[string]string
	// Remap is the daemon's remap range at Create; nil without
	// userns-remap.
	Remap *owner.Range
	// Chosen says why mode=auto chose Mode; empty when the options named
	// the mode.
	Chosen string
}

// Dir is a served volume's directory, open twice. RW is the directory
// itself, where the plugin makes sockets and mount points. View is the
// read-only bind of it that dockerd hands to containers (its Mountpoint):
// a mount that containers must see goes onto View.
type Dir struct {
	RW, View *os.File
}

// Server is what serves one mounted volume's socket.
type Server interface {
	// Stop stops serving and removes the socket; it returns when every
	// goroutine of the server has ended.
	Stop() error
	// Status adds live figures to a volume's Status.
	Status(map[string]any)
}

// ownerOptions are the options of a socket the plugin makes itself: its
// owner as seen inside the container, and its permission bits.
var ownerOptions = []Option{
	{Key: "uid", Default: "0", Parse: parseID},
	{Key: "gid", Default: "0", Parse: parseID},
	{Key: "perm", Default: "0660", Parse: parsePerm},
}

// SocketOwner is the owner and mode of a socket the plugin makes for v:
// its uid, gid and perm options, the ids mapped onto the daemon's remap
// range (uid=1000 is host 100000+1000).
func (v *Volume) SocketOwner() (unixsock.Owner, error) {
	var uid, gid, perm uint64
	if _, err := fmt.Sscan(v.Options["uid"], &uid); err != nil {
		return unixsock.Owner{}, fmt.Errorf("%w: option uid missing", ErrInvalid)
	}
	if _, err := fmt.Sscan(v.Options["gid"], &gid); err != nil {
		return unixsock.Owner{}, fmt.Errorf("%w: option gid missing", ErrInvalid)
	}
	if _, err := fmt.Sscanf(v.Options["perm"], "%o", &perm); err != nil {
		return unixsock.Owner{}, fmt.Errorf("%w: option perm missing", ErrInvalid)
	}
	var rg owner.Range // not remapped: the ids are the host's
	if v.Remap != nil {
		rg = *v.Remap
	}
	huid, hgid, err := rg.Map(uint32(uid), uint32(gid))
	if err != nil {
		return unixsock.Owner{}, fmt.Errorf("%w: options uid/gid: %v", ErrInvalid, err)
	}
	return unixsock.Owner{UID: int(huid), GID: int(hgid), Perm: os.FileMode(perm)}, nil
}

// describeOwner is Describe for a socket the plugin makes: its owner in
// host ids, and its permission bits.
func describeOwner(v *Volume, st map[string]any) {
	if o, err := v.SocketOwner(); err == nil {
		st["owner"] = fmt.Sprintf("%d:%d", o.UID, o.GID)
		st["perm"] = fmt.Sprintf("%04o", uint32(o.Perm))
	}
}
