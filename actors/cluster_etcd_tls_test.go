//go:build cluster

package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/actors/etcdtest"
)

// TestClusterEtcdTLSAuth: two members register and find each other
// through an etcd that serves TLS only, requires client certificates and
// has authentication enabled: two as a user with a password whose role
// may only read and write the members' keys (the permissions
// docs/cluster.md grants), one as the user its client certificate names.
func TestClusterEtcdTLSAuth(t *testing.T) {
	s := etcdtest.StartWith(t, etcdtest.Options{ClientCerts: true, RootPassword: "root-secret"})
	root := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "imsync", "imsync-secret"); return err },
		func() error { _, err := root.RoleAdd(ctx, "imsync"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "imsync", actors.EtcdKeyPrefix+"/", clientv3.GetPrefixRangeEnd(actors.EtcdKeyPrefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "imsync", "imsync"); return err },
		// The client certificate's common name, a user without a password.
		func() error {
			_, err := root.UserAddWithOptions(ctx, "client", "", &clientv3.UserAddOptions{NoPassword: true})
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "client", "imsync"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	store := newStore(t)
	member := func(user, password string) *actors.Service {
		t.Helper()
		p, err := actors.EtcdMembersConfig(actors.EtcdConfig{Endpoints: []string{s.Endpoint}, TLS: s.ClientTLS(t),
			Username: user, Password: password})
		if err != nil {
			t.Fatal(err)
		}
		return start(t, actors.Config{Store: store, ClusterName: "chat", Provider: p})
	}
	a, b := member("imsync", "imsync-secret"), member("imsync", "imsync-secret")
	c := member("", "") // authenticated by its certificate
	eventually(t, "three members", func() bool { return a.Members() == 3 && b.Members() == 3 && c.Members() == 3 })
	r, err := root.Get(ctx, actors.EtcdKeyPrefix+"/chat/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != 3 {
		t.Fatalf("registrations in etcd: %v (%v), want 3", r, err)
	}
	for i := range 6 { // grains on every member
		if _, err := b.OpenDirect(ctx, "ann", fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	c.Close()
	eventually(t, "a alone", func() bool { return a.Members() == 1 })
	a.Crash()
}

// TestClusterEtcdTLSRefused: EtcdMembersConfig fails with an error that
// names the cause, and registers nothing, when etcd's certificate is not
// from the CA given, when etcd requires a client certificate and none is
// given, when the password is wrong, when etcd requires a user and none
// is given, and when one side speaks TLS and the other does not.
func TestClusterEtcdTLSRefused(t *testing.T) {
	secure := etcdtest.StartWith(t, etcdtest.Options{ClientCerts: true, RootPassword: "root-secret"})
	plain := etcdtest.Start(t)
	good := secure.ClientTLS(t)
	otherCA := good.Clone()
	otherCA.RootCAs = etcdtest.NewCA(t).Pool()
	noCert := good.Clone()
	noCert.Certificates = nil
	for _, tc := range []struct {
		name string
		cfg  actors.EtcdConfig
		want []string
		is   error
	}{
		{"wrong CA", actors.EtcdConfig{Endpoints: []string{secure.Endpoint}, TLS: otherCA, Username: "root", Password: "root-secret"},
			[]string{"certificate is not trusted", "x509"}, actors.ErrEtcdUntrusted},
		{"no client certificate", actors.EtcdConfig{Endpoints: []string{secure.Endpoint}, TLS: noCert, Username: "root", Password: "root-secret"},
			[]string{"refused this client's certificate", "certificate required"}, actors.ErrEtcdRefusedCert},
		{"wrong password", actors.EtcdConfig{Endpoints: []string{secure.Endpoint}, TLS: good, Username: "root", Password: "wrong"},
			[]string{`user "root"`, "authentication failed"}, rpctypes.ErrAuthFailed},
		{"no user", actors.EtcdConfig{Endpoints: []string{secure.Endpoint}, TLS: good},
			[]string{"denied access", "needs a user and password"}, rpctypes.ErrPermissionDenied},
		{"plaintext client, TLS etcd", actors.EtcdConfig{Endpoints: []string{secure.Endpoint}},
			[]string{"etcd serves TLS there, and this client connects in plaintext"}, actors.ErrEtcdServesTLS},
		{"TLS client, plaintext etcd", actors.EtcdConfig{Endpoints: []string{plain}, TLS: good},
			[]string{"does not speak TLS there"}, actors.ErrEtcdServesPlaintext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // most wait out the client's dial timeout
			p, err := actors.EtcdMembersConfig(tc.cfg)
			if err == nil {
				p.Shutdown(false)
				t.Fatal("EtcdMembersConfig succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.cfg.Endpoints[0]) {
				t.Fatalf("error %q does not name the endpoint %s", err, tc.cfg.Endpoints[0])
			}
			t.Log(err)
		})
	}
	t.Cleanup(func() { // after the subtests: nothing registered
		for _, c := range []*clientv3.Client{secure.Client(t), etcdtest.Client(t, plain)} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := c.Get(ctx, actors.EtcdKeyPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			cancel()
			if err != nil || r.Count != 0 {
				t.Errorf("etcd holds registrations after the refusals: %v (%v)", r, err)
			}
		}
	})
}
