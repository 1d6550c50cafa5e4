//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scopeLabel is the label key that stamps an object with its scope.
const scopeLabel = "sockrelay.scope"

// tenant is a scoped no-escalation volume and a client container that
// mounts it at /var/run: the docker CLI in that container is a tenant's
// CI job, as users run it.
type tenant struct {
	t      *testing.T
	scope  string // the scope's name
	vol    string
	client string // the container whose docker CLI speaks through vol

	missing map[string]string // a reference to nothing, per shape (missingLike)
	asked   map[string]result // the answers to commands with those, by command
}

// newTenant creates a volume with policy=no-escalation and scope (a name,
// or "volume") and starts a client container with it.
func newTenant(t *testing.T, scope string) *tenant {
	t.Helper()
	vol := newVolume(t, "policy=no-escalation", "scope="+scope)
	if scope == "volume" {
		scope = vol
	}
	return &tenant{t: t, scope: scope, vol: vol, client: startUser(t, vol), missing: map[string]string{}, asked: map[string]result{}}
}

// docker runs the docker CLI of the tenant's client container, bounded by
// a minute: a command that reaches what it should not may block (wait,
// attach).
func (tn *tenant) docker(args ...string) result {
	return tn.dockerIn(nil, args...)
}

func (tn *tenant) dockerIn(stdin []byte, args ...string) result {
	tn.t.Helper()
	exe := []string{"exec"}
	if stdin != nil {
		exe = append(exe, "-i")
	}
	return dockerWithin(time.Minute, stdin, append(append(exe, tn.client, "docker"), args...)...)
}

// must runs a tenant's docker command and fails the test on error.
func (tn *tenant) must(args ...string) string {
	tn.t.Helper()
	r := tn.docker(args...)
	if r.err != nil {
		tn.t.Fatalf("through %s: docker %s:\n%s", tn.scope, strings.Join(args, " "), r)
	}
	return r.stdout
}

// run starts a labelled container named name through the tenant that
// sleeps, and returns its full ID (asked of the daemon directly).
func (tn *tenant) run(name string, extra ...string) string {
	tn.t.Helper()
	tn.t.Cleanup(func() { dockerOut("rm", "-f", name) })
	args := append([]string{"run", "-d", "--name", name, "--label", label}, extra...)
	tn.must(append(args, image, "srclient", "sleep", "3600")...)
	return inspectID(tn.t, name)
}

func dockerWithin(d time.Duration, stdin []byte, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w after %v: %v", ctx.Err(), d, err)
	}
	return result{o.String(), e.String(), err}
}

func inspectID(t *testing.T, ref string) string {
	t.Helper()
	id := strings.TrimSpace(must(t, "inspect", "-f", "{{.Id}}", ref))
	if len(id) != 64 {
		t.Fatalf("ID of %s: got %q", ref, id)
	}
	return id
}

// uniquePrefix is the shortest prefix of id, of 7 digits at least, that
// no other container's or network's ID on the daemon starts with: the
// daemon resolves it to that object alone.
func uniquePrefix(t *testing.T, id string) string {
	t.Helper()
	out := must(t, "ps", "-aq", "--no-trunc")
	out += must(t, "network", "ls", "-q", "--no-trunc")
	for n := 7; n < len(id); n++ {
		clash := false
		for _, o := range strings.Fields(out) {
			if o != id && strings.HasPrefix(o, id[:n]) {
				clash = true
				break
			}
		}
		if !clash {
			return id[:n]
		}
	}
	return id
}

// refs are the spellings of one object that dockerd resolves: its name,
// its full ID and a unique ID prefix.
func refs(t *testing.T, name, id string) []string {
	return []string{name, id, uniquePrefix(t, id)}
}

// missingLike is a reference of the same shape as ref that names nothing:
// a free name, or random hex digits of the same length; the same one for
// every ref of that shape.
func (tn *tenant) missingLike(ref string) string {
	shape := "name"
	if _, err := hex.DecodeString(ref + strings.Repeat("0", len(ref)%2)); err == nil && len(ref) >= 7 {
		shape = strconv.Itoa(len(ref))
	}
	if m, ok := tn.missing[shape]; ok {
		return m
	}
	m := missingLike(tn.t, ref)
	tn.missing[shape] = m
	return m
}

func missingLike(t *testing.T, ref string) string {
	t.Helper()
	if _, err := hex.DecodeString(ref + strings.Repeat("0", len(ref)%2)); err != nil || len(ref) < 7 {
		return uniqueName(t) + "-missing"
	}
	b := make([]byte, 32)
	rand.Read(b)
	// a leading f: IDs of this run's objects will not start with it
	// often, and a clash with one is checked below.
	s := "f" + hex.EncodeToString(b)[1:len(ref)]
	if r := dockerIn(nil, "inspect", s); r.err == nil {
		t.Fatalf("random reference %s names an object", s)
	}
	return s
}

// fill puts ref in place of {} in every argument.
func fill(args []string, ref string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "{}", ref)
	}
	return out
}

// wantHidden runs args (with {} for the reference) through tn against ref,
// an object of another scope or of the host, and against a reference of
// the same shape that names nothing: both must end the same way (the
// CLI's docker rm -f exits 0 for a missing container), with the same
// message, which says the object does not exist. A tenant cannot tell
// another tenant's object from a missing one. (The callers check that
// the object is unchanged.)
func wantHidden(t *testing.T, tn *tenant, args []string, ref string) {
	t.Helper()
	missing := tn.missingLike(ref)
	got := tn.docker(fill(args, ref)...)
	key := strings.Join(fill(args, missing), "\x00")
	want, ok := tn.asked[key]
	if !ok {
		want = tn.docker(fill(args, missing)...)
		tn.asked[key] = want
	}
	cmd := "docker " + strings.Join(fill(args, ref), " ")
	if (got.err == nil) != (want.err == nil) {
		t.Errorf("through %s: %s: got\n%s\nwant it to end as for a missing object:\n%s", tn.scope, cmd, got, want)
		return
	}
	g := strings.ReplaceAll(got.stderr, ref, "REF")
	w := strings.ReplaceAll(want.stderr, missing, "REF")
	if g != w {
		t.Errorf("through %s: %s:\ngot  %q\nwant %q (what a missing object gives)", tn.scope, cmd, g, w)
	}
	if !strings.Contains(strings.ToLower(w), "no such") && !strings.Contains(w, "not found") {
		t.Errorf("through %s: %s: the message for a missing object does not say so: %q", tn.scope, cmd, w)
	}
}

// hasField says whether s is one of the whitespace-separated fields of
// out: names of this run share prefixes (-3, -31), so a substring would
// not do.
func hasField(out, s string) bool {
	for _, f := range strings.Fields(out) {
		if f == s {
			return true
		}
	}
	return false
}

// containerState is what must not change of another's container.
func containerState(t *testing.T, id string) string {
	t.Helper()
	return strings.TrimSpace(must(t, "inspect", "-f", "{{.Name}} {{.State.Running}} {{.State.Paused}} {{.State.StartedAt}} {{.RestartCount}} {{len .NetworkSettings.Networks}} {{.HostConfig.CpuShares}}", id))
}

// hiddenContainerCommands are every docker command that names a
// container ({}); each must fail as for a missing container when the
// container is another scope's or the host's. The harmless ones come
// first, then those that would change or remove it.
func hiddenContainerCommands(anet, fresh string) [][]string {
	return [][]string{
		{"inspect", "{}"},
		{"container", "inspect", "{}"},
		{"logs", "{}"},
		{"exec", "{}", "srclient", "echo", "reached"},
		{"cp", "{}:/bin/srclient", "/tmp/stolen"},
		{"cp", "/bin/srclient", "{}:/tmp/planted"},
		{"top", "{}"},
		{"stats", "--no-stream", "{}"},
		{"port", "{}"},
		{"diff", "{}"},
		{"export", "-o", "/tmp/stolen.tar", "{}"},
		{"attach", "--no-stdin", "{}"},
		{"wait", "{}"},
		{"commit", "{}", fresh + "-commit:x"},
		{"update", "--cpu-shares", "512", "{}"},
		{"rename", "{}", fresh + "-renamed"},
		{"network", "connect", anet, "{}"},
		{"network", "disconnect", "bridge", "{}"},
		{"pause", "{}"},
		{"unpause", "{}"},
		{"start", "{}"},
		{"restart", "-t", "1", "{}"},
		{"stop", "-t", "1", "{}"},
		{"kill", "{}"},
		{"rm", "-f", "{}"},
	}
}

// Two tenants A and B and the host: A's docker CLI works on A's objects,
// and every command that names B's or the host's, by name, full ID or
// unique ID prefix, fails as for a missing object and leaves it as it
// was.
func TestScopeIsolation(t *testing.T) {
	sa, sb := uniqueName(t)+"-a", uniqueName(t)+"-b"
	a, b := newTenant(t, sa), newTenant(t, sb)
	a2 := newTenant(t, sa) // a second volume of A's scope

	hostName := uniqueName(t)
	must(t, "run", "-d", "--name", hostName, "--label", label, image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", hostName) })
	hostID := inspectID(t, hostName)
	aName, bName := uniqueName(t), uniqueName(t)
	aID, bID := a.run(aName), b.run(bName)
	anet := uniqueName(t)
	t.Cleanup(func() { dockerOut("network", "rm", anet) })

	// What A does to its own objects works.
	if got := strings.TrimSpace(a.must("run", "--rm", "--label", label, image, "srclient", "echo", "run-ok")); got != "run-ok" {
		t.Errorf("docker run through A: got %q, want run-ok", got)
	}
	for _, ref := range refs(t, aName, aID) {
		if got := strings.TrimSpace(a.must("exec", ref, "srclient", "echo", "exec-ok")); got != "exec-ok" {
			t.Errorf("docker exec %s through A: got %q, want exec-ok", ref, got)
		}
		if got := strings.TrimSpace(a.must("inspect", "-f", "{{.Id}}", ref)); got != aID {
			t.Errorf("docker inspect %s through A: got %q, want %s", ref, got, aID)
		}
	}
	logName := uniqueName(t)
	t.Cleanup(func() { dockerOut("rm", "-f", logName) })
	a.must("run", "--name", logName, "--label", label, image, "srclient", "echo", "logged-by-a")
	if got := strings.TrimSpace(a.must("logs", logName)); got != "logged-by-a" {
		t.Errorf("docker logs through A: got %q, want logged-by-a", got)
	}
	a.must("cp", aName+":/bin/srclient", "/tmp/copied")
	a.must("cp", "/tmp/copied", aName+":/tmp/copied")
	a.must("exec", aName, "srclient", "stat", "/tmp/copied")
	a.must("network", "create", "--label", label, anet)
	a.must("network", "connect", anet, aName)
	if got := a.must("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", aName); !hasField(got, anet) {
		t.Errorf("after docker network connect through A: %s is on %q, want %s among them", aName, got, anet)
	}
	// A's other volume sees the same scope.
	if got := strings.TrimSpace(a2.must("exec", aName, "srclient", "echo", "shared")); got != "shared" {
		t.Errorf("docker exec through A's second volume: got %q", got)
	}

	// docker ps through A lists A's containers alone, whatever filter A
	// adds; the stamp is the scope's.
	ps := a.must("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
	for _, want := range []string{aID, logName} {
		if !hasField(ps, want) {
			t.Errorf("docker ps -a through A: %s missing from\n%s", want, ps)
		}
	}
	for _, filter := range [][]string{nil, {"--filter", "label=" + scopeLabel + "=" + sb}, {"--filter", "name=" + bName}, {"--filter", "id=" + bID}, {"--filter", "label=" + label}} {
		ps := a.must(append([]string{"ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"}, filter...)...)
		for _, other := range []string{bID, bName, hostID, hostName, b.client, a.client} {
			if hasField(ps, other) {
				t.Errorf("docker ps -a %v through A lists %s, not A's:\n%s", filter, other, ps)
			}
		}
	}
	if got := strings.TrimSpace(must(t, "inspect", "-f", `{{index .Config.Labels "`+scopeLabel+`"}}`, aID)); got != sa {
		t.Errorf("label %s of A's container: got %q, want %q", scopeLabel, got, sa)
	}
	if ps := b.must("ps", "-a", "--no-trunc", "--format", "{{.ID}}"); hasField(ps, aID) || !hasField(ps, bID) {
		t.Errorf("docker ps -a through B: got\n%s\nwant B's %s and not A's %s", ps, bID, aID)
	}

	// Every command against B's or the host's container fails as for a
	// missing one, by every spelling.
	before := map[string]string{bID: containerState(t, bID), hostID: containerState(t, hostID)}
	fresh := uniqueName(t) // names the commit and rename would take
	for _, target := range []struct{ name, id string }{{bName, bID}, {hostName, hostID}} {
		for _, ref := range refs(t, target.name, target.id) {
			for _, args := range hiddenContainerCommands(anet, fresh) {
				wantHidden(t, a, args, ref)
			}
		}
	}
	for id, was := range before {
		if now := containerState(t, id); now != was {
			t.Errorf("container %.12s changed through A: was %q, now %q", id, was, now)
		}
	}
	if out := must(t, "images", "-q", "--filter", "reference="+fresh+"-commit"); strings.TrimSpace(out) != "" {
		dockerOut("rmi", "-f", fresh+"-commit:x")
		t.Errorf("an image committed through A from another's container: %s", out)
	}
	if r := dockerIn(nil, "inspect", fresh+"-renamed"); r.err == nil {
		t.Errorf("a container renamed through A to %s-renamed", fresh)
	}
}

// References inside request bodies: A cannot mount B's or the host's
// volume, join B's network, or share a namespace or volumes with B's or
// the host's container; the same spellings of A's own objects work.
func TestScopeBodyReferences(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	avol, bvol, hvol := uniqueName(t), uniqueName(t), uniqueName(t)
	a.must("volume", "create", avol)
	b.must("volume", "create", bvol)
	must(t, "volume", "create", hvol)
	for _, v := range []string{avol, bvol, hvol} {
		t.Cleanup(func() { removeVolume(v) })
	}
	// B's container and the host's hold a secret in their volumes.
	aName, bName, hostName := uniqueName(t), uniqueName(t), uniqueName(t)
	aID, bID := a.run(aName, "-v", avol+":/d"), b.run(bName, "-v", bvol+":/d")
	b.must("cp", "/bin/srclient", bName+":/d/secret")
	must(t, "run", "-d", "--name", hostName, "--label", label, "-v", hvol+":/d", image, "srclient", "sleep", "3600")
	t.Cleanup(func() { dockerOut("rm", "-f", hostName) })
	hostID := inspectID(t, hostName)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host's"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, "cp", secret, hostName+":/d/secret")
	anet, bnet, hnet := uniqueName(t), uniqueName(t), uniqueName(t)
	a.must("network", "create", "--label", label, anet)
	b.must("network", "create", "--label", label, bnet)
	must(t, "network", "create", "--label", label, hnet)
	for _, n := range []string{anet, bnet, hnet} {
		t.Cleanup(func() { dockerOut("network", "rm", n) })
	}
	bnetID := strings.TrimSpace(must(t, "network", "inspect", "-f", "{{.Id}}", bnet))
	hnetID := strings.TrimSpace(must(t, "network", "inspect", "-f", "{{.Id}}", hnet))

	run := func(args ...string) []string {
		return append(append([]string{"run", "--rm", "--label", label}, args...), image, "srclient", "echo", "reached")
	}
	// A's own, by every spelling: these work. (no-escalation refuses
	// --volumes-from whatever it names.)
	for _, args := range [][]string{
		run("-v", avol+":/d"),
		run("--mount", "type=volume,src="+avol+",dst=/d"),
		run("--network", anet),
		run("--network", "container:"+aName),
		run("--network", "container:"+aID),
		run("--pid", "container:"+aName),
		run("--link", aName+":peer"),
	} {
		if r := a.docker(args...); r.err != nil || strings.TrimSpace(r.stdout) != "reached" {
			t.Errorf("through A: docker %s: got\n%s\nwant reached", strings.Join(args, " "), r)
		}
	}
	// B's and the host's, by every spelling: refused as missing.
	for _, target := range []struct{ name, id string }{{bName, bID}, {hostName, hostID}} {
		for _, ref := range refs(t, target.name, target.id) {
			for _, args := range [][]string{
				run("--volumes-from", "{}"),
				run("--volumes-from", "{}:ro"),
				run("--network", "container:{}"),
				run("--pid", "container:{}"),
				run("--ipc", "container:{}"),
				run("--link", "{}:peer"),
			} {
				wantHidden(t, a, args, ref)
			}
		}
	}
	for _, target := range []struct{ name, id string }{{bnet, bnetID}, {hnet, hnetID}} {
		for _, ref := range refs(t, target.name, target.id) {
			for _, args := range [][]string{
				run("--network", "{}"),
				{"network", "connect", "{}", aName},
				{"network", "inspect", "{}"},
				{"network", "rm", "{}"},
			} {
				wantHidden(t, a, args, ref)
			}
		}
	}
	if got := a.must("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", aName); hasField(got, bnet) || hasField(got, hnet) {
		t.Errorf("A's container joined %q", got)
	}
	// Another's volume: never mounted, by Binds or Mounts, and never
	// created anew under its name.
	for _, v := range []string{bvol, hvol} {
		for _, args := range [][]string{
			{"run", "--rm", "--label", label, "-v", v + ":/d", image, "srclient", "stat", "/d/secret"},
			{"run", "--rm", "--label", label, "-v", v + ":/d:ro", image, "srclient", "stat", "/d/secret"},
			{"run", "--rm", "--label", label, "--mount", "type=volume,src=" + v + ",dst=/d", image, "srclient", "stat", "/d/secret"},
			{"run", "--rm", "--label", label, "--mount", "type=volume,src=" + v + ",dst=/d,volume-nocopy", image, "srclient", "stat", "/d/secret"},
			{"create", "--label", label, "-v", v + ":/d", image, "srclient", "stat", "/d/secret"},
		} {
			if r := a.docker(args...); r.err == nil {
				t.Errorf("through A: docker %s: got\n%s\nwant refused", strings.Join(args, " "), r)
			}
		}
		wantHidden(t, a, []string{"volume", "inspect", "{}"}, v)
		wantHidden(t, a, []string{"volume", "rm", "{}"}, v)
	}
	if r := a.docker("run", "--rm", "--label", label, "-v", avol+":/d", image, "srclient", "stat", "/d/secret"); r.err == nil {
		t.Errorf("A's own volume holds B's secret: %s", r)
	}
	// Nothing but their owners uses B's or the host's volume, and they
	// are still there.
	for v, owner := range map[string]string{bvol: bID, hvol: hostID} {
		if out := strings.Fields(must(t, "ps", "-aq", "--no-trunc", "--filter", "volume="+v)); len(out) != 1 || out[0] != owner {
			t.Errorf("containers that use volume %s: got %v, want only %.12s", v, out, owner)
		}
		must(t, "volume", "inspect", v)
	}
}

// Lists and streams through A show A's objects alone: networks, volumes,
// events.
func TestScopeLists(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	anet, bnet, hnet := uniqueName(t), uniqueName(t), uniqueName(t)
	avol, bvol, hvol := uniqueName(t), uniqueName(t), uniqueName(t)
	for _, n := range []string{anet, bnet, hnet} {
		t.Cleanup(func() { dockerOut("network", "rm", n) })
	}
	for _, v := range []string{avol, bvol, hvol} {
		t.Cleanup(func() { removeVolume(v) })
	}
	since := strconv.FormatInt(time.Now().Unix()-1, 10)
	a.must("network", "create", "--label", label, anet)
	b.must("network", "create", "--label", label, bnet)
	must(t, "network", "create", "--label", label, hnet)
	a.must("volume", "create", avol)
	b.must("volume", "create", bvol)
	must(t, "volume", "create", hvol)
	aName, bName, hName := uniqueName(t), uniqueName(t), uniqueName(t)
	for _, n := range []string{aName, bName, hName} {
		t.Cleanup(func() { dockerOut("rm", "-f", n) })
	}
	a.must("run", "--name", aName, "--label", label, image, "srclient", "echo")
	b.must("run", "--name", bName, "--label", label, image, "srclient", "echo")
	must(t, "run", "--name", hName, "--label", label, image, "srclient", "echo")
	until := strconv.FormatInt(time.Now().Unix()+1, 10)

	check := func(what string, got string, mine []string, others ...string) {
		t.Helper()
		for _, m := range mine {
			if !hasField(got, m) {
				t.Errorf("%s through A: %s missing from\n%s", what, m, got)
			}
		}
		for _, o := range others {
			if hasField(got, o) {
				t.Errorf("%s through A: shows %s, not A's:\n%s", what, o, got)
			}
		}
	}
	check("docker network ls", a.must("network", "ls", "--no-trunc"), []string{anet}, bnet, hnet)
	check("docker network ls --filter label", a.must("network", "ls", "--filter", "label="+scopeLabel+"="+b.scope), nil, bnet, hnet, anet)
	check("docker volume ls", a.must("volume", "ls"), []string{avol}, bvol, hvol, a.vol, b.vol)
	check("docker volume ls --filter label", a.must("volume", "ls", "--filter", "label="+scopeLabel+"="+b.scope), nil, bvol, hvol, avol)
	// docker system df takes no filter: a scope may refuse it, saying
	// so, rather than show A's objects alone.
	if r := a.docker("system", "df", "-v"); r.err != nil {
		if !strings.Contains(r.stderr, "sockrelay: scope: GET /system/df is not allowed") {
			t.Errorf("docker system df -v through A: got\n%s\nwant A's objects alone, or the scope's refusal", r)
		}
	} else {
		check("docker system df -v", r.stdout, []string{avol}, bvol, hvol, bName, hName)
	}
	// dockerd's label filter on events matches the events that carry
	// their object's labels, a container's; a network's or a volume's
	// carry none, so A may not see its own, and must see no other's.
	check("docker events", a.must("events", "--since", since, "--until", until, "--format", "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}"), []string{aName}, bName, hName, bnet, hnet, bvol, hvol)
	check("docker events --filter", a.must("events", "--since", since, "--until", until, "--filter", "container="+bName, "--format", "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}"), nil, bName)
}

// docker compose up and down through A: A's project comes up and goes
// down, B sees none of it, and B's down of A's project name touches
// nothing of A's.
func TestScopeCompose(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	project := strings.ReplaceAll(uniqueName(t), ".", "-")
	file := []byte(fmt.Sprintf(`services:
  app:
    image: %s
    pull_policy: never
    command: ["srclient", "sleep", "3600"]
    labels: ["%s"]
networks:
  default:
    labels: ["%s"]
`, image, label, label))
	t.Cleanup(func() { dockerOut("network", "rm", project+"_default") })
	compose := func(tn *tenant, args ...string) result {
		return tn.dockerIn(file, append([]string{"compose", "-f", "-", "-p", project}, args...)...)
	}
	if r := compose(a, "up", "-d"); r.err != nil {
		t.Fatalf("docker compose up through A:\n%s", r)
	}
	ctr := project + "-app-1"
	if ps := a.must("ps", "--format", "{{.Names}}"); !hasField(ps, ctr) {
		t.Fatalf("docker ps through A after compose up: got\n%s\nwant %s", ps, ctr)
	}
	if got := strings.TrimSpace(must(t, "inspect", "-f", `{{index .Config.Labels "`+scopeLabel+`"}}`, ctr)); got != a.scope {
		t.Errorf("label %s of A's compose container: got %q, want %q", scopeLabel, got, a.scope)
	}
	if ps := b.must("ps", "-a", "--format", "{{.Names}}"); hasField(ps, ctr) {
		t.Errorf("docker ps through B shows A's compose container:\n%s", ps)
	}
	if r := compose(b, "ps", "-a"); hasField(r.stdout, ctr) {
		t.Errorf("docker compose ps through B shows A's container:\n%s", r)
	}
	// B takes down a project of the same name: it has none.
	compose(b, "down", "-t", "1")
	if got := strings.TrimSpace(must(t, "inspect", "-f", "{{.State.Running}}", ctr)); got != "true" {
		t.Fatalf("A's compose container after B's compose down: running %s", got)
	}
	must(t, "network", "inspect", project+"_default")
	if r := compose(a, "down", "-t", "1"); r.err != nil {
		t.Fatalf("docker compose down through A:\n%s", r)
	}
	if r := dockerIn(nil, "inspect", ctr); r.err == nil {
		t.Errorf("docker compose down through A left %s", ctr)
	}
	if r := dockerIn(nil, "network", "inspect", project+"_default"); r.err == nil {
		t.Errorf("docker compose down through A left its network")
	}
}

// A label of the scope's key in A's own request gives nothing away: the
// object is A's, or the request is refused; B never sees it.
func TestScopeLabelForged(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	name, net, vol := uniqueName(t), uniqueName(t), uniqueName(t)
	t.Cleanup(func() {
		dockerOut("rm", "-f", name)
		dockerOut("network", "rm", net)
		removeVolume(vol)
	})
	forged := scopeLabel + "=" + b.scope
	for _, c := range []struct {
		kind string
		args []string
		get  []string
	}{
		{"container", []string{"create", "--name", name, "--label", label, "--label", forged, image, "srclient", "sleep", "1"}, []string{"inspect", "-f", `{{index .Config.Labels "` + scopeLabel + `"}}`, name}},
		{"network", []string{"network", "create", "--label", label, "--label", forged, net}, []string{"network", "inspect", "-f", `{{index .Labels "` + scopeLabel + `"}}`, net}},
		{"volume", []string{"volume", "create", "--label", forged, vol}, []string{"volume", "inspect", "-f", `{{index .Labels "` + scopeLabel + `"}}`, vol}},
	} {
		if r := a.docker(c.args...); r.err != nil {
			continue // refused: fine
		}
		if got := strings.TrimSpace(must(t, c.get...)); got != a.scope {
			t.Errorf("%s created through A with %s: its %s is %q, want %q", c.kind, forged, scopeLabel, got, a.scope)
		}
		if r := b.docker(c.get...); r.err == nil {
			t.Errorf("%s created through A with %s: B inspects it:\n%s", c.kind, forged, r)
		}
	}
	for _, what := range [][]string{{"ps", "-a"}, {"network", "ls"}, {"volume", "ls"}} {
		if out := b.must(what...); hasField(out, name) || hasField(out, net) || hasField(out, vol) {
			t.Errorf("docker %s through B shows A's forged objects:\n%s", strings.Join(what, " "), out)
		}
	}
}

// A name freed by A and taken by B names B's container: A's reference
// to it is refused as missing, and B's container is left alone.
func TestScopeNameReused(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	name := uniqueName(t)
	a.run(name)
	if got := strings.TrimSpace(a.must("inspect", "-f", "{{.Name}}", name)); got != "/"+name {
		t.Fatalf("A's inspect of its own %s: got %q", name, got)
	}
	a.must("rm", "-f", name)
	bID := b.run(name)
	was := containerState(t, bID)
	for _, args := range [][]string{{"inspect", "{}"}, {"exec", "{}", "srclient", "echo", "reached"}, {"logs", "{}"}, {"rm", "-f", "{}"}} {
		wantHidden(t, a, args, name)
	}
	if now := containerState(t, bID); now != was {
		t.Errorf("B's %s changed through A: was %q, now %q", name, was, now)
	}
}

// Images are shared and read-only across scopes: A inspects and runs the
// host's image, and cannot remove or retag it.
func TestScopeImagesShared(t *testing.T) {
	a := newTenant(t, uniqueName(t)+"-a")
	tag := uniqueName(t) + ":host"
	must(t, "tag", image, tag)
	t.Cleanup(func() { dockerOut("rmi", tag) })
	a.must("image", "inspect", tag)
	for _, args := range [][]string{{"rmi", tag}, {"rmi", "-f", tag}, {"tag", tag, uniqueName(t) + ":retagged"}} {
		if r := a.docker(args...); r.err == nil {
			t.Errorf("through A: docker %s: succeeded, want refused", strings.Join(args, " "))
		}
	}
	must(t, "image", "inspect", tag)
	if out := must(t, "images", "-q", "--filter", "reference=*:retagged"); strings.TrimSpace(out) != "" {
		t.Errorf("an image retagged through A: %s", out)
	}
}

// scope=volume is the volume's name, and another volume may join it by
// that name; docker volume inspect shows the scope and its object count.
func TestScopeVolume(t *testing.T) {
	v := newTenant(t, "volume")
	w := newTenant(t, v.vol)
	name, net := uniqueName(t), uniqueName(t)
	t.Cleanup(func() { dockerOut("network", "rm", net) })
	id := v.run(name)
	v.must("network", "create", "--label", label, net)
	if got := strings.TrimSpace(must(t, "inspect", "-f", `{{index .Config.Labels "`+scopeLabel+`"}}`, id)); got != v.vol {
		t.Errorf("label %s of a container of scope=volume: got %q, want the volume's name %q", scopeLabel, got, v.vol)
	}
	if got := strings.TrimSpace(w.must("exec", name, "srclient", "echo", "joined")); got != "joined" {
		t.Errorf("docker exec through a volume of scope=%s: got %q", v.vol, got)
	}
	count := func(vol string) float64 {
		t.Helper()
		st := status(t, vol)
		if st["scope"] != v.vol {
			t.Errorf("Status of %s: scope %v, want %q (all: %v)", vol, st["scope"], v.vol, st)
		}
		n, ok := st["scope_objects"].(float64)
		if !ok {
			t.Fatalf("Status of %s: no count of the scope's objects (scope_objects): %v", vol, st)
		}
		return n
	}
	eventually(t, 10*time.Second, func() error {
		if n := count(v.vol); n < 2 {
			return fmt.Errorf("scope_objects of %s: got %v, want at least 2 (a container, a network)", v.vol, n)
		}
		return nil
	})
	n := count(w.vol)
	v.must("rm", "-f", name)
	v.must("network", "rm", net)
	eventually(t, 10*time.Second, func() error {
		if m := count(w.vol); m != n-2 {
			return fmt.Errorf("scope_objects of %s after removing 2 objects: got %v, want %v", w.vol, m, n-2)
		}
		return nil
	})
}

// api sends one Engine API request through the tenant's socket (srclient
// http) and returns the status code and the body.
func (tn *tenant) api(method, path string, body ...string) (int, string) {
	tn.t.Helper()
	r := dockerWithin(time.Minute, nil, append([]string{"exec", tn.client, "srclient", "http", "/var/run/docker.sock", method, path}, body...)...)
	code, rest, _ := strings.Cut(strings.TrimSpace(r.stdout), " ")
	n, err := strconv.Atoi(code)
	if r.err != nil || err != nil {
		tn.t.Fatalf("through %s: %s %s: %s", tn.scope, method, path, r)
	}
	return n, rest
}

// Exec instances carry no labels: one made through A is A's alone. B
// cannot inspect, start or resize it, and gets what a missing one gives;
// A can, and it has not run before A starts it.
func TestScopeExec(t *testing.T) {
	a, b := newTenant(t, uniqueName(t)+"-a"), newTenant(t, uniqueName(t)+"-b")
	name := uniqueName(t)
	a.run(name)
	code, out := a.api("POST", "/containers/"+name+"/exec", `{"Cmd":["srclient","echo","exec-a"],"AttachStdout":true}`)
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(out), &created); code != 201 || err != nil || len(created.ID) != 64 {
		t.Fatalf("exec create through A: got %d %s, want 201 and an ID", code, out)
	}
	id := created.ID
	missing := missingLike(t, id)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/exec/%s/json", ""},
		{"POST", "/exec/%s/resize?h=10&w=10", ""},
		{"POST", "/exec/%s/start", `{"Detach":true}`},
	} {
		var body []string
		if c.body != "" {
			body = []string{c.body}
		}
		for _, ref := range []string{id, id[:12]} {
			gotCode, got := b.api(c.method, fmt.Sprintf(c.path, ref), body...)
			m := missing[:len(ref)]
			wantCode, want := b.api(c.method, fmt.Sprintf(c.path, m), body...)
			got, want = strings.ReplaceAll(got, ref, "REF"), strings.ReplaceAll(want, m, "REF")
			if gotCode != wantCode || got != want {
				t.Errorf("through B: %s %s of A's exec: got %d %s, want %d %s (what a missing one gives)", c.method, fmt.Sprintf(c.path, ref), gotCode, got, wantCode, want)
			}
		}
	}
	code, out = a.api("GET", "/exec/"+id+"/json")
	var st struct {
		Running  bool
		ExitCode *int
	}
	if err := json.Unmarshal([]byte(out), &st); code != 200 || err != nil || st.Running || st.ExitCode != nil {
		t.Errorf("A's exec after B's attempts: got %d %s, want 200, never started", code, out)
	}
	if code, out := a.api("POST", "/exec/"+id+"/start", `{"Detach":true}`); code != 200 {
		t.Errorf("exec start through A: got %d %s, want 200", code, out)
	}
}
