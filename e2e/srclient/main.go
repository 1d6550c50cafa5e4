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
	"syscall"
	"time"
)

const usage = `usage: srclient COMMAND [ARGS]
  ping SOCKET         GET /_ping through SOCKET; prints the status code and body
  cat                 copy stdin to stdout
  echo WORDS...       print WORDS
  sleep SECONDS       sleep
  attack DIR SOCKET   try to delete, replace or plant files next to SOCKET; prints each result
  stat PATH           print the owner and mode of PATH
  ino PATH            print the device and inode of PATH
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
	case "stat":
		var st syscall.Stat_t
		if err := syscall.Lstat(args[1], &st); err != nil {
			return err
		}
		fmt.Printf("%d:%d %04o\n", st.Uid, st.Gid, st.Mode&0o7777)
		return nil
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
}
