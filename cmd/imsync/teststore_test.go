package main

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/teststore"
)

// testStores maps a data directory to the connection string of the
// protocol server that holds its events (IMSYNC_TEST_STORE=esdb).
var testStores sync.Map

// storeFor is the --store of the server on data in tests: empty for the
// embedded store; with IMSYNC_TEST_STORE=esdb a protocol server started on
// first use for data (over an embedded store in data's parent, so that it
// outlives restarts of the imsync server), stopped when the test ends.
func storeFor(t testing.TB, data string) string {
	t.Helper()
	if !teststore.ESDB() {
		return ""
	}
	if url, ok := testStores.Load(data); ok {
		return url.(string)
	}
	url := teststore.StartServer(t, filepath.Join(filepath.Dir(data), filepath.Base(data)+"-esdb"))
	t.Logf("events of %s: EventStoreDB backend, protocol server at %s", filepath.Base(data), url)
	testStores.Store(data, url)
	t.Cleanup(func() { testStores.Delete(data) })
	return url
}

// serveArgs is `serve --data data --store URL more...`, the URL empty for
// the embedded store (so that an IMSYNC_STORE in the environment is not
// taken).
func serveArgs(t testing.TB, data string, more ...string) []string {
	t.Helper()
	return append([]string{"serve", "--data", data, "--store", storeFor(t, data)}, more...)
}

// storeEnv is what a child process running serve on data needs in its
// environment: the store it uses (IMSYNC_STORE, empty for the embedded
// store).
func storeEnv(t testing.TB, data string) []string {
	t.Helper()
	return []string{"IMSYNC_STORE=" + storeFor(t, data)}
}

// openStoreOf opens the events of the server on data, for checks.
func openStoreOf(t testing.TB, data string) events.Store {
	t.Helper()
	if url := storeFor(t, data); url != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := esdb.Open(ctx, url, esdb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServeStoreUnreachable: serve with --store naming no server, or not an
// EventStoreDB connection string, fails with a typed error instead of
// serving.
func TestServeStoreUnreachable(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	err := run(ctx, []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--store", "esdb://127.0.0.1:1?tls=false"}, &out)
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("serve on an unreachable store: %v (printed %q)", err, out.String())
	}
	err = run(ctx, []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--store", "esdb://host:notaport"}, &out)
	if !errors.Is(err, events.ErrInvalidArgument) {
		t.Fatalf("serve on a bad connection string: %v", err)
	}
}
