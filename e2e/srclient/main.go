// Command srclient is the end-to-end suite's client inside test
// containers: a static binary with small, scriptable commands.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const usage = `usage: srclient COMMAND [ARGS]
  ping SOCKET         GET /_ping through SOCKET; prints the status code and body
  http SOCKET METHOD PATH [JSON]
                      send METHOD PATH (with a JSON body) through SOCKET; prints the
                      status code and the body
  cat                 copy stdin to stdout
  echo WORDS...       print WORDS
  sleep SECONDS       sleep
  attack DIR SOCKET   try to delete, replace, chmod, chown, touch or set xattrs on SOCKET, or
                      plant files next to it; prints each result
  mountopts PATH      print the mount options of the mount at PATH
  stat PATH           print the owner and mode of PATH
  ino PATH            print the device and inode of PATH
  load SOCKET N       open N connections through SOCKET at once; each pings,
                      waits until all N have answered, pings again; prints
                      "ok N" or the failures
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "srclient:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "ping":
		if len(args) != 2 {
			return errors.New(usage)
		}
		return ping(args[1])
	case "http":
		if len(args) != 4 && len(args) != 5 {
			return errors.New(usage)
		}
		return httpCall(args[1], args[2], args[3], args[4:])
	case "cat":
		_, err := io.Copy(os.Stdout, os.Stdin)
		return err
	case "echo":
		fmt.Println(strings.Join(args[1:], " "))
		return nil
	case "sleep":
		d, err := time.ParseDuration(args[1] + "s")
		if err != nil {
			return err
		}
		time.Sleep(d)
		return nil
	case "attack":
		if len(args) != 3 {
			return errors.New(usage)
		}
		attack(args[1], args[2])
		return nil
	case "mountopts":
		if len(args) != 2 {
			return errors.New(usage)
		}
		return mountOpts(args[1])
	case "stat":
		var st syscall.Stat_t
		if err := syscall.Lstat(args[1], &st); err != nil {
			return err
		}
		fmt.Printf("%d:%d %04o\n", st.Uid, st.Gid, st.Mode&0o7777)
		return nil
	case "load":
		var n int
		if len(args) != 3 {
			return errors.New(usage)
		}
		if _, err := fmt.Sscan(args[2], &n); err != nil || n < 1 {
			return errors.New(usage)
		}
		return load(args[1], n)
	case "ino":
		var st syscall.Stat_t
		if err := syscall.Stat(args[1], &st); err != nil {
			return err
		}
		fmt.Printf("%d:%d\n", st.Dev, st.Ino)
		return nil
	}
	return errors.New(usage)
}

func ping(sock string) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(bufio.NewReader(io.LimitReader(resp.Body, 1024)))
	fmt.Printf("%d %s\n", resp.StatusCode, b)
	return nil
}

// httpCall sends one request through sock, with body[0] as a JSON body
// if given, and prints the status code and up to 64 KiB of the answer.
func httpCall(sock, method, path string, body []string) error {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	var rd io.Reader
	if len(body) > 0 {
		rd = strings.NewReader(body[0])
	}
	req, err := http.NewRequest(method, "http://docker"+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Printf("%d %s\n", resp.StatusCode, b)
	return nil
}

// load holds n connections open through sock at the same time, each
// with a kept-alive ping before and after all of them answered once.
func load(sock string, n int) error {
	var ready, done sync.WaitGroup
	ready.Add(n)
	start := make(chan struct{})
	errs := make(chan error, n)
	pingOn := func(c net.Conn, br *bufio.Reader) error {
		if _, err := io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || string(b) != "OK" {
			return fmt.Errorf("got %s %q", resp.Status, b)
		}
		return nil
	}
	for i := 0; i < n; i++ {
		done.Go(func() {
			c, err := net.DialTimeout("unix", sock, 30*time.Second)
			if err != nil {
				ready.Done()
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			br := bufio.NewReader(c)
			err = pingOn(c, br)
			ready.Done()
			if err != nil {
				errs <- fmt.Errorf("connection %d, first ping: %w", i, err)
				return
			}
			<-start
			if err := pingOn(c, br); err != nil {
				errs <- fmt.Errorf("connection %d, second ping: %w", i, err)
			}
		})
	}
	ready.Wait()
	close(start)
	done.Wait()
	close(errs)
	var failed []string
	for err := range errs {
		failed = append(failed, err.Error())
	}
	if k := len(failed); k > 0 {
		if k > 5 {
			failed = append(failed[:5], fmt.Sprintf("and %d more", k-5))
		}
		return fmt.Errorf("%d of %d connections failed: %s", k, n, strings.Join(failed, "; "))
	}
	fmt.Println("ok", n)
	return nil
}

// attack tries what a hostile container would do to its socket. Each line
// is "NAME ok" when the attempt worked, or "NAME denied: ERR".
func attack(dir, sock string) {
	p := filepath.Join(dir, sock)
	try := func(name string, err error) {
		if err == nil {
			fmt.Println(name, "ok")
			return
		}
		fmt.Println(name, "denied:", err)
	}
	try("unlink", os.Remove(p))
	try("rename", os.Rename(p, filepath.Join(dir, "moved")))
	try("symlink", os.Symlink("/etc/passwd", filepath.Join(dir, "planted")))
	try("hardlink", os.Link(p, filepath.Join(dir, "hard")))
	try("mkfifo", syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	try("create", os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o600))
	try("chmod-dir", os.Chmod(dir, 0o777))
	try("chown-dir", os.Chown(dir, 0, 0))
	try("chmod", os.Chmod(p, 0o666))
	try("chown", os.Chown(p, 1000, 1000))
	try("utimes", os.Chtimes(p, time.Unix(0, 0), time.Unix(0, 0)))
	try("setxattr", syscall.Setxattr(p, "user.sockrelay", []byte("x"), 0))
	try("setxattr-trusted", syscall.Setxattr(p, "trusted.sockrelay", []byte("x"), 0))
}

// mountOpts prints the per-mount options of the mount at path (the
// fourth field from the end of its /proc/self/mountinfo line).
func mountOpts(path string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	found := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path {
			found = f[5] // the last one listed is the one on top
		}
	}
	if found == "" {
		return fmt.Errorf("%s is not a mount point", path)
	}
	fmt.Println(found)
	return nil
}
