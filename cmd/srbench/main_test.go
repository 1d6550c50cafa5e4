package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad flags fail before anything starts. A whole run is tested in
// internal/bench (make bench-test).
func TestRunBadFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-bytes", "lots"}, "-bytes"},
		{[]string{"-sockrelay", "/nonexistent/sockrelay"}, "run make build first"},
		{[]string{"-sockrelay", "main.go", "-socat", "/nonexistent/socat"}, "apt-get install socat"},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), c.args, noEnv, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q): got %v, want an error containing %q", c.args, err, c.want)
		}
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, noEnv, &out, &errOut); err != nil || !strings.Contains(errOut.String(), "-quick") {
		t.Errorf("run(-h): got %v and %q, want the usage and no error", err, errOut.String())
	}
}
