package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/transport"
)

// runServe runs the whole product in one process: the event store (embedded,
// or an EventStoreDB/KurrentDB server with --store), a cluster member with
// the grains, the QUIC gateway. It stops cleanly on SIGINT/SIGTERM and
// reloads --cert/--key and --jwks on SIGHUP.
func runServe(ctx context.Context, args []string, out io.Writer) error {
	// Caught from the start: a SIGHUP must never kill a starting server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory (created on first use)")
	storeURL := fs.String("store", os.Getenv("IMSYNC_STORE"), "EventStoreDB connection string (esdb://HOST:2113?tls=false, esdb+discover://...) instead of the embedded store in DIR/events")
	listen := fs.String("listen", "127.0.0.1:7400", "UDP address to listen on")
	verbose := fs.Bool("v", false, "log connections")
	certFile := fs.String("cert", "", "TLS certificate (PEM) to serve instead of the self-signed one")
	keyFile := fs.String("key", "", "its private key (PEM)")
	jwksFile := fs.String("jwks", "", "JSON Web Key Set file: the Ed25519 public keys device tokens may be signed with (reloaded on SIGHUP; docs/tokens.md)")
	jwtAudience := fs.String("jwt-audience", "", "the aud claim every device token must carry")
	jwtIssuer := fs.String("jwt-issuer", "", "the iss claim every device token must carry")
	var cl clusterSettings
	fs.StringVar(&cl.name, "cluster", "", "run as a member of the cluster NAME, found through --etcd or listed by --peers (needs --store and --advertise; docs/cluster.md)")
	fs.StringVar(&cl.advertise, "advertise", "", "HOST:PORT: this member's TCP address for the other members (cluster mode); with --peers, its port + 1000 also answers their health checks (HTTP)")
	fs.StringVar(&cl.peers, "peers", "", "HOST:PORT,...: the other members' --advertise addresses (cluster mode)")
	fs.StringVar(&cl.etcd, "etcd", "", "HOST:PORT,...: etcd's client endpoints, where the members register and find each other (cluster mode, instead of --peers)")
	fs.StringVar(&cl.caCert, "etcd-cacert", "", "PEM `FILE` of the CA certificates that verify etcd's certificate; connects to etcd over TLS (docs/cluster.md)")
	fs.StringVar(&cl.cert, "etcd-cert", "", "PEM `FILE` of the client certificate for etcd's client-certificate authentication (with --etcd-key; connects over TLS)")
	fs.StringVar(&cl.key, "etcd-key", "", "PEM `FILE` of the private key of --etcd-cert")
	fs.StringVar(&cl.user, "etcd-user", "", "etcd user `NAME` to authenticate as; its password comes from the environment variable IMSYNC_ETCD_PASSWORD")
	fs.BoolVar(&cl.resetIdentity, "cluster-reset-identity", false, "record this node's token key, certificate and reset key as the cluster's, replacing the record the nodes are checked against (cluster mode; docs/cluster.md)")
	hostname := fs.String("hostname", "", "DNS names and IP addresses, comma-separated, for the self-signed certificate besides localhost")
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
	var ext extensionFlags
	fs.StringVar(&ext.webhook, "webhook", os.Getenv("IMSYNC_WEBHOOK"), "URL that committed events are POSTed to, batched and signed (or IMSYNC_WEBHOOK)")
	fs.StringVar(&ext.webhookSecret, "webhook-secret", os.Getenv("IMSYNC_WEBHOOK_SECRET"), "file holding the secret that signs webhook bodies (X-Imsync-Signature)")
	fs.StringVar(&ext.api, "api", os.Getenv("IMSYNC_API"), "TCP address of the HTTP server API for the app backend (needs --api-key)")
	fs.StringVar(&ext.apiKey, "api-key", os.Getenv("IMSYNC_API_KEY"), "file holding the server API's key (at least 16 bytes)")
	searchOn, err := searchDefault()
	if err != nil {
		return err
	}
	fs.BoolVar(&searchOn, "search", searchOn, "keep the search index in DIR/projections/search live and answer search requests (or IMSYNC_SEARCH)")
	fs.StringVar(&ext.beforeSend, "before-send-webhook", "", "URL asked about every send and edit before it is decided: allow, reject or rewrite (docs/extending.md)")
	fs.DurationVar(&ext.beforeSendTimeout, "before-send-timeout", defaultBeforeSendTimeout, "how long the before-send webhook may take: the check's deadline")
	fs.StringVar(&ext.beforeSendFail, "before-send-fail", "closed", "when the before-send webhook fails or times out: closed refuses the message (CHECK_FAILED), open lets it through unchanged")
	fs.StringVar(&ext.beforeSendSecret, "before-send-secret", "", "file holding the secret that signs before-send requests (default: --webhook-secret's)")
	fs.Var(&retention, "sync-retention", "how long sync-timeline entries are kept, e.g. 30d or 72h; 0 keeps them for ever (or IMSYNC_SYNC_RETENTION)")
	limits := registerLimitFlags(fs)
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: serve needs --data DIR", errUsage)
	}
	if (*certFile == "") != (*keyFile == "") {
		return fmt.Errorf("%w: serve takes --cert and --key together", errUsage)
	}
	// Before anything is created: a typo in --listen must not leave a data directory behind.
	if _, err := net.ResolveUDPAddr("udp", *listen); err != nil {
		return fmt.Errorf("%w: serve --listen %q: %v", errUsage, *listen, err)
	}
	hosts, err := parseHostnames(*hostname)
	if err != nil {
		return fmt.Errorf("%w: serve: --hostname: %v", errUsage, err)
	}
	if len(hosts) > 0 && *certFile != "" {
		return fmt.Errorf("%w: serve: --hostname names the self-signed certificate; a --cert brings its own names", errUsage)
	}
	exts, err := ext.check()
	if err != nil {
		return err
	}
	var tcfg transport.Config
	var certs *transport.CertFiles
	acfg := actors.Config{SyncRetention: time.Duration(retention)}
	acfg.Extensions = exts.actorExtensions() // the before-send webhook
	if err := limits.apply(&tcfg, &acfg); err != nil {
		return err
	}
	if err := cl.apply(&acfg, *storeURL); err != nil {
		return err
	}
	if err := cl.checkNewSecrets(allow); err != nil {
		return err
	}
	if *certFile != "" {
		if certs, err = transport.LoadCertFiles(*certFile, *keyFile); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		tcfg.TLS = certs.TLSConfig()
	}
	if *jwksFile != "" {
		if tcfg.JWKS, err = transport.LoadJWKS(*jwksFile); err != nil {
			return fmt.Errorf("serve: --jwks: %w", err)
		}
	}
	tcfg.TokenRules = transport.TokenRules{Audience: *jwtAudience, Issuer: *jwtIssuer}
	if *drainTimeout <= 0 || *drainTimeout > maxDrainTimeout {
		return fmt.Errorf("%w: serve: --drain-timeout %v: want a positive duration up to %s", errUsage, *drainTimeout, maxDrainTimeout)
	}
	if err := checkOpsAddr(*opsAddr, *opsPublic); err != nil {
		return err
	}
	logger, err := newLogger(os.Stderr, *logFormat, *logLevel, *verbose)
	if err != nil {
		return err
	}
	if cl.name != "" {
		// Before anything is created and before the member joins: a node
		// without the cluster's secrets would join and refuse every client.
		if err := checkClusterIdentityOf(*data, *storeURL, identityCheck{
			cluster: cl.name, advertise: cl.advertise, data: *data, ownCert: *certFile != "", jwks: *jwksFile != "",
			certHosts: hosts, allow: allow, reset: cl.resetIdentity,
		}, logger); err != nil {
			return err
		}
	}
	if allow != (dataDirAllow{}) {
		if err := createAllowed(*data, allow, tcfg.TLS != nil, logger); err != nil {
			return err
		}
	}

	if len(hosts) > 0 {
		if err := certForHosts(*data, hosts, allow.cert, logger); err != nil {
			return err
		}
	}
	if err := opsConfig(*opsAddr, *actorMetrics, &tcfg, &acfg); err != nil {
		return err
	}
	st, err := startStackWith(*data, *storeURL, *listen, logger, tcfg, acfg, hosts...)
	if err != nil {
		return err
	}
	defer st.close()
	ctl, err := startControl(*data, st.store, logger) // checkpoints for tools beside the server
	if err != nil {
		return err
	}
	defer ctl.close()
	if searchOn {
		if err := st.search.start(*data, st.store, logger); err != nil {
			return err
		}
	}
	stopExts, err := exts.start(st, *data, logger, out)
	if err != nil {
		return err
	}
	defer stopExts() // before the stack closes
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
	if tcfg.JWKS != nil {
		fmt.Fprintf(out, "jwks: %s (kids: %s)\n", tcfg.JWKS.Path(), strings.Join(tcfg.JWKS.Kids(), ", "))
	}
	// A member the others dropped for good (its etcd registration expired)
	// serves nobody's grains: it stops, so that a supervisor restarts it
	// as a new member (docs/cluster.md).
	lost := actors.MembershipLost(acfg.Provider)
	var stopErr error
	for done := false; !done; {
		select {
		case <-hup:
			reload(certs, tcfg.JWKS, out, logger)
		case <-ctx.Done():
			done = true
		case <-lost:
			stopErr = withStatus(exitUnavailable, "serve: this node's etcd registration expired (no keep-alive reached etcd within %v) "+
				"and the other members dropped it for good; it stopped so that it can start again as a new member "+
				"(a supervisor with Restart=on-failure does it)", actors.EtcdLeaseTTL)
			done = true
		}
	}
	fmt.Fprintln(out, "imsync stopping")
	st.drain(*drainTimeout, logger)
	return stopErr
}

// stack is the whole product in one process: the event store, a cluster
// member with the grains, and the QUIC gateway.
type stack struct {
	store events.Store
	svc   *actors.Service
	srv   *transport.Server
	// search answers search requests once started (runServe starts it).
	search *liveSearch
	revs   *transport.Revocations // followed in the store until close
}

// startStack opens (or creates) everything in data and listens on listen.
// storeURL, if set, names the EventStoreDB server that holds the events
// instead of data (see datadir.go for what a data directory must hold).
// tcfg may set transport limits; its Service, Key and TLS are filled in.
func startStack(data, storeURL, listen string, logger *slog.Logger, tcfg transport.Config) (*stack, error) {
	return startStackWith(data, storeURL, listen, logger, tcfg, actors.Config{})
}

// startStackWith is startStack with settings of the grains (acfg's Store
// and Logger are filled in); a self-signed certificate it creates covers
// certHosts too.
func startStackWith(data, storeURL, listen string, logger *slog.Logger, tcfg transport.Config, acfg actors.Config, certHosts ...string) (*stack, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := inspectDataDir(data)
	if err != nil {
		return nil, err
	}
	if storeURL != "" {
		// The events live on the remote store: none can be missing from
		// the directory (a first cluster node's secrets, just created by
		// the identity check, are not the sign of a lost store).
		dir.remote = true
	}
	if err := dir.check(tcfg.TLS != nil); err != nil {
		return nil, err
	}
	st := &stack{}
	if st.store, err = openStore(data, storeURL, logger); err != nil {
		return nil, err
	}
	acfg.Store, acfg.Logger = tcfg.Metrics.InstrumentStore(st.store), logger
	acfg.Extensions = acfg.Extensions.With(actors.Registered()) // plugin packages linked in (docs/extending.md)
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
		cert, err := transport.LoadOrCreateCert(data, certHosts...)
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
	if tcfg.Revocations == nil {
		// In the store, so every node sharing it refuses the same tokens.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st.revs, err = transport.OpenRevocations(ctx, st.store, data, logger)
		cancel()
		if err != nil {
			st.close()
			return nil, err
		}
		tcfg.Revocations = st.revs
	}
	tcfg.Service, tcfg.Key, tcfg.Logger = st.svc, key, logger
	st.search = &liveSearch{}
	tcfg.Search = st.search
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
	st.revs.Close()
	if st.search != nil {
		st.search.close()
	}
	if st.store != nil {
		st.store.Close()
	}
}

// maxDrainTimeout bounds --drain-timeout: a stop that waits longer than
// this is a hang (service managers kill it well before).
const maxDrainTimeout = time.Hour

// retentionFlag is a duration that also takes whole days ("30d").
type retentionFlag time.Duration

func (r *retentionFlag) String() string {
	d := time.Duration(*r)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// maxRetentionDays bounds --sync-retention (10 years; 0 keeps entries for
// ever): days beyond 106,751 would overflow a time.Duration.
const maxRetentionDays = 3650

func (r *retentionFlag) Set(s string) error {
	want := fmt.Sprintf("want 0 (for ever), whole days up to %dd (30d) or a duration from 1s (72h)", maxRetentionDays)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > maxRetentionDays {
			return fmt.Errorf("retention %q: %s", s, want)
		}
		*r = retentionFlag(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || (d > 0 && d < time.Second) || d > maxRetentionDays*24*time.Hour {
		return fmt.Errorf("retention %q: %s", s, want)
	}
	*r = retentionFlag(d)
	return nil
}
