package policy

import (
	"errors"

	"github.com/distribution/reference"
)

// A driverList is a policy's allowlist of drivers that dockerd may find in
// its plugin store (volume and log drivers): each entry as written, and as
// the plugin reference dockerd compares with plugin names.
type driverList []driverName

type driverName struct {
	written string // as in the policy file: dockerd's built-in drivers match it exactly
	plugin  string // pluginRef of it
}

// allows reports whether the driver a request names is on the list. dockerd
// first looks a driver up by its exact name among the built-in ones
// (daemon/volume/drivers/extpoint.go lookup, daemon/logger/factory.go get),
// then asks the plugin store, which reads the name as a plugin reference.
func (l driverList) allows(driver string) bool {
	for _, e := range l {
		if driver == e.written {
			return true
		}
	}
	ref, err := pluginRef(driver)
	if err != nil {
		return false
	}
	for _, e := range l {
		if ref == e.plugin {
			return true
		}
	}
	return false
}

var (
	errIDPrefix = errors.New("could also be read as a plugin ID prefix")
	errDigest   = errors.New("carries a digest, which dockerd does not resolve")
	errNotName  = errors.New("is not a plugin name")
)

// pluginRef returns the name of the plugin that dockerd's plugin store
// finds for a driver by name (daemon/pkg/plugin/store.go resolvePluginID):
// the reference normalised, tagged "latest" when it has no tag, in its
// familiar form, so "vieux/sshfs", "vieux/sshfs:latest" and
// "docker.io/vieux/sshfs:latest" are one plugin.
//
// The store also takes a plugin's full ID, or any unique prefix of it, when
// no plugin has the name; so a driver of hex digits alone may name any
// plugin, and is refused here (errIDPrefix). A name with any other
// character cannot be an ID prefix. A reference with a digest is refused,
// as the store refuses it.
func pluginRef(driver string) (string, error) {
	if hexDigits(driver) {
		return "", errIDPrefix
	}
	ref, err := reference.ParseNormalizedNamed(driver)
	if err != nil {
		return "", errNotName
	}
	if _, ok := ref.(reference.Digested); ok {
		return "", errDigest
	}
	return reference.FamiliarString(reference.TagNameOnly(ref)), nil
}

// hexDigits reports whether s is not empty and only hex digits, of either
// case: what a plugin ID prefix could be.
func hexDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}
