package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/transport"
)

// runServe runs the whole product in one process: the event store (embedded,
// or an EventStoreDB/KurrentDB server with --store), a cluster member with
// the grains, the QUIC gateway. It stops cleanly on SIGINT/SIGTERM.
func runServe(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory (created on first use)")
	storeURL := fs.String("store", os.Getenv("IMSYNC_STORE"), "EventStoreDB connection string (esdb://HOST:2113?tls=false, esdb+discover://...) instead of the embedded store in DIR/events")
	listen := fs.String("listen", "127.0.0.1:7400", "UDP address to listen on")
	verbose := fs.Bool("v", false, "log connections")
	certFile := fs.String("cert", "", "TLS certificate (PEM) to serve instead of the self-signed one")
	keyFile := fs.String("key", "", "its private key (PEM)")
	opsAddr := fs.String("ops", "", "serve /metrics, /healthz, /readyz and /debug/pprof/ over HTTP on this TCP address, e.g. 127.0.0.1:9400 (off unless set; loopback only unless --ops-public)")
	opsPublic := fs.Bool("ops-public", false, "allow --ops on a non-loopback address (the endpoints are not authenticated)")
	actorMetrics := fs.Bool("ops-actor-metrics", true, "with --ops, also measure protoactor-go's actor metrics (costs CPU on every actor message; see docs/operations.md)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error (-v is debug)")
	drainTimeout := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM or SIGINT, how long devices get to finish their calls and fanout to settle before the store closes")
	var allow dataDirAllow
	fs.BoolVar(&allow.store, "new-store", false, "create an empty event store in a data directory that a server used before")
	fs.BoolVar(&allow.key, "new-key", false, "create a new token key when the data directory's is missing (every token must be reissued)")
	fs.BoolVar(&allow.cert, "new-cert", false, "create a new self-signed certificate when the data directory's is missing (clients must pin it)")
	retention := retentionFlag(30 * 24 * time.Hour)
	if env := os.Getenv("IMSYNC_SYNC_RETENTION"); env != "" {
		if err := retention.Set(env); err != nil {
			return fmt.Errorf("%w: IMSYNC_SYNC_RETENTION: %v", errUsage, err)
		}
	}
	fs.Var(&retention, "sync-retention", "how long sync-timeline entries are kept, e.g. 30d or 72h; 0 keeps them for ever (or IMSYNC_SYNC_RETENTION)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: serve: %v", errUsage, err)
	}
	if *data == "" {
		return fmt.Errorf("%w: serve needs --data DIR", errUsage)
	}
	if (*certFile == "") != (*keyFile == "") {
		return fmt.Errorf("%w: serve takes --cert and --key together", errUsage)
	}
	var tcfg transport.Config
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		tcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if *drainTimeout <= 0 {
		return fmt.Errorf("%w: --drain-timeout must be positive", errUsage)
	}
	if err := checkOpsAddr(*opsAddr, *opsPublic); err != nil {
		return err
	}
	logger, err := newLogger(os.Stderr, *logFormat, *logLevel, *verbose)
	if err != nil {
		return err
	}
	if allow != (dataDirAllow{}) {
		if err := createAllowed(*data, allow, tcfg.TLS != nil, logger); err != nil {
			return err
		}
	}

	acfg := actors.Config{SyncRetention: time.Duration(retention)}
	if err := opsConfig(*opsAddr, *actorMetrics, &tcfg, &acfg); err != nil {
		return err
	}
	st, err := startStackWith(*data, *storeURL, *listen, logger, tcfg, acfg)
	if err != nil {
		return err
	}
	defer st.close()
	srv := st.srv
	if *opsAddr != "" {
		o, err := st.startOps(*opsAddr, logger)
		if err != nil {
			return err
		}
		defer o.Close()
		fmt.Fprintf(out, "operations on http://%s/metrics\n", o.Addr())
	}
	certPath := *certFile
	if certPath == "" {
		abs, _ := filepath.Abs(*data)
		certPath = filepath.Join(abs, transport.CertFile)
	}
	fmt.Fprintf(out, "imsync listening on %s (QUIC, ALPN %s)\ncertificate: %s\n", srv.Addr(), transport.ALPN, certPath)
	<-ctx.Done()
	fmt.Fprintln(out, "imsync stopping")
	st.drain(*drainTimeout, logger)
	return nil
}

// stack is the whole product in one process: the event store, a cluster
// member with the grains, and the QUIC gateway.
type stack struct {
	store events.Store
	svc   *actors.Service
	srv   *transport.Server
}

// startStack opens (or creates) everything in data and listens on listen.
// storeURL, if set, names the EventStoreDB server that holds the events
// instead of data (see datadir.go for what a data directory must hold).
// tcfg may set transport limits; its Service, Key and TLS are filled in.
func startStack(data, storeURL, listen string, logger *slog.Logger, tcfg transport.Config) (*stack, error) {
	return startStackWith(data, storeURL, listen, logger, tcfg, actors.Config{})
}

// startStackWith is startStack with settings of the grains (acfg's Store
// and Logger are filled in).
func startStackWith(data, storeURL, listen string, logger *slog.Logger, tcfg transport.Config, acfg actors.Config) (*stack, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := inspectDataDir(data)
	if err != nil {
		return nil, err
	}
	if storeURL != "" {
		// The events live on the remote store: a directory a server has
		// used (its marker) counts as having its store.
		dir.store = dir.marker
	}
	if err := dir.check(tcfg.TLS != nil); err != nil {
		return nil, err
	}
	st := &stack{}
	if st.store, err = openStore(data, storeURL, logger); err != nil {
		return nil, err
	}
	acfg.Store, acfg.Logger = tcfg.Metrics.InstrumentStore(st.store), logger
	if st.svc, err = actors.Start(acfg); err != nil {
		st.close()
		return nil, err
	}
	if err = pingStore(st.store); err != nil {
		st.close()
		return nil, err
	}
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		st.close()
		return nil, err
	}
	if tcfg.TLS == nil {
		cert, err := transport.LoadOrCreateCert(data)
		if err != nil {
			st.close()
			return nil, err
		}
		tcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if tcfg.StatelessResetKey, err = transport.LoadOrCreateResetKey(data); err != nil {
		st.close()
		return nil, err
	}
	if err := markDataDir(data); err != nil {
		st.close()
		return nil, err
	}
	tcfg.Service, tcfg.Key, tcfg.Logger = st.svc, key, logger
	if st.srv, err = transport.NewServer(tcfg); err == nil {
		st.watch(tcfg.Metrics)
		err = st.srv.Listen(listen)
	}
	if err != nil {
		st.srv = nil
		st.close()
		return nil, err
	}
	return st, nil
}

// openStore opens the embedded store in data, or the EventStoreDB backend
// when storeURL is set.
func openStore(data, storeURL string, logger *slog.Logger) (events.Store, error) {
	if storeURL == "" {
		return events.Open(storeDir(data), events.Options{Logger: logger})
	}
	// Lazy: nothing connects before the cluster member starts (which
	// replaces gRPC's global logger); pingStore checks the server then.
	s, err := esdb.Open(context.Background(), storeURL, esdb.Options{Logger: logger, Lazy: true})
	if err != nil {
		return nil, fmt.Errorf("serve: --store: %w", err)
	}
	return s, nil
}

// pingStore checks that a remote store answers.
func pingStore(store events.Store) error {
	p, ok := store.(interface{ Ping(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		return fmt.Errorf("serve: --store: %w", err)
	}
	return nil
}

// close stops the gateway, then the grains, then the store.
func (st *stack) close() {
	if st.srv != nil {
		st.srv.Close()
	}
	if st.svc != nil {
		st.svc.Close()
	}
	if st.store != nil {
		st.store.Close()
	}
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
	key, err := transport.LoadKey(*data)
	if errors.Is(err, transport.ErrNoKey) {
		return fmt.Errorf("token: %s is not the data directory of a server that has started (%w); pass the --data the server runs with", *data, err)
	}
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

// retentionFlag is a duration that also takes whole days ("30d").
type retentionFlag time.Duration

func (r *retentionFlag) String() string {
	d := time.Duration(*r)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func (r *retentionFlag) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return fmt.Errorf("retention %q: want whole days (30d) or a duration (72h)", s)
		}
		*r = retentionFlag(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || (d > 0 && d < time.Second) {
		return fmt.Errorf("retention %q: want whole days (30d) or a duration of at least 1s (72h)", s)
	}
	*r = retentionFlag(d)
	return nil
}
