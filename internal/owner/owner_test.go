package owner_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sockrelay/sockrelay/internal/owner"
)

func TestParseSubID(t *testing.T) {
	tests := []struct {
		name      string
		in, user  string
		wantStart uint32
		wantSize  uint32
		wantErr   string // "" means no error
	}{
		{"simple", "dockremap:100000:65536\n", "dockremap", 100000, 65536, ""},
		{"no trailing newline", "dockremap:100000:65536", "dockremap", 100000, 65536, ""},
		{"first line wins", "dockremap:100000:65536\ndockremap:300000:65536\n", "dockremap", 100000, 65536, ""},
		{"other users skipped", "alice:100000:65536\nbob:165536:65536\ndockremap:231072:65536\n", "dockremap", 231072, 65536, ""},
		{"prefix of a name is another user", "dockremap2:100000:65536\ndockremap:200000:1000\n", "dockremap", 200000, 1000, ""},
		{"comments and blanks", "# comment\n\n   \n#dockremap:1:1\ndockremap:500000:10\n", "dockremap", 500000, 10, ""},
		{"surrounding spaces trimmed", "  dockremap:100000:65536  \n", "dockremap", 100000, 65536, ""},
		{"CRLF", "dockremap:100000:65536\r\n", "dockremap", 100000, 65536, ""},
		{"malformed lines of others skipped", "garbage\nalice:x:y\na:b\ndockremap:7:8\n", "dockremap", 7, 8, ""},
		{"leading zeros", "dockremap:0100000:065536\n", "dockremap", 100000, 65536, ""},
		{"largest range", "u:1:4294967294\n", "u", 1, 4294967294, ""},
		{"empty file", "", "dockremap", 0, 0, `no line for "dockremap"`},
		{"only others", "alice:100000:65536\n", "dockremap", 0, 0, `no line for "dockremap"`},
		{"only comments", "# dockremap:100000:65536\n", "dockremap", 0, 0, "no line"},
		{"bad start", "dockremap:abc:65536\n", "dockremap", 0, 0, "bad line"},
		{"bad size", "dockremap:100000:big\n", "dockremap", 0, 0, "bad line"},
		{"zero size", "dockremap:100000:0\n", "dockremap", 0, 0, "bad line"},
		{"zero start", "dockremap:0:65536\n", "dockremap", 0, 0, "bad line"},
		{"negative", "dockremap:-1:65536\n", "dockremap", 0, 0, "bad line"},
		{"overflow 32 bits", "dockremap:4294967296:1\n", "dockremap", 0, 0, "bad line"},
		{"range past the last id", "dockremap:4294967295:1\n", "dockremap", 0, 0, "bad line"},
		{"range sum overflows", "dockremap:4294967000:1000\n", "dockremap", 0, 0, "bad line"},
		{"space inside a field", "dockremap: 100000:65536\n", "dockremap", 0, 0, "bad line"},
		{"first line of the user is bad", "dockremap:x:1\ndockremap:100000:65536\n", "dockremap", 0, 0, "bad line"},
		{"too many fields are another shape", "dockremap:1:2:3\n", "dockremap", 0, 0, "no line"},
		{"too few fields", "dockremap:1\n", "dockremap", 0, 0, "no line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, size, err := owner.ParseSubID(strings.NewReader(tt.in), tt.user)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSubID: got %d, %d, %v, want error containing %q", start, size, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSubID: got %v, want nil", err)
			}
			if start != tt.wantStart || size != tt.wantSize {
				t.Errorf("ParseSubID: got %d:%d, want %d:%d", start, size, tt.wantStart, tt.wantSize)
			}
		})
	}
}

func TestParseSubIDLongLine(t *testing.T) {
	// A line beyond the scanner's limit is an error, not a silent miss.
	in := strings.Repeat("x", 100<<10) + "\ndockremap:100000:65536\n"
	if _, _, err := owner.ParseSubID(strings.NewReader(in), "dockremap"); err == nil {
		t.Errorf("ParseSubID of a 100 KiB line: got nil error, want an error")
	}
}

func FuzzParseSubID(f *testing.F) {
	f.Add("dockremap:100000:65536\n", "dockremap")
	f.Add("# c\nalice:1:2\ndockremap:0100000:065536\r\n", "dockremap")
	f.Add("u:4294967294:1\n", "u")
	f.Add(":1:1\n", "")
	f.Add("a:1:2:3\n", "a")
	f.Fuzz(func(t *testing.T, in, user string) {
		start, size, err := owner.ParseSubID(strings.NewReader(in), user)
		if err != nil {
			if start != 0 || size != 0 {
				t.Errorf("ParseSubID error %v: got %d:%d, want 0:0", err, start, size)
			}
			return
		}
		if start == 0 || size == 0 {
			t.Errorf("ParseSubID: got %d:%d, want a non-zero start and size", start, size)
		}
		if uint64(start)+uint64(size) > 1<<32-1 {
			t.Errorf("ParseSubID: got %d+%d, want the range to end below 4294967295", start, size)
		}
		if !strings.Contains(in, user+":") {
			t.Errorf("ParseSubID(%q, %q): got %d:%d, want an error: the user has no line", in, user, start, size)
		}
	})
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromSubIDFiles(t *testing.T) {
	dir := t.TempDir()
	uid := writeFile(t, filepath.Join(dir, "subuid"), "alice:1000000:65536\ndockremap:100000:65536\n")
	gid := writeFile(t, filepath.Join(dir, "subgid"), "dockremap:200000:1000\n")
	badgid := writeFile(t, filepath.Join(dir, "subgid.bad"), "dockremap:zzz:1\n")
	nogid := writeFile(t, filepath.Join(dir, "subgid.none"), "alice:1:1\n")

	rg, err := owner.FromSubIDFiles("dockremap", uid, gid)
	if err != nil {
		t.Fatalf("FromSubIDFiles: got %v, want nil", err)
	}
	want := owner.Range{Remapped: true, UID: 100000, GID: 200000, Size: 1000, Source: "subordinate ids of dockremap"}
	if rg != want {
		t.Errorf("FromSubIDFiles: got %+v, want %+v", rg, want)
	}

	errTests := []struct {
		name, user, uid, gid, want string
	}{
		{"subuid missing", "dockremap", filepath.Join(dir, "nope"), gid, "nope"},
		{"subgid missing", "dockremap", uid, filepath.Join(dir, "nope"), "nope"},
		{"subgid bad line", "dockremap", uid, badgid, "subgid.bad"},
		{"subgid lacks the user", "dockremap", uid, nogid, `no line for "dockremap"`},
		{"user unknown", "carol", uid, gid, `no line for "carol"`},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			rg, err := owner.FromSubIDFiles(tt.user, tt.uid, tt.gid)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("FromSubIDFiles: got %+v, %v, want an error containing %q", rg, err, tt.want)
			}
		})
	}
}

func TestFromRootDir(t *testing.T) {
	tests := []struct {
		dir      string
		uid, gid uint32
		ok       bool
	}{
		{"/var/lib/docker/100000.100000", 100000, 100000, true},
		{"/var/lib/docker/231072.231073", 231072, 231073, true},
		{"/data/docker/1.2/", 1, 2, true},
		{"100000.100000", 100000, 100000, true},
		{"/var/lib/docker", 0, 0, false},
		{"", 0, 0, false},
		{"/", 0, 0, false},
		{"/var/lib/docker/0.0", 0, 0, false},
		{"/var/lib/docker/100000.0", 0, 0, false},
		{"/var/lib/docker/0.100000", 0, 0, false},
		{"/var/lib/docker/100000", 0, 0, false},
		{"/var/lib/docker/100000.", 0, 0, false},
		{"/var/lib/docker/.100000", 0, 0, false},
		{"/var/lib/docker/1.2.3", 0, 0, false},
		{"/var/lib/docker/a.b", 0, 0, false},
		{"/var/lib/docker/-1.5", 0, 0, false},
		{"/var/lib/docker/4294967296.1", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			rg, err := owner.FromRootDir(tt.dir)
			if !tt.ok {
				if err == nil {
					t.Errorf("FromRootDir: got %+v, nil error, want an error", rg)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromRootDir: got %v, want nil", err)
			}
			if !rg.Remapped || rg.UID != tt.uid || rg.GID != tt.gid || rg.Size != 65536 {
				t.Errorf("FromRootDir: got %+v, want remapped %d:%d size 65536", rg, tt.uid, tt.gid)
			}
		})
	}
}

func TestRemapUserName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"default", "dockremap"},
		{"", "dockremap"},
		{"default:default", "dockremap"},
		{"alice", "alice"},
		{"alice:staff", "alice"},
		{"1000:1000", "1000"},
		{":grp", "dockremap"},
	}
	for _, tt := range tests {
		if got := owner.RemapUserName(tt.in); got != tt.want {
			t.Errorf("RemapUserName(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRangeMap(t *testing.T) {
	remap := owner.Range{Remapped: true, UID: 100000, GID: 200000, Size: 65536}
	ident := owner.Range{Size: 1<<32 - 1}
	tests := []struct {
		name       string
		r          owner.Range
		uid, gid   uint32
		wantU      uint32
		wantG      uint32
		wantFailed bool
	}{
		{"remapped root", remap, 0, 0, 100000, 200000, false},
		{"remapped user", remap, 1000, 2000, 101000, 202000, false},
		{"remapped last id", remap, 65535, 65535, 165535, 265535, false},
		{"remapped uid out of range", remap, 65536, 0, 0, 0, true},
		{"remapped gid out of range", remap, 0, 65536, 0, 0, true},
		{"identity root", ident, 0, 0, 0, 0, false},
		{"identity user", ident, 1000, 2000, 1000, 2000, false},
		{"identity large", ident, 4000000000, 4000000001, 4000000000, 4000000001, false},
		{"identity with zero size", owner.Range{}, 5, 6, 5, 6, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, g, err := tt.r.Map(tt.uid, tt.gid)
			if tt.wantFailed {
				if err == nil {
					t.Errorf("Map: got %d:%d, nil error, want an error", u, g)
				}
				return
			}
			if err != nil {
				t.Fatalf("Map: got %v, want nil", err)
			}
			if u != tt.wantU || g != tt.wantG {
				t.Errorf("Map: got %d:%d, want %d:%d", u, g, tt.wantU, tt.wantG)
			}
		})
	}
}

// fakeDaemon serves GET /info on a real Unix socket.
type fakeDaemon struct {
	sock  string
	srv   *http.Server
	calls atomic.Int64
}

func startDaemon(t *testing.T, status int, body any) *fakeDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "sr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	fd := &fakeDaemon{sock: filepath.Join(dir, "docker.sock")}
	ln, err := net.Listen("unix", fd.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		fd.calls.Add(1)
		if status != http.StatusOK {
			http.Error(w, "nope", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if s, ok := body.(string); ok {
			w.Write([]byte(s))
			return
		}
		json.NewEncoder(w).Encode(body)
	})
	fd.srv = &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fd.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		fd.stop()
		<-done
	})
	return fd
}

func (f *fakeDaemon) stop() { f.srv.Close() }

type info struct {
	SecurityOptions []string `json:"SecurityOptions"`
	DockerRootDir   string   `json:"DockerRootDir"`
}

func usernsInfo(root string) info {
	return info{SecurityOptions: []string{"name=seccomp,profile=builtin", "name=userns"}, DockerRootDir: root}
}

// subFiles writes subuid and subgid files with one dockremap line each.
func subFiles(t *testing.T, uidLine, gidLine string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	return writeFile(t, filepath.Join(dir, "subuid"), uidLine), writeFile(t, filepath.Join(dir, "subgid"), gidLine)
}

func TestResolve(t *testing.T) {
	uidF, gidF := subFiles(t, "dockremap:100000:65536\n", "dockremap:100000:65536\n")
	otherUID, otherGID := subFiles(t, "dockremap:300000:65536\n", "dockremap:300000:65536\n")
	missing := filepath.Join(t.TempDir(), "missing")
	down := filepath.Join(t.TempDir(), "down.sock")

	tests := []struct {
		name     string
		daemon   any // nil: no daemon; else the /info body
		status   int
		noSocket bool
		subuid   string
		subgid   string
		user     string
		want     owner.Range
		wantErr  bool
		check    func(t *testing.T, err error)
	}{
		{
			name:   "no userns",
			daemon: info{SecurityOptions: []string{"name=seccomp,profile=builtin"}, DockerRootDir: "/var/lib/docker"},
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: false, Size: 1<<32 - 1},
		},
		{
			name:   "no userns and no subuid files",
			daemon: info{DockerRootDir: "/var/lib/docker"},
			subuid: missing, subgid: missing,
			want: owner.Range{Remapped: false, Size: 1<<32 - 1},
		},
		{
			name:   "userns among other options in one entry",
			daemon: info{SecurityOptions: []string{"name=apparmor,name=userns"}, DockerRootDir: "/var/lib/docker/100000.100000"},
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:   "userns and subuid agree",
			daemon: usernsInfo("/var/lib/docker/100000.100000"),
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:   "userns and subuid disagree",
			daemon: usernsInfo("/var/lib/docker/100000.100000"),
			subuid: otherUID, subgid: otherGID,
			wantErr: true,
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "300000:300000") || !strings.Contains(err.Error(), "100000:100000") {
					t.Errorf("error: got %q, want both ranges named", err)
				}
			},
		},
		{
			name:   "subuid missing uses DockerRootDir",
			daemon: usernsInfo("/var/lib/docker/231072.231072"),
			subuid: missing, subgid: missing,
			want: owner.Range{Remapped: true, UID: 231072, GID: 231072, Size: 65536},
		},
		{
			name:   "odd DockerRootDir uses subuid",
			daemon: usernsInfo("/srv/docker"),
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:   "userns but neither source answers",
			daemon: usernsInfo("/srv/docker"),
			subuid: missing, subgid: missing,
			wantErr: true,
		},
		{
			name:   "remap user other than dockremap",
			daemon: usernsInfo("/var/lib/docker/500000.600000"),
			subuid: writeFile(t, filepath.Join(t.TempDir(), "u"), "dockremap:100000:65536\nalice:500000:65536\n"),
			subgid: writeFile(t, filepath.Join(t.TempDir(), "g"), "alice:600000:65536\n"),
			user:   "alice:alice",
			want:   owner.Range{Remapped: true, UID: 500000, GID: 600000, Size: 65536},
		},
		{
			name:     "daemon down uses subuid",
			noSocket: true,
			subuid:   uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:   "daemon error status uses subuid",
			daemon: info{}, status: http.StatusInternalServerError,
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:   "daemon bad JSON uses subuid",
			daemon: "{not json",
			subuid: uidF, subgid: gidF,
			want: owner.Range{Remapped: true, UID: 100000, GID: 100000, Size: 65536},
		},
		{
			name:     "daemon down and subuid missing",
			noSocket: true,
			subuid:   missing, subgid: missing,
			wantErr: true,
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "REMAP_UID") {
					t.Errorf("error: got %q, want it to say which settings to set", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &owner.Resolver{RemapUser: tt.user, SubUID: tt.subuid, SubGID: tt.subgid}
			switch {
			case tt.noSocket:
				r.DaemonSocket = down
			case tt.daemon != nil:
				st := tt.status
				if st == 0 {
					st = http.StatusOK
				}
				r.DaemonSocket = startDaemon(t, st, tt.daemon).sock
			}
			got, err := r.Resolve(t.Context())
			if tt.wantErr {
				if !errors.Is(err, owner.ErrUnknown) {
					t.Fatalf("Resolve: got %+v, %v, want an error wrapping ErrUnknown", got, err)
				}
				if tt.check != nil {
					tt.check(t, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: got %v, want nil", err)
			}
			got.Source = ""
			if got != tt.want {
				t.Errorf("Resolve: got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveNoDaemonSocketConfigured(t *testing.T) {
	uidF, gidF := subFiles(t, "dockremap:100000:65536\n", "dockremap:100000:65536\n")
	r := &owner.Resolver{SubUID: uidF, SubGID: gidF}
	got, err := r.Resolve(t.Context())
	if err != nil {
		t.Fatalf("Resolve: got %v, want nil", err)
	}
	if !got.Remapped || got.UID != 100000 {
		t.Errorf("Resolve: got %+v, want the subuid range", got)
	}
	r = &owner.Resolver{SubUID: filepath.Join(t.TempDir(), "x"), SubGID: gidF}
	if _, err := r.Resolve(t.Context()); !errors.Is(err, owner.ErrUnknown) {
		t.Errorf("Resolve: got %v, want an error wrapping ErrUnknown", err)
	}
}

func TestResolveOverrideWins(t *testing.T) {
	fd := startDaemon(t, http.StatusOK, usernsInfo("/var/lib/docker/100000.100000"))
	uidF, gidF := subFiles(t, "dockremap:100000:65536\n", "dockremap:100000:65536\n")
	over := owner.Range{Remapped: true, UID: 7000, GID: 8000, Size: 65536, Source: "settings"}
	r := &owner.Resolver{Override: &over, SubUID: uidF, SubGID: gidF, DaemonSocket: fd.sock}
	got, err := r.Resolve(t.Context())
	if err != nil {
		t.Fatalf("Resolve: got %v, want nil", err)
	}
	if got != over {
		t.Errorf("Resolve: got %+v, want %+v", got, over)
	}
	if n := fd.calls.Load(); n != 0 {
		t.Errorf("GET /info calls: got %d, want 0", n)
	}
}

func TestResolveCached(t *testing.T) {
	fd := startDaemon(t, http.StatusOK, usernsInfo("/var/lib/docker/231072.231072"))
	r := &owner.Resolver{SubUID: filepath.Join(t.TempDir(), "x"), SubGID: filepath.Join(t.TempDir(), "y"), DaemonSocket: fd.sock}
	first, err := r.Resolve(t.Context())
	if err != nil {
		t.Fatalf("Resolve: got %v, want nil", err)
	}
	fd.stop()
	for range 3 {
		again, err := r.Resolve(t.Context())
		if err != nil {
			t.Fatalf("Resolve after the daemon is gone: got %v, want nil", err)
		}
		if again != first {
			t.Errorf("Resolve after the daemon is gone: got %+v, want %+v", again, first)
		}
	}
	if n := fd.calls.Load(); n != 1 {
		t.Errorf("GET /info calls: got %d, want 1", n)
	}
}

// A failure is not remembered: once the files appear, Resolve answers.
func TestResolveErrorNotCached(t *testing.T) {
	dir := t.TempDir()
	r := &owner.Resolver{SubUID: filepath.Join(dir, "subuid"), SubGID: filepath.Join(dir, "subgid")}
	if _, err := r.Resolve(t.Context()); !errors.Is(err, owner.ErrUnknown) {
		t.Fatalf("Resolve: got %v, want an error wrapping ErrUnknown", err)
	}
	writeFile(t, r.SubUID, "dockremap:100000:65536\n")
	writeFile(t, r.SubGID, "dockremap:100000:65536\n")
	got, err := r.Resolve(t.Context())
	if err != nil || got.UID != 100000 {
		t.Errorf("Resolve: got %+v, %v, want 100000, nil", got, err)
	}
}

// A cancelled context makes GET /info fail rather than hang; the subuid
// files still answer.
func TestResolveCancelledContext(t *testing.T) {
	fd := startDaemon(t, http.StatusOK, info{})
	uidF, gidF := subFiles(t, "dockremap:100000:65536\n", "dockremap:100000:65536\n")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := &owner.Resolver{SubUID: uidF, SubGID: gidF, DaemonSocket: fd.sock}
	got, err := r.Resolve(ctx)
	if err != nil || !got.Remapped || got.UID != 100000 {
		t.Errorf("Resolve: got %+v, %v, want the subuid range, nil", got, err)
	}
}

// dockerd takes a user's subordinate ids from lines naming it by name or
// by numeric uid, the first such line of either kind.
func TestParseSubIDByUID(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		wantStart uint32
	}{
		{"uid line", "alice:1:2\n999:200000:65536\n", 200000},
		{"uid line first", "999:300000:65536\ndockremap:100000:65536\n", 300000},
		{"name line first", "dockremap:100000:65536\n999:300000:65536\n", 100000},
		{"another uid", "9999:300000:65536\ndockremap:100000:65536\n", 100000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, _, err := owner.ParseSubID(strings.NewReader(tc.in), "dockremap", "999")
			if err != nil || start != tc.wantStart {
				t.Fatalf("got %d, %v; want %d", start, err, tc.wantStart)
			}
		})
	}
	if _, _, err := owner.ParseSubID(strings.NewReader("alice:1:2\n"), "dockremap", "999"); err == nil || !strings.Contains(err.Error(), `no line for "dockremap" (uid 999)`) {
		t.Fatalf("no line: got %v", err)
	}
}

func TestLookupUID(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/bash\ndockremap2:x:998:998::/:/usr/sbin/nologin\ndockremap:x:999:999::/home/dockremap:/usr/sbin/nologin\nbroken:x:notanumber:1::/:/bin/false\n"
	for _, tc := range []struct {
		user, want string
		ok         bool
	}{
		{"dockremap", "999", true},
		{"root", "0", true},
		{"dockrema", "", false},
		{"nobody", "", false},
		{"broken", "", false},
	} {
		got, ok := owner.LookupUID(strings.NewReader(passwd), tc.user)
		if got != tc.want || ok != tc.ok {
			t.Errorf("LookupUID(%q): got %q, %v; want %q, %v", tc.user, got, ok, tc.want, tc.ok)
		}
	}
}

// The files as the plugin sees them: subuid and subgid name the remap
// user by uid, and passwd next to them says which.
func TestFromSubIDFilesByUID(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("passwd", "root:x:0:0::/root:/bin/sh\ndockremap:x:999:999::/:/bin/false\n")
	subuid := write("subuid", "999:100000:65536\n")
	subgid := write("subgid", "999:200000:65536\n")
	rg, err := owner.FromSubIDFiles("dockremap", subuid, subgid)
	if err != nil {
		t.Fatal(err)
	}
	if rg.UID != 100000 || rg.GID != 200000 || rg.Size != 65536 || !rg.Remapped {
		t.Fatalf("got %+v, want 100000:200000 size 65536", rg)
	}
}
