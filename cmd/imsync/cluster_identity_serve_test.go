package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
)

// TestServeClusterRefusesForeignSecrets: `serve --cluster` on an
// EventStoreDB protocol server that holds the cluster's record refuses,
// before its member starts, a node whose data directory is missing (and
// leaves nothing behind) or holds another reset key, with exit status 2.
func TestServeClusterRefusesForeignSecrets(t *testing.T) {
	if identityRaceDetector {
		// The in-process protocol server and the store client read gRPC's
		// global logger, which other tests' cluster members replace.
		t.Skip("not with -race: the in-process protocol server races with protoactor-go's grpclog.SetLoggerV2")
	}
	url := teststore.StartServer(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := esdb.Open(ctx, url, esdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	root := t.TempDir()
	n1 := filepath.Join(root, "n1")
	if err := checkClusterIdentity(ctx, store, identityOf(n1), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("first node: %v", err)
	}
	serve := func(data string, more ...string) error {
		args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--store", url,
			"--cluster", "chat", "--advertise", "127.0.0.1:8104", "--peers", "127.0.0.1:8101"}, more...)
		return run(ctx, args, io.Discard)
	}

	n4 := filepath.Join(root, "n4")
	err = serve(n4)
	t.Logf("serve on a missing data directory: %v", err)
	if !errors.Is(err, errClusterIdentity) || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "token.key is missing") {
		t.Fatalf("serve on a missing data directory: %v (exit %d), want a usage error about the cluster's secrets", err, exitCode(err))
	}
	if _, err := os.Stat(n4); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused serve created %s (%v)", n4, err)
	}
	if _, err := os.Stat(filepath.Join(root, "n1", dataMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("n1 was touched (%v)", err)
	}

	n5 := filepath.Join(root, "n5")
	copyDataDir(t, n1, n5)
	if err := os.Remove(filepath.Join(n5, transport.ResetKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateResetKey(n5); err != nil {
		t.Fatal(err)
	}
	err = serve(n5)
	if !errors.Is(err, errClusterIdentity) || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "reset.key differs") ||
		strings.Contains(err.Error(), "token.key differs") || strings.Contains(err.Error(), "server.crt differs") {
		t.Fatalf("serve with another reset key: %v (exit %d), want a refusal naming reset.key alone", err, exitCode(err))
	}
	if _, err := os.Stat(filepath.Join(n5, dataMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused serve marked %s as used (%v)", n5, err)
	}
	if n := len(identityRecords(t, store)); n != 1 {
		t.Fatalf("identity stream: %d records, want 1", n)
	}
}

// TestServeClusterIdentityFlags: --cluster-reset-identity needs --cluster;
// --new-key and --new-cert in a cluster need --cluster-reset-identity.
// Usage errors, before the store is asked and before anything is created.
func TestServeClusterIdentityFlags(t *testing.T) {
	const store = "esdb://127.0.0.1:1?tls=false" // nothing answers there
	cluster := []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"reset without cluster", []string{"--store", store, "--cluster-reset-identity"}, "need --cluster"},
		{"new key in a cluster", append([]string{"--new-key"}, cluster...), "--cluster-reset-identity"},
		{"new cert in a cluster", append([]string{"--new-cert"}, cluster...), "--cluster-reset-identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, tc.args...)
			err := run(context.Background(), args, io.Discard)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve %v: %v, want a usage error about %q", tc.args, err, tc.want)
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("serve %v created %s (%v)", tc.args, data, err)
			}
		})
	}
}

// TestServeClusterStoreUnreachable: with a store that does not answer, the
// identity check cannot decide, so the node does not start (exit 5, try
// again later) and creates nothing.
func TestServeClusterStoreUnreachable(t *testing.T) {
	if identityRaceDetector {
		t.Skip("not with -race: the store client's goroutines read gRPC's global logger, which the check sets")
	}
	data := filepath.Join(t.TempDir(), "data")
	cluster := []string{"--store", "esdb://127.0.0.1:1?tls=false", "--cluster", "chat", "--advertise", "127.0.0.1:8101"}
	err := run(context.Background(), append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, cluster...), io.Discard)
	if !errors.Is(err, events.ErrUnavailable) || exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), clusterIdentityStream("chat")) {
		t.Fatalf("serve --cluster on an unreachable store: %v (exit %d), want unavailable (exit %d) naming the identity stream", err, exitCode(err), exitUnavailable)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("serve created %s (%v)", data, err)
	}
}
