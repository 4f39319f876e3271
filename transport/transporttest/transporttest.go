package transporttest

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// Service starts the actor service for cfg, on teststore.Open(t) when
// cfg.Store is nil.
func Service(t testing.TB, cfg actors.Config) *actors.Service {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = teststore.Open(t) // IMSYNC_TEST_STORE=esdb: the EventStoreDB backend
	}
	svc, err := actors.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// Gateway is a server listening on a random loopback port.
type Gateway struct {
	Server *transport.Server
	Key    *transport.Key
	Addr   string
	TLS    *tls.Config // what clients trust: the server's own certificate
}

// Listen starts a server for cfg, which names its Service. Its key and
// certificate are created in dir (a new temporary folder when dir is
// empty) and set cfg.Key and cfg.TLS.
func Listen(t testing.TB, dir string, cfg transport.Config) *Gateway {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	key, err := transport.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := transport.LoadOrCreateCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Key, cfg.TLS = key, &tls.Config{Certificates: []tls.Certificate{cert}}
	srv, err := transport.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	pem, err := os.ReadFile(filepath.Join(dir, transport.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := client.PinnedTLS(pem)
	if err != nil {
		t.Fatal(err)
	}
	return &Gateway{Server: srv, Key: key, Addr: srv.Addr().String(), TLS: pinned}
}

// SyncBuffer is a goroutine-safe buffer: a test reads what a running
// server logged or printed so far.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
