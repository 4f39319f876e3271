//go:build cluster

// Package etcdtest runs a one-member etcd inside a test process, for the
// cluster tests of the etcd membership (`-tags cluster`):
//
//	endpoint := etcdtest.Start(t) // "127.0.0.1:PORT", closed when t ends
//	// imsync serve ... --cluster chat --etcd endpoint
//
// or one that serves TLS only, requires client certificates and has
// authentication enabled:
//
//	s := etcdtest.StartWith(t, etcdtest.Options{ClientCerts: true, RootPassword: "secret"})
//	// imsync serve ... --etcd s.Endpoint --etcd-cacert s.CAFile
//	//   --etcd-cert s.CertFile --etcd-key s.KeyFile --etcd-user root
//
// The nodes under test may be other processes: a node SIGKILLed does not
// take etcd with it.
package etcdtest

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options say how StartWith runs etcd; the zero value is Start's
// plaintext etcd without authentication.
type Options struct {
	// TLS: etcd serves its clients over TLS only, with a certificate
	// (for 127.0.0.1 and localhost) of a CA made for the test.
	TLS bool
	// ClientCerts: etcd also requires a client certificate signed by
	// that CA (TLS implied).
	ClientCerts bool
	// RootPassword, when set, enables etcd's authentication, with the
	// user root (role root) and this password.
	RootPassword string
}

// Server is an etcd started by StartWith, stopped when its test ends.
type Server struct {
	Endpoint string // HOST:PORT
	// With TLS, PEM files: the CA's certificate, and a client
	// certificate (common name "client") with its key, signed by the CA.
	CAFile, CertFile, KeyFile string
	CA                        *CA // the CA, with TLS

	stop func()
	opts Options
}

// Start runs etcd on free loopback ports and returns its client endpoint,
// HOST:PORT, once it is ready.
func Start(t testing.TB) string {
	t.Helper()
	return StartWith(t, Options{}).Endpoint
}

// Run is Start that also returns a function stopping etcd (an outage);
// calling it more than once does no harm.
func Run(t testing.TB) (endpoint string, stop func()) {
	t.Helper()
	s := StartWith(t, Options{})
	return s.Endpoint, s.Stop
}

// StartWith runs etcd as opts say on free loopback ports and returns it
// once it is ready (and its authentication enabled, with a RootPassword).
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	opts.TLS = opts.TLS || opts.ClientCerts
	scheme := "http"
	if opts.TLS {
		scheme = "https"
	}
	free := func(scheme string) *url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return &url.URL{Scheme: scheme, Host: l.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	clientURL, peerURL := free(scheme), free("http")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	s := &Server{Endpoint: clientURL.Host, opts: opts}
	if opts.TLS {
		dir := t.TempDir()
		s.CA = NewCA(t)
		s.CAFile = s.CA.WriteCert(t, filepath.Join(dir, "ca.crt"))
		serverCert, serverKey := s.CA.Issue(t, "etcd", filepath.Join(dir, "server"))
		s.CertFile, s.KeyFile = s.CA.Issue(t, "client", filepath.Join(dir, "client"))
		tlsInfo := &cfg.ClientTLSInfo
		tlsInfo.CertFile, tlsInfo.KeyFile = serverCert, serverKey
		tlsInfo.TrustedCAFile, tlsInfo.ClientCertAuth = s.CAFile, opts.ClientCerts
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	var once sync.Once
	s.stop = func() { once.Do(e.Close) }
	t.Cleanup(s.stop)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not become ready in 30 s")
	}
	if opts.RootPassword != "" {
		s.enableAuth(t)
	}
	return s
}

// Stop stops etcd (an outage); calling it more than once does no harm.
func (s *Server) Stop() { s.stop() }

// ClientTLS is the TLS configuration of a client that trusts the CA and
// presents the client certificate; nil without TLS.
func (s *Server) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	if !s.opts.TLS {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Client is a client of s (over TLS with the client certificate, as
// root with authentication), closed when t ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: s.ClientTLS(t)}
	if s.opts.RootPassword != "" {
		cfg.Username, cfg.Password = "root", s.opts.RootPassword
	}
	return newClient(t, cfg)
}

// enableAuth adds the user root with its role and enables authentication.
func (s *Server) enableAuth(t testing.TB) {
	t.Helper()
	c := newClient(t, clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: s.ClientTLS(t)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.UserAdd(ctx, "root", s.opts.RootPassword); err != nil {
		t.Fatalf("etcd: adding root: %v", err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatalf("etcd: granting root its role: %v", err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		t.Fatalf("etcd: enabling authentication: %v", err)
	}
}

// Client is a client of the plaintext etcd at endpoint, closed when t ends.
func Client(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	return newClient(t, clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

func newClient(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
