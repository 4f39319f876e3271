//go:build cluster

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/imsync/imsync/transport"
)

// TestClusterFirstNodeOnFreshDirectory: the first node of a cluster starts
// on a data directory that does not exist yet (docs/cluster.md's first
// step), creating its secrets there, and starts again on it; with the
// events in the shared store, a directory without events/ is no loss.
func TestClusterFirstNodeOnFreshDirectory(t *testing.T) {
	root := t.TempDir()
	storeURL := startProtocolServer(t, filepath.Join(root, "esdb"))
	data := filepath.Join(root, "n1")
	adv := fmt.Sprintf("127.0.0.1:%d", freeMemberPort(t))
	args := []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--store", storeURL, "--cluster", "chat", "--advertise", adv, "--peers", adv}
	for _, start := range []string{"first start", "restart"} {
		_, _, stop := serveInProcess(t, args...)
		if err := stop(); err != nil {
			t.Fatalf("%s: serve ended with %v", start, err)
		}
		if !transport.KeyExists(data) || !transport.CertExists(data) {
			t.Fatalf("%s: %s has no token key or certificate", start, data)
		}
		if _, err := os.Stat(filepath.Join(data, dataMarker)); err != nil {
			t.Fatalf("%s: %v", start, err)
		}
	}
}
