package transport_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/transporttest"
	"github.com/imsync/imsync/transport/wire"
)

// dialGateway logs user's device in on g with a token issued at issued.
func dialGateway(t *testing.T, g *transporttest.Gateway, user, device string, issued time.Time) (*client.Client, error) {
	t.Helper()
	tok, err := g.Key.Mint(user, device, time.Hour, issued)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: g.Addr, Token: tok, TLS: g.TLS, NoReconnect: true})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// stillConnected reports whether c's connection answers a request.
func stillConnected(c *client.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.OpenDirect(ctx, "zed")
	return err == nil
}

// A disconnect through one node closes the device on another even when
// the device grain the first node asks knows none of its connections (as
// after a membership change, before the connections are announced
// again): here each gateway has a service of its own, sharing only the
// store. A disconnect read late spares a connection made after it.
//
// Two services in one process trip the race detector inside protoactor-go's
// remote (grpclog.SetLoggerV2 against the other's gRPC server, as
// actors/cluster_test.go says), so this test runs without -race only (CI
// runs it on the EventStoreDB backend).
func TestDisconnectReachesConnectionsTheGrainDoesNotKnow(t *testing.T) {
	if raceEnabled {
		t.Skip("two actor services in one process: a race inside protoactor-go's remote")
	}
	store := teststore.Open(t)
	dir := t.TempDir() // the gateways share key and certificate, as nodes do
	one := transporttest.Listen(t, dir, transport.Config{
		Service:     transporttest.Service(t, actors.Config{Store: store}),
		Revocations: openRevocations(t, store, t.TempDir()),
	})
	two := transporttest.Listen(t, dir, transport.Config{
		Service:     transporttest.Service(t, actors.Config{Store: store}),
		Revocations: openRevocations(t, store, t.TempDir()),
	})
	issued := time.Now()
	tablet, err := dialGateway(t, two, "ann", "tablet", issued)
	if err != nil {
		t.Fatal(err)
	}
	phone, err := dialGateway(t, two, "ann", "phone", issued)
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	if _, err := one.Server.DisconnectDevice(context.Background(), "ann", "tablet"); err != nil {
		t.Fatal(err)
	}
	if code := endCode(t, tablet); code != wire.CodeDisconnected {
		t.Fatalf("ann's tablet on the second gateway ended with code %d, want %d", code, wire.CodeDisconnected)
	}
	t.Logf("closed on the other gateway %s after the disconnect", time.Since(asked).Round(time.Microsecond))
	if !stillConnected(phone) {
		t.Fatal("ann's phone was closed by the tablet's disconnect")
	}

	// The tablet logs in again; a node reading the disconnect only now
	// (the same event, appended again) must leave it alone.
	again, err := dialGateway(t, two, "ann", "tablet", issued)
	if err != nil {
		t.Fatal(err)
	}
	late := asked.Add(-time.Millisecond)
	for _, ev := range []*eventspb.DeviceDisconnected{
		{User: "ann", Device: "tablet", AtUnixMs: late.UnixMilli()},
		{User: "ann", Device: "phone", AtUnixMs: time.Now().UnixMilli()}, // read after it: a marker
	} {
		data, err := events.Encode([16]byte{}, ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.AppendToStream(context.Background(), transport.RevocationsStream, events.Any, data); err != nil {
			t.Fatal(err)
		}
	}
	if code := endCode(t, phone); code != wire.CodeDisconnected {
		t.Fatalf("ann's phone ended with code %d, want %d", code, wire.CodeDisconnected)
	}
	if !stillConnected(again) {
		t.Fatal("the tablet, logged in again after its disconnect, was closed by a late reading of it")
	}
}

// Revocations.Revoke, called directly (not through RevokeTokens), closes
// the connections it refuses on the servers using those revocations, in
// file mode and in store mode; a closed server no longer watches them.
func TestRevokeClosesTheServersConnections(t *testing.T) {
	for _, mode := range []string{"file", "store"} {
		t.Run(mode, func(t *testing.T) {
			var revs *transport.Revocations
			store := teststore.Open(t)
			if mode == "file" {
				var err error
				if revs, err = transport.LoadRevocations(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			} else {
				revs = openRevocations(t, store, t.TempDir())
			}
			g := transporttest.Listen(t, "", transport.Config{Service: transporttest.Service(t, actors.Config{Store: store}), Revocations: revs})
			ann, err := dialGateway(t, g, "ann", "phone", time.Now().Add(-time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if err := revs.Revoke("ann", time.Now()); err != nil {
				t.Fatal(err)
			}
			if code := endCode(t, ann); code != wire.CodeUnauthorized {
				t.Fatalf("ann's phone ended with code %d, want %d", code, wire.CodeUnauthorized)
			}
			if revs.Watchers() != 1 {
				t.Fatalf("%d servers watch the revocations, want 1", revs.Watchers())
			}
			g.Server.Close()
			if revs.Watchers() != 0 {
				t.Fatalf("%d servers watch the revocations after Close, want 0", revs.Watchers())
			}
		})
	}
}

// breakableStore cuts the subscriptions of the store it wraps, and refuses
// new ones, while broken.
type breakableStore struct {
	events.Store
	mu     sync.Mutex
	broken bool
	cut    chan struct{} // closed when broken
}

func newBreakableStore(s events.Store) *breakableStore {
	return &breakableStore{Store: s, cut: make(chan struct{})}
}

var errUnreachable = errors.New("store unreachable")

func (b *breakableStore) setBroken(broken bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if broken && !b.broken {
		close(b.cut)
	}
	if !broken && b.broken {
		b.cut = make(chan struct{})
	}
	b.broken = broken
}

func (b *breakableStore) SubscribeToStream(ctx context.Context, stream string, from events.SubscribeFrom) (events.Subscription, error) {
	b.mu.Lock()
	broken, cut := b.broken, b.cut
	b.mu.Unlock()
	if broken {
		return nil, errUnreachable
	}
	sub, err := b.Store.SubscribeToStream(ctx, stream, from)
	if err != nil {
		return nil, err
	}
	return &cuttableSub{Subscription: sub, cut: cut}, nil
}

type cuttableSub struct {
	events.Subscription
	cut <-chan struct{}
}

func (s *cuttableSub) Recv(ctx context.Context) (events.RecordedEvent, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.cut:
			cancel()
		case <-ctx.Done():
		}
	}()
	e, err := s.Subscription.Recv(ctx)
	select {
	case <-s.cut:
		return events.RecordedEvent{}, errUnreachable
	default:
	}
	return e, err
}

// A node whose subscription to the revocations stream is broken says so
// (FollowErr, and the imsync_revocations_follow_up gauge) until it
// follows again.
func TestRevocationsReportABrokenSubscription(t *testing.T) {
	store := newBreakableStore(teststore.Open(t))
	revs := openRevocations(t, store, t.TempDir())
	ts := startOpsServer(t, transport.Config{Revocations: revs}, nil)
	gauge := func() float64 { return metricValue(scrape(t, ts.ops), "imsync_revocations_follow_up") }
	if err := revs.FollowErr(); err != nil {
		t.Fatalf("a fresh subscription: %v", err)
	}
	if g := gauge(); g != 1 {
		t.Fatalf("imsync_revocations_follow_up while following: %v", g)
	}
	store.setBroken(true)
	waitUntil(t, "FollowErr reports the broken subscription", func() bool {
		return errors.Is(revs.FollowErr(), errUnreachable)
	})
	if g := gauge(); g != 0 {
		t.Fatalf("imsync_revocations_follow_up while broken: %v", g)
	}
	store.setBroken(false)
	waitUntil(t, "following again", func() bool { return revs.FollowErr() == nil })
	if g := gauge(); g != 1 {
		t.Fatalf("imsync_revocations_follow_up following again: %v", g)
	}
}

// appendFailing is a store whose appends to the revocations stream fail
// while fail is set.
type appendFailing struct {
	events.Store
	fail atomic.Bool
}

func (s *appendFailing) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	if s.fail.Load() && stream == transport.RevocationsStream {
		return events.WriteResult{}, errors.New("store unavailable")
	}
	return s.Store.AppendToStream(ctx, stream, expected, evs...)
}

// A disconnect whose record in the store fails has closed this node's
// connections already: it says how many along with the error.
func TestDisconnectUnrecordedReportsClosed(t *testing.T) {
	store := &appendFailing{Store: teststore.Open(t)}
	g := transporttest.Listen(t, t.TempDir(), transport.Config{
		Service:     transporttest.Service(t, actors.Config{Store: store.Store}),
		Revocations: openRevocations(t, store, t.TempDir()),
	})
	tablet, err := dialGateway(t, g, "ann", "tablet", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store.fail.Store(true)
	n, err := g.Server.DisconnectDevice(context.Background(), "ann", "tablet")
	if err == nil || n != 1 || !strings.Contains(err.Error(), "1 connection(s)") {
		t.Fatalf("disconnect with a failing store: %d, %v; want 1 and an error saying so", n, err)
	}
	if code := endCode(t, tablet); code != wire.CodeDisconnected {
		t.Fatalf("the tablet ended with code %d, want %d", code, wire.CodeDisconnected)
	}
}
