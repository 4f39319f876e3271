package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
)

// runServe runs the whole product in one process: embedded store, cluster
// member with the grains, QUIC gateway. It stops cleanly on SIGINT/SIGTERM.
func runServe(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory (created on first use)")
	listen := fs.String("listen", "127.0.0.1:7400", "UDP address to listen on")
	verbose := fs.Bool("v", false, "log connections")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: serve: %v", errUsage, err)
	}
	if *data == "" {
		return fmt.Errorf("%w: serve needs --data DIR", errUsage)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	store, err := events.Open(storeDir(*data), events.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()
	svc, err := actors.Start(actors.Config{Store: store, Logger: logger})
	if err != nil {
		return err
	}
	defer svc.Close()
	key, err := transport.LoadOrCreateKey(*data)
	if err != nil {
		return err
	}
	cert, err := transport.LoadOrCreateCert(*data)
	if err != nil {
		return err
	}
	srv, err := transport.NewServer(transport.Config{Service: svc, Key: key, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Logger: logger})
	if err != nil {
		return err
	}
	if err := srv.Listen(*listen); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*data)
	fmt.Fprintf(out, "imsync listening on %s (QUIC, ALPN %s)\ncertificate: %s\n", srv.Addr(), transport.ALPN, filepath.Join(abs, transport.CertFile))
	<-ctx.Done()
	fmt.Fprintln(out, "imsync stopping")
	return srv.Close()
}

// runToken mints a device token with the server's key.
func runToken(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server")
	user := fs.String("user", "", "user id")
	device := fs.String("device", "", "device id")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: token: %v", errUsage, err)
	}
	if *data == "" || *user == "" || *device == "" {
		return fmt.Errorf("%w: token needs --data, --user and --device", errUsage)
	}
	key, err := transport.LoadOrCreateKey(*data)
	if err != nil {
		return err
	}
	tok, err := key.Mint(*user, *device, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
