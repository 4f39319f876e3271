package testserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/imsync/imsync/events/esdb/testserver"
)

// idleFor is how long the subscription stays idle: longer than the three
// client pings (one every 10 s) after which a server with gRPC's default
// keep-alive policy would close the connection (too_many_pings).
const idleFor = 35 * time.Second

// An idle subscription outlives the official client's keep-alive pings.
func TestIdleSubscriptionSurvivesKeepAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the client's keep-alive pings")
	}
	t.Parallel()
	srv := startServer(t, testserver.Options{})
	c := newClient(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), idleFor+testTimeout)
	defer cancel()
	sub, err := c.SubscribeToStream(ctx, "s", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectSub(t, sub, "caught-up")

	got := make(chan subEvent, 1)
	go func() { got <- next(sub) }()
	select {
	case e := <-got:
		t.Fatalf("idle subscription ended with %v", e)
	case <-time.After(idleFor):
	}
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "late"))
	select {
	case e := <-got:
		if e.String() != `event "late"@0` {
			t.Fatalf("after %s idle: %v", idleFor, e)
		}
	case <-ctx.Done():
		t.Fatal("the event appended after the idle time never arrived")
	}
}
