// Command sockrelay is the sockrelay managed volume plugin.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sockrelay/sockrelay/internal/idmap"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == idmap.HelperArg {
		idmap.RunHelper() // holds a user namespace open for a moment
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockrelay:", err)
		os.Exit(1)
	}
}
