//go:build cluster

// Package etcdtest runs a one-member etcd inside a test process, for the
// cluster tests of the etcd membership (`-tags cluster`):
//
//	endpoint := etcdtest.Start(t) // "127.0.0.1:PORT", closed when t ends
//	// imsync serve ... --cluster chat --etcd endpoint
//
// The nodes under test may be other processes: a node SIGKILLed does not
// take etcd with it.
package etcdtest

import (
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Start runs etcd on free loopback ports and returns its client endpoint,
// HOST:PORT, once it is ready.
func Start(t testing.TB) string {
	t.Helper()
	endpoint, _ := Run(t)
	return endpoint
}

// Run is Start that also returns a function stopping etcd (an outage);
// calling it more than once does no harm.
func Run(t testing.TB) (endpoint string, stop func()) {
	t.Helper()
	free := func() *url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return &url.URL{Scheme: "http", Host: l.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	clientURL, peerURL := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	var once sync.Once
	stop = func() { once.Do(e.Close) }
	t.Cleanup(stop)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not become ready in 30 s")
	}
	return clientURL.Host, stop
}

// Client is a client of the etcd at endpoint, closed when t ends.
func Client(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
