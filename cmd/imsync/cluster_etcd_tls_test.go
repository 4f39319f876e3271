//go:build cluster

package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/actors/etcdtest"
)

// TestClusterEtcdTLSNodeJoins: against an etcd that serves TLS only,
// requires client certificates and has authentication enabled, serve
// with a wrong IMSYNC_ETCD_PASSWORD, or without the TLS flags, stops at
// start with status 5 and an error naming the cause and the flags,
// creating nothing; with the right ones a node registers, counts itself
// a member and delivers a message.
func TestClusterEtcdTLSNodeJoins(t *testing.T) {
	began := time.Now()
	s := etcdtest.StartWith(t, etcdtest.Options{ClientCerts: true, RootPassword: "root-secret"})
	etcdFlags := []string{"--etcd-cacert", s.CAFile, "--etcd-cert", s.CertFile, "--etcd-key", s.KeyFile, "--etcd-user", "root"}

	for _, tc := range []struct {
		name, password string
		flags          []string
		want           []string
	}{
		{"wrong password", "wrong", etcdFlags, []string{"authentication failed", `user "root"`, etcdPasswordEnv}},
		{"no TLS flags", "root-secret", nil, []string{"etcd serves TLS there", "--etcd-cacert"}},
	} {
		t.Setenv(etcdPasswordEnv, tc.password)
		data := filepath.Join(t.TempDir(), "data")
		err := run(context.Background(), append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0",
			"--store", "esdb://127.0.0.1:1?tls=false", "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", s.Endpoint}, tc.flags...), io.Discard)
		if exitCode(err) != exitUnavailable {
			t.Fatalf("%s: serve: %v (exit status %d), want status %d", tc.name, err, exitCode(err), exitUnavailable)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: serve: %q does not say %q", tc.name, err, w)
			}
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: serve created %s (%v)", tc.name, data, err)
		}
	}

	t.Setenv(etcdPasswordEnv, "root-secret") // the node's process inherits it
	f := newClusterFixture(t, s.Endpoint, func(int) []string { return etcdFlags })
	f.addNode()
	f.startNode(0)
	took := f.waitMembers(1, 30*time.Second, 0)
	t.Logf("node up; it counted itself a member %s after it listened", took.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Client(t).Get(ctx, actors.EtcdKeyPrefix+"/chat/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != 1 {
		t.Fatalf("registrations in etcd: %v (%v), want 1", r, err)
	}
	probes := 0
	f.crossNodePush(&history{}, "ann", "bob", 0, 0, &probes)
	f.nodes[0].stop()
	t.Logf("%s", time.Since(began).Round(time.Millisecond))
}
