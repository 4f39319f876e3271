package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/imsync/imsync/actors"
)

// etcdPasswordEnv holds the password of --etcd-user: never a flag, so
// that it does not show in the process list.
const etcdPasswordEnv = "IMSYNC_ETCD_PASSWORD"

// etcdAccess are serve's flags for an etcd that serves TLS or requires
// a user (docs/cluster.md, "etcd with TLS and authentication").
type etcdAccess struct {
	caCert string // --etcd-cacert: PEM CA bundle verifying etcd's certificate
	cert   string // --etcd-cert: client certificate (PEM)
	key    string // --etcd-key: its private key (PEM)
	user   string // --etcd-user; its password from IMSYNC_ETCD_PASSWORD
}

// flags names the flags given, for the error when --etcd is not.
func (a etcdAccess) flags() []string {
	var out []string
	for _, f := range []struct{ name, v string }{{"--etcd-cacert", a.caCert}, {"--etcd-cert", a.cert}, {"--etcd-key", a.key}, {"--etcd-user", a.user}} {
		if f.v != "" {
			out = append(out, f.name)
		}
	}
	return out
}

// config reads the files and the password into the configuration of the
// connection to etcd at endpoints. Every error is a usage error: nothing
// has been created or contacted yet.
func (a etcdAccess) config(endpoints []string) (actors.EtcdConfig, error) {
	cfg := actors.EtcdConfig{Endpoints: endpoints}
	if (a.cert == "") != (a.key == "") {
		given, missing := "--etcd-cert", "--etcd-key"
		if a.cert == "" {
			given, missing = missing, given
		}
		return cfg, fmt.Errorf("%w: serve: %s needs %s too: the client certificate and its key go together", errUsage, given, missing)
	}
	if a.caCert != "" || a.cert != "" {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12} // RootCAs nil: the system's roots
	}
	if a.caCert != "" {
		b, err := readEtcdFile("--etcd-cacert", a.caCert)
		if err != nil {
			return cfg, err
		}
		cfg.TLS.RootCAs = x509.NewCertPool()
		if !cfg.TLS.RootCAs.AppendCertsFromPEM(b) {
			return cfg, fmt.Errorf("%w: serve: --etcd-cacert %s: no PEM certificate in it (want the CA bundle that signed etcd's certificate)", errUsage, a.caCert)
		}
	}
	if a.cert != "" {
		certPEM, err := readEtcdFile("--etcd-cert", a.cert)
		if err != nil {
			return cfg, err
		}
		keyPEM, err := readEtcdFile("--etcd-key", a.key)
		if err != nil {
			return cfg, err
		}
		if !hasPEM(certPEM, func(kind string) bool { return kind == "CERTIFICATE" }) {
			return cfg, fmt.Errorf("%w: serve: --etcd-cert %s: no PEM certificate in it", errUsage, a.cert)
		}
		if !hasPEM(keyPEM, func(kind string) bool { return strings.HasSuffix(kind, "PRIVATE KEY") }) {
			return cfg, fmt.Errorf("%w: serve: --etcd-key %s: no PEM private key in it", errUsage, a.key)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return cfg, fmt.Errorf("%w: serve: --etcd-cert %s and --etcd-key %s: %v", errUsage, a.cert, a.key, err)
		}
		cfg.TLS.Certificates = []tls.Certificate{pair}
	}
	if a.user != "" {
		cfg.Username, cfg.Password = a.user, os.Getenv(etcdPasswordEnv)
		if cfg.Password == "" {
			return cfg, fmt.Errorf("%w: serve: --etcd-user %s needs its password in the environment variable %s "+
				"(not a flag: it would show in the process list)", errUsage, a.user, etcdPasswordEnv)
		}
	}
	return cfg, nil
}

// etcdHint names the flags behind etcd's refusal, if any.
func etcdHint(err error) string {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return " (check --etcd-user and " + etcdPasswordEnv + ")"
	case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrPermissionDenied):
		return " (--etcd-user NAME, with the password in " + etcdPasswordEnv + "; docs/cluster.md)"
	case errors.Is(err, actors.ErrEtcdServesTLS):
		return " (give --etcd-cacert FILE, the CA of etcd's certificate)"
	case errors.Is(err, actors.ErrEtcdServesPlaintext):
		return " (drop --etcd-cacert, --etcd-cert and --etcd-key, or serve etcd with TLS)"
	case errors.Is(err, actors.ErrEtcdUntrusted):
		return " (--etcd-cacert must hold the CA that signed etcd's certificate, and that certificate must name the host of --etcd)"
	case errors.Is(err, actors.ErrEtcdRefusedCert):
		return " (--etcd-cert and --etcd-key: a client certificate signed by a CA that etcd trusts, its --trusted-ca-file)"
	}
	return ""
}

func readEtcdFile(flagName, file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: serve: %s: %v", errUsage, flagName, err)
	}
	return b, nil
}

// hasPEM reports whether b holds a PEM block of a kind that want accepts.
func hasPEM(b []byte, want func(kind string) bool) bool {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return false
		}
		if want(block.Type) {
			return true
		}
	}
}
