package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/transporttest"
)

// noRevocationsFeed is a store that cannot follow the revocations stream
// (reads and appends work).
type noRevocationsFeed struct{ events.Store }

func (s noRevocationsFeed) SubscribeToStream(ctx context.Context, stream string, from events.SubscribeFrom) (events.Subscription, error) {
	if stream == transport.RevocationsStream {
		return nil, errors.New("subscription refused")
	}
	return s.Store.SubscribeToStream(ctx, stream, from)
}

// TestReadyWhileFollowingRevocations: /readyz's check fails, saying why,
// on a node that does not follow the revocations stream (it would admit
// tokens revoked through other nodes).
func TestReadyWhileFollowingRevocations(t *testing.T) {
	store := noRevocationsFeed{teststore.Open(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	revs, err := transport.OpenRevocations(ctx, store, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer revs.Close()
	svc := transporttest.Service(t, actors.Config{Store: store})
	g := transporttest.Listen(t, "", transport.Config{Service: svc, Revocations: revs})
	st := &stack{store: store, svc: svc, srv: g.Server, revs: revs}
	var last error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		last = st.ready(ctx)
		if last != nil && strings.Contains(last.Error(), "revocations: not following") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready while the revocations stream is not followed: %v", last)
		}
	}
	t.Logf("/readyz: not ready: %v", last)
}
