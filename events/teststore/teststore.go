// Package teststore opens the event store that product tests run on: the
// embedded store by default, or — with IMSYNC_TEST_STORE=esdb — the
// EventStoreDB backend (events/esdb) through the official client against
// an in-process protocol server (events/esdb/testserver).
//
//	store := teststore.Open(t) // empty, closed when the test ends
//
//	d := teststore.NewDurable(t, dir) // data that outlives a store
//	store := d.Open()
//	store.Close()
//	store = d.Open() // the same events
//
//	n := teststore.BenchEvents(b, 20_000) // a benchmark store's size: IMSYNC_BENCH_EVENTS, or 20,000
//
// CI runs the actors', transport and command tests once with each.
package teststore

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/esdb/testserver"
)

// Env is the variable that picks the backend: "esdb", or empty for the
// embedded store.
const Env = "IMSYNC_TEST_STORE"

// ESDB reports whether tests run on the EventStoreDB backend.
func ESDB() bool { return os.Getenv(Env) == "esdb" }

// Open returns an empty store, closed when the test ends.
func Open(t testing.TB) events.Store {
	t.Helper()
	if !ESDB() {
		s, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	url := StartServer(t, "")
	t.Logf("store: EventStoreDB backend, protocol server at %s", url)
	s := dial(t, url)
	t.Cleanup(func() { s.Close() })
	return s
}

// OpenESDB returns an empty store on the EventStoreDB backend whatever
// IMSYNC_TEST_STORE says, and the protocol server under it, for fault
// tests (Server.DropConnections). Both end with the test.
func OpenESDB(t testing.TB) (events.Store, *testserver.Server) {
	t.Helper()
	srv, err := testserver.Start(context.Background(), testserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	s := dial(t, srv.URL())
	t.Cleanup(func() { s.Close() })
	return s, srv
}

// StartServer starts a protocol server over an embedded store in dir (in
// memory if dir is empty), stopped when the test ends, and returns its
// connection string.
func StartServer(t testing.TB, dir string) string {
	t.Helper()
	srv, err := testserver.Start(context.Background(), testserver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.URL()
}

func dial(t testing.TB, url string) *esdb.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Lazy: the tests start cluster members after opening the store.
	s, err := esdb.Open(ctx, url, esdb.Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Durable is data that outlives the stores opened on it: an embedded store
// in a directory, or a protocol server (over such a directory) that runs
// until the test ends.
type Durable struct {
	t   testing.TB
	dir string
	url string
}

// NewDurable makes durable data in dir.
func NewDurable(t testing.TB, dir string) *Durable {
	d := &Durable{t: t, dir: dir}
	if ESDB() {
		d.url = StartServer(t, filepath.Join(dir, "esdb"))
	}
	return d
}

// Open opens a store on the data; the caller closes it.
func (d *Durable) Open() events.Store {
	d.t.Helper()
	if d.url != "" {
		return dial(d.t, d.url)
	}
	s, err := events.Open(d.dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		d.t.Fatal(err)
	}
	return s
}
