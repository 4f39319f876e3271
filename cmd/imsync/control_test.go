package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
)

// TestControlCloseDoesNotWaitForSilentPeers: a peer that connects to the
// control socket and never sends its request (or follows the store and
// never reads) does not hold the server's stop until its deadline.
func TestControlCloseDoesNotWaitForSilentPeers(t *testing.T) {
	data := t.TempDir()
	store, err := events.Open(filepath.Join(data, "events"), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c, err := startControl(data, store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || c == nil {
		t.Fatalf("control socket: %v", err)
	}
	silent, err := net.Dial("unix", controlSocket(data))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	followed := make(chan error, 1)
	first := make(chan struct{}, 1)
	go func() {
		followed <- followServer(ctx, data, 0, nil, func(events.RecordedEvent) error {
			select {
			case first <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	if _, err := store.AppendToStream(ctx, "x", events.Any, events.EventData{Type: "T"}); err != nil {
		t.Fatal(err)
	}
	select { // the follower is served (and the silent peer, accepted before it)
	case <-first:
	case err := <-followed:
		t.Fatalf("follow: %v", err)
	}
	closed := make(chan struct{})
	go func() { c.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second): // the silent peer's own deadline is 10 s
		t.Fatal("close waited for a peer that never sent its request")
	}
	select {
	case err := <-followed:
		if exitCode(err) != exitUnavailable {
			t.Fatalf("the follower ended with %v, want the server-stopped error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not end when the server stopped")
	}
}
