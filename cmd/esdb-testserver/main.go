// Command esdb-testserver runs the EventStoreDB protocol test server of
// package events/esdb/testserver as its own process, so that several
// processes (imsync nodes, another client) can share one store in tests.
//
//	esdb-testserver --data DIR [--listen 127.0.0.1:2113]
//	esdb-testserver --memory [--listen 127.0.0.1:2113]
//
// It prints the connection string it serves (esdb://HOST:PORT?tls=false)
// on standard output and stops cleanly on SIGINT or SIGTERM. It is test
// support, not a product: see docs/esdb-testserver.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/imsync/imsync/events/esdb/testserver"
)

const usage = `esdb-testserver — EventStoreDB gRPC protocol subset over imsync's embedded store (test support)

  esdb-testserver --data DIR [--listen 127.0.0.1:2113]
  esdb-testserver --memory   [--listen 127.0.0.1:2113]

Prints the connection string (esdb://HOST:PORT?tls=false) and serves until SIGINT or SIGTERM.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "esdb-testserver:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("esdb-testserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	listen := fs.String("listen", "127.0.0.1:2113", "TCP address to serve on")
	data := fs.String("data", "", "directory of the embedded store (created if missing)")
	memory := fs.Bool("memory", false, "keep the store in memory (lost on exit)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if (*data == "") == !*memory {
		fs.Usage()
		return fmt.Errorf("%w: give exactly one of --data DIR and --memory", errUsage)
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := testserver.Start(ctx, testserver.Options{Listen: *listen, Dir: *data, Logger: logger})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, srv.URL())
	<-ctx.Done()
	logger.Info("stopping")
	return srv.Close()
}
