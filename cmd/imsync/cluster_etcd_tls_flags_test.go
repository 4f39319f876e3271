package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imsync/imsync/transport"
)

// TestServeEtcdTLSFlagsRefused: --etcd-cacert, --etcd-cert, --etcd-key
// and --etcd-user without --etcd, a file missing, unreadable or not PEM,
// a certificate without its key (or the other way round) or with
// another's, and a user without IMSYNC_ETCD_PASSWORD are usage errors
// (exit status 2) that name the flag, found before etcd is asked and
// before anything is created; from a --config file as from the command
// line.
func TestServeEtcdTLSFlagsRefused(t *testing.T) {
	t.Setenv(etcdPasswordEnv, "")
	dir := t.TempDir()
	// Two certificates with their keys, as serve makes its own.
	certA, certB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{certA, certB} {
		if _, err := transport.LoadOrCreateCert(d); err != nil {
			t.Fatal(err)
		}
	}
	crt := func(d string) string { return filepath.Join(d, transport.CertFile) }
	key := func(d string) string { return filepath.Join(d, "server.key") }
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	config := filepath.Join(dir, "imsync.conf")
	if err := os.WriteFile(config, []byte("etcd-cacert = "+missing+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const store = "esdb://127.0.0.1:1?tls=false"
	cluster := []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101"}
	with := func(base []string, more ...string) []string { return append(slices.Clone(base), more...) }
	withEtcd := with(cluster, "--etcd", "127.0.0.1:1") // nothing listens there: never asked
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"cacert without etcd", with(cluster, "--etcd-cacert", crt(certA)), []string{"--etcd-cacert", "it needs --etcd"}},
		{"cert and key without etcd", with(cluster, "--etcd-cert", crt(certA), "--etcd-key", key(certA)), []string{"--etcd-cert, --etcd-key", "they need --etcd"}},
		{"user without etcd", with(cluster, "--etcd-user", "imsync"), []string{"--etcd-user", "it needs --etcd"}},
		{"cacert without cluster", []string{"--store", store, "--etcd-cacert", crt(certA)}, []string{"--etcd-cacert", "it needs --etcd"}},
		{"cacert missing", with(withEtcd, "--etcd-cacert", missing), []string{"--etcd-cacert", "no such file"}},
		{"cacert unreadable", with(withEtcd, "--etcd-cacert", dir), []string{"--etcd-cacert", "is a directory"}},
		{"cacert not PEM", with(withEtcd, "--etcd-cacert", garbage), []string{"--etcd-cacert", "no PEM certificate"}},
		{"cert without key", with(withEtcd, "--etcd-cert", crt(certA)), []string{"--etcd-cert needs --etcd-key"}},
		{"key without cert", with(withEtcd, "--etcd-key", key(certA)), []string{"--etcd-key needs --etcd-cert"}},
		{"cert missing", with(withEtcd, "--etcd-cert", missing, "--etcd-key", key(certA)), []string{"--etcd-cert", "no such file"}},
		{"key missing", with(withEtcd, "--etcd-cert", crt(certA), "--etcd-key", missing), []string{"--etcd-key", "no such file"}},
		{"cert not PEM", with(withEtcd, "--etcd-cert", garbage, "--etcd-key", key(certA)), []string{"--etcd-cert", "no PEM certificate"}},
		{"key not PEM", with(withEtcd, "--etcd-cert", crt(certA), "--etcd-key", garbage), []string{"--etcd-key", "no PEM private key"}},
		{"key of another certificate", with(withEtcd, "--etcd-cert", crt(certA), "--etcd-key", key(certB)), []string{"--etcd-cert", "--etcd-key", "does not match"}},
		{"user without password", with(withEtcd, "--etcd-user", "imsync"), []string{"--etcd-user", "IMSYNC_ETCD_PASSWORD"}},
		{"cacert missing, from --config", with(withEtcd, "--config", config), []string{"--etcd-cacert", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, tc.args...)
			err := run(context.Background(), args, io.Discard)
			if !errors.Is(err, errUsage) || exitCode(err) != exitUsage {
				t.Fatalf("serve %v: %v (exit status %d), want a usage error (%d)", tc.args, err, exitCode(err), exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("serve %v: %q does not say %q", tc.args, err, w)
				}
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("serve %v created %s (%v)", tc.args, data, err)
			}
		})
	}
}
