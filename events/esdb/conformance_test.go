package esdb_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/esdb/testserver"
	"github.com/imsync/imsync/events/storetest"
)

func open(t testing.TB, url string) *esdb.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, url, esdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startServer starts the protocol server over an in-memory embedded store
// stamped by clock (nil: the wall clock).
func startServer(t *testing.T, clock func() time.Time) *testserver.Server {
	t.Helper()
	st, err := events.OpenInMemory(events.Options{Now: clock, ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := testserver.Start(context.Background(), testserver.Options{Store: st})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return srv
}

// reopener closes the client and connects a new one to the same server.
func reopener(url string, cur *esdb.Store) storetest.Reopener {
	return func(t *testing.T) events.Store {
		if err := cur.Close(); err != nil {
			t.Fatal(err)
		}
		cur = open(t, url)
		return cur
	}
}

// TestConformance runs the suite through the official client against the
// protocol server, one server per test (so the store under it takes the
// suite's clock).
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Features: storetest.Features{Reopen: true, Clock: true},
		New: func(t *testing.T, clock func() time.Time) (events.Store, storetest.Reopener) {
			url := startServer(t, clock).URL()
			s := open(t, url)
			return s, reopener(url, s)
		},
	})
}

// TestConformanceSharedServer runs the suite with every test on one
// server, as on a shared EventStoreDB: the tests' stream prefixes keep
// them apart.
func TestConformanceSharedServer(t *testing.T) {
	url := startServer(t, nil).URL()
	storetest.Run(t, storetest.Backend{
		Features: storetest.Features{Reopen: true},
		New: func(t *testing.T, _ func() time.Time) (events.Store, storetest.Reopener) {
			s := open(t, url)
			return s, reopener(url, s)
		},
	})
}

// TestConformanceRealServer runs the suite against the EventStoreDB or
// KurrentDB server that IMSYNC_ESDB_URL names (docs/event-store.md says how
// to start one). The server may hold other data.
func TestConformanceRealServer(t *testing.T) {
	url := os.Getenv("IMSYNC_ESDB_URL")
	if url == "" {
		t.Skip("IMSYNC_ESDB_URL not set")
	}
	storetest.Run(t, storetest.Backend{
		Features: storetest.Features{Reopen: true, LogKeepsHidden: true},
		New: func(t *testing.T, _ func() time.Time) (events.Store, storetest.Reopener) {
			s := open(t, url)
			return s, reopener(url, s)
		},
	})
}

// TestDiscoverURL: an esdb+discover:// connection string goes through the
// server's gossip to the leader; the store works the same.
func TestDiscoverURL(t *testing.T) {
	srv := startServer(t, nil)
	s := open(t, srv.DiscoverURL())
	defer s.Close()
	ctx := context.Background()
	res, err := s.AppendToStream(ctx, "discover-1", events.NoStream, events.EventData{Type: "T", Data: []byte("x")})
	if err != nil || res.NextExpected != 0 {
		t.Fatalf("append: %+v, %v", res, err)
	}
	got, err := s.ReadStream(ctx, "discover-1", events.ReadStreamOptions{Limit: 10})
	if err != nil || len(got) != 1 || string(got[0].Data) != "x" {
		t.Fatalf("read: %v, %v", got, err)
	}
}

// TestMaxAgeWholeSeconds: EventStoreDB keeps $maxAge in seconds; a
// fraction is rounded up, never down (events are kept at least as long as
// asked).
func TestMaxAgeWholeSeconds(t *testing.T) {
	s := open(t, startServer(t, nil).URL())
	defer s.Close()
	ctx := context.Background()
	for in, want := range map[time.Duration]time.Duration{
		time.Second:             time.Second,
		1500 * time.Millisecond: 2 * time.Second,
		time.Hour:               time.Hour,
	} {
		stream := "age-" + in.String()
		if err := s.SetStreamMetadata(ctx, stream, events.StreamMetadata{MaxAge: in, MaxCount: 3}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetStreamMetadata(ctx, stream)
		if err != nil || got != (events.StreamMetadata{MaxAge: want, MaxCount: 3}) {
			t.Fatalf("$maxAge %s: read back %+v, %v; want %s", in, got, err, want)
		}
	}
}
