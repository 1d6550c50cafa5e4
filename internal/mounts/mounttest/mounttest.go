// Package mounttest runs a test binary that makes mounts in a mount
// namespace of its own, so that a test that fails half-way leaves no
// mount behind on the machine that runs it.
package mounttest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// envMarker is set in the re-executed test binary.
const envMarker = "SOCKRELAY_TEST_MOUNTNS"

// Main runs m. As root it first re-executes the test binary with the
// same arguments in a new mount namespace whose mounts are all private
// (os/exec makes / private after unshare); without root, mounts cannot
// be made anyway and the tests that need them skip.
func Main(m *testing.M) {
	if os.Geteuid() != 0 || os.Getenv(envMarker) != "" {
		os.Exit(m.Run())
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), envMarker+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		os.Exit(ee.ExitCode())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mounttest: run the tests in a mount namespace of their own:", err)
		os.Exit(2)
	}
	os.Exit(0)
}
