package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/audit"
	"github.com/sockrelay/sockrelay/internal/policy"
)

// learnedRun decides a run under learn:ci, writes its audit lines as a
// learning volume does, and learns it as the volume does.
func learnedRun(t *testing.T) (lines []byte, want []byte) {
	t.Helper()
	p, err := policy.FromSpec("learn:ci", "")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a := audit.New(&buf)
	l := policy.NewLearned()
	for _, r := range []struct{ method, target, body string }{
		{"HEAD", "/_ping", ""},
		{"GET", "/v1.41/containers/json", ""},
		{"POST", "/v1.41/containers/create?name=x", `{"Image":"a","HostConfig":{"Privileged":true,"Binds":["/srv/a\"b:/x"],"CapAdd":["NET_ADMIN"]}}`},
		{"POST", "/v1.41/containers/x/attach?stream=1", ""},
		{"GET", "/v1.41/containers/x/logs", ""},
		{"POST", "/v1.41/volumes/create", `{"Driver":"vieux/sshfs"}`},
	} {
		req := policy.Request{Method: r.method, Target: r.target, Header: http.Header{}}
		if p.BodyNeeded(r.method, r.target) {
			req.Body = []byte(r.body)
		}
		d := p.Decide(req)
		e := audit.Entry{Time: time.Now(), Volume: "ci", Policy: p.Name(), Method: r.method, Path: d.Path,
			Allow: d.Allow, Status: 200, Uses: d.Uses, Peer: &audit.Peer{PID: 1, UID: 100000}}
		a.Request(e)
		l.Add(e.Method, e.Path, e.Uses)
	}
	// A denied line, another volume's, a gRPC line and noise are skipped.
	a.Request(audit.Entry{Volume: "ci", Policy: "learn:ci", Method: "DELETE", Path: "/images/x", Status: 400, Rule: "bad-request"})
	a.Call(audit.CallEntry{Volume: "ci", Policy: "learn:ci", Method: "/moby.buildkit.v1.Control/Solve", Allow: true})
	a.Close()
	buf.WriteString("not a line of ours\n{\"level\":\"INFO\",\"msg\":\"plugin started\"}\n")
	want, err = l.File("ci")
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), want
}

// dockerdText writes each line as dockerd's text log carries a plugin's
// stdout line; dockerdJSON as its JSON log does.
func dockerdText(lines []byte) []byte {
	var b bytes.Buffer
	for l := range strings.Lines(string(lines)) {
		fmt.Fprintf(&b, "Dec 02 17:00:00 host dockerd[42]: time=\"2026-12-02T17:00:00Z\" level=info msg=%s plugin=0123abcd\n",
			strconv.Quote(strings.TrimSuffix(l, "\n")))
	}
	return b.Bytes()
}

func dockerdJSON(lines []byte) []byte {
	var b bytes.Buffer
	for l := range strings.Lines(string(lines)) {
		j, _ := json.Marshal(map[string]string{"level": "info", "msg": strings.TrimSuffix(l, "\n"), "plugin": "0123abcd"})
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestPolicySuggest: suggest over a learning volume's audit lines gives
// the very file the volume writes, in each form of the log.
func TestPolicySuggest(t *testing.T) {
	lines, want := learnedRun(t)
	for name, in := range map[string][]byte{"JSON lines": lines, "dockerd text": dockerdText(lines), "dockerd JSON": dockerdJSON(lines)} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := runPolicy([]string{"suggest"}, bytes.NewReader(in), &out, &errOut); err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			if out.String() != string(want) {
				t.Fatalf("suggested\n%s\nwant (the learning volume's)\n%s", out.String(), want)
			}
			if _, err := policy.Parse("ci", out.Bytes()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPolicySuggestChoices: -volume, -o, and what is refused or said.
func TestPolicySuggestChoices(t *testing.T) {
	lines, want := learnedRun(t)
	var other bytes.Buffer
	a := audit.New(&other)
	a.Request(audit.Entry{Volume: "dash", Policy: "read-only", Method: "GET", Path: "/containers/json", Allow: true, Status: 200})
	a.Close()
	both := append(append([]byte{}, lines...), other.Bytes()...)

	var out, errOut bytes.Buffer
	err := runPolicy([]string{"suggest"}, bytes.NewReader(both), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "more than one volume (ci, dash); choose one with -volume") {
		t.Errorf("two volumes: got %v", err)
	}
	file := filepath.Join(t.TempDir(), "ci.yaml")
	if err := runPolicy([]string{"suggest", "-volume", "ci", "-o", file}, bytes.NewReader(both), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(file); string(got) != string(want) {
		t.Errorf("-volume ci -o: got\n%s\nwant\n%s", got, want)
	}
	errOut.Reset()
	out.Reset()
	if err := runPolicy([]string{"suggest", "-volume", "dash"}, bytes.NewReader(both), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "1 lines of policy read-only say nothing of what their requests used") ||
		!strings.Contains(out.String(), `{method: GET, path: "/containers/json"}`) {
		t.Errorf("a read-only volume's lines: got\n%s\n%s", errOut.String(), out.String())
	}
	err = runPolicy([]string{"suggest", "-volume", "nope"}, bytes.NewReader(both), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `no allowed request in the log of volume "nope"`) {
		t.Errorf("no such volume: got %v", err)
	}
	if err := runPolicy([]string{"suggest", "/no/such/log"}, nil, &out, &errOut); err == nil {
		t.Error("a missing log: got no error")
	}
	if err := runPolicy([]string{"guess"}, nil, &out, &errOut); err == nil {
		t.Error("policy guess: got no error")
	}
}
