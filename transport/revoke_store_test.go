package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/transporttest"
	"github.com/imsync/imsync/transport/wire"
)

func openRevocations(t *testing.T, store events.Store, dir string) *transport.Revocations {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := transport.OpenRevocations(ctx, store, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func revocationEvents(t *testing.T, store events.Store) []string {
	t.Helper()
	page, err := store.ReadStream(context.Background(), transport.RevocationsStream, events.ReadStreamOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, e := range page {
		m, err := events.Decode(e.Type, e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if tr, ok := m.(*eventspb.TokensRevoked); ok {
			users = append(users, tr.User)
		}
	}
	return users
}

// The revocations of an older version's file move into the store once;
// the store keeps them, and those made since, across restarts, with or
// without the file.
func TestRevocationsLogSurvivesRestartAndTakesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	t1, t2 := time.Unix(1_700_000_000, 0).UTC(), time.Unix(1_700_000_100, 0).UTC()
	file, _ := json.Marshal(map[string]time.Time{"ann": t1, "bob": t2})
	if err := os.WriteFile(filepath.Join(dir, transport.RevocationsFile), file, 0o600); err != nil {
		t.Fatal(err)
	}
	data := teststore.NewDurable(t, filepath.Join(dir, "store"))

	store := data.Open()
	revs := openRevocations(t, store, dir)
	if !revs.Revoked("ann", t1) || revs.Revoked("ann", t1.Add(time.Second)) || !revs.Revoked("bob", t2) {
		t.Fatal("the file's revocations were not taken")
	}
	t3 := time.Now().Truncate(time.Millisecond)
	if err := revs.Revoke("carl", t3); err != nil {
		t.Fatal(err)
	}
	// Revoking again, or with an earlier time, records nothing.
	if err := revs.Revoke("carl", t3); err != nil {
		t.Fatal(err)
	}
	if err := revs.Revoke("carl", t3.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !revs.RevokedAt("carl").Equal(t3) {
		t.Fatalf("carl revoked at %v, want %v", revs.RevokedAt("carl"), t3)
	}
	revs.Close()
	store.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, transport.RevocationsFile)); string(b) != string(file) {
		t.Fatalf("the file was written: %s", b)
	}

	// Restarted with the file still there: nothing is moved twice.
	store = data.Open()
	defer store.Close()
	revs = openRevocations(t, store, dir)
	if got := revocationEvents(t, store); len(got) != 3 {
		t.Fatalf("stream holds revocations of %v, want ann, bob and carl once", got)
	}
	revs.Close()

	// Without the file: the store alone says it all.
	if err := os.Remove(filepath.Join(dir, transport.RevocationsFile)); err != nil {
		t.Fatal(err)
	}
	revs = openRevocations(t, store, dir)
	if !revs.Revoked("ann", t1) || !revs.Revoked("bob", t2) || !revs.Revoked("carl", t3) || revs.Revoked("carl", t3.Add(time.Second)) {
		t.Fatalf("after a restart: ann %v bob %v carl %v", revs.RevokedAt("ann"), revs.RevokedAt("bob"), revs.RevokedAt("carl"))
	}
}

// Two Revocations on one store (two nodes) follow each other's; an older
// revocation read from the stream moves no time backwards.
func TestRevocationsFollowTheStore(t *testing.T) {
	store := teststore.Open(t)
	a := openRevocations(t, store, t.TempDir())
	b := openRevocations(t, store, t.TempDir())
	at := time.Now().Truncate(time.Millisecond)
	if err := a.Revoke("ann", at); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b learns of ann's revocation", func() bool { return b.Revoked("ann", at) })
	old, err := events.Encode([16]byte{}, &eventspb.TokensRevoked{User: "ann", RevokedAtUnixMs: at.Add(-time.Hour).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	marker, _ := events.Encode([16]byte{}, &eventspb.TokensRevoked{User: "zed", RevokedAtUnixMs: at.UnixMilli()})
	if _, err := store.AppendToStream(context.Background(), transport.RevocationsStream, events.Any, old, marker); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b reads past the old revocation", func() bool { return b.Revoked("zed", at) })
	if !b.RevokedAt("ann").Equal(at) {
		t.Fatalf("ann's revocation moved to %v, want %v", b.RevokedAt("ann"), at)
	}
}

// A revocation through one gateway closes the user's connection on
// another gateway over the same store, which refuses the old token from
// then on; a device disconnected through one gateway is closed on the
// other.
func TestRevokeAndDisconnectReachAnotherGateway(t *testing.T) {
	store := teststore.Open(t)
	svc := transporttest.Service(t, actors.Config{Store: store})
	dir := t.TempDir() // the gateways share key and certificate, as nodes do
	one := transporttest.Listen(t, dir, transport.Config{Service: svc, Revocations: openRevocations(t, store, t.TempDir())})
	two := transporttest.Listen(t, dir, transport.Config{Service: svc, Revocations: openRevocations(t, store, t.TempDir())})
	issued := time.Now()
	dial := func(g *transporttest.Gateway, user, device string) (*client.Client, error) {
		return dialGateway(t, g, user, device, issued)
	}
	phone, err := dial(two, "bob", "phone")
	if err != nil {
		t.Fatal(err)
	}
	tablet, err := dial(two, "ann", "tablet")
	if err != nil {
		t.Fatal(err)
	}

	n, err := one.Server.DisconnectDevice(context.Background(), "ann", "tablet")
	if err != nil || n != 1 {
		t.Fatalf("disconnect through the first gateway: %d closed, %v", n, err)
	}
	if code := endCode(t, tablet); code != wire.CodeDisconnected {
		t.Fatalf("ann's tablet ended with code %d, want %d", code, wire.CodeDisconnected)
	}

	at, closed, err := one.Server.RevokeTokens("bob")
	if err != nil || closed != 0 {
		t.Fatalf("revoke through the first gateway: %d closed here, %v", closed, err)
	}
	if code := endCode(t, phone); code != wire.CodeUnauthorized {
		t.Fatalf("bob's phone on the second gateway ended with code %d, want %d", code, wire.CodeUnauthorized)
	}
	var we *wire.Error
	if _, err := dial(two, "bob", "laptop"); !errors.As(err, &we) || we.Code != wire.CodeUnauthorized {
		t.Fatalf("the second gateway took a revoked token: %v", err)
	}
	issued = at.Add(time.Second)
	if _, err := dial(two, "bob", "laptop"); err != nil {
		t.Fatalf("a token issued after the revocation: %v", err)
	}
}

// endCode waits until c's connection ends for good and returns the code
// the server closed it with.
func endCode(t *testing.T, c *client.Client) uint32 {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-c.Entries():
			if !ok {
				err := c.Err()
				var we *wire.Error
				var app *quic.ApplicationError
				switch {
				case errors.As(err, &we):
					return we.Code
				case errors.As(err, &app):
					return uint32(app.ErrorCode)
				}
				t.Fatalf("the connection ended with %v, no close code", err)
			}
		case <-deadline:
			t.Fatal("the connection was not closed")
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

// A revocation read from the store closes only the connections whose
// token it refuses: one logged in with a token issued after the
// revocation's second (it reached this node late) stays.
func TestRevocationFromTheStoreSparesNewerTokens(t *testing.T) {
	store := teststore.Open(t)
	svc := transporttest.Service(t, actors.Config{Store: store})
	gw := transporttest.Listen(t, "", transport.Config{Service: svc, Revocations: openRevocations(t, store, t.TempDir())})
	now := time.Now()
	dial := func(device string, issued time.Time) *client.Client {
		tok, err := gw.Key.Mint("cat", device, time.Hour, issued)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Addr: gw.Addr, Token: tok, TLS: gw.TLS, NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	older, newer := dial("old", now.Add(-20*time.Second)), dial("new", now)
	ev, err := events.Encode([16]byte{}, &eventspb.TokensRevoked{User: "cat", RevokedAtUnixMs: now.Add(-10 * time.Second).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendToStream(context.Background(), transport.RevocationsStream, events.Any, ev); err != nil {
		t.Fatal(err)
	}
	if code := endCode(t, older); code != wire.CodeUnauthorized {
		t.Fatalf("the older token's connection ended with code %d, want %d", code, wire.CodeUnauthorized)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := newer.Conversations(ctx); err != nil {
		t.Fatalf("the newer token's connection: %v", err)
	}
}

// An older version's file, written with nanosecond times (Revoke with
// time.Now() in file mode), moves into the store once: the stream keeps
// milliseconds, and the next starts find the file's times already there.
func TestRevocationsFileMigratesOnce(t *testing.T) {
	dir := t.TempDir()
	old, err := transport.LoadRevocations(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_700_000_000, 123_456_789) // a sub-millisecond part, as time.Now() has
	if err := old.Revoke("ann", at); err != nil {
		t.Fatal(err)
	}
	data := teststore.NewDurable(t, filepath.Join(dir, "store"))
	for start := 1; start <= 3; start++ {
		store := data.Open()
		revs := openRevocations(t, store, dir)
		got := revocationEvents(t, store)
		revoked := revs.Revoked("ann", at)
		revs.Close()
		store.Close()
		if len(got) != 1 {
			t.Fatalf("after start %d the stream holds %d revocations (%v), want 1", start, len(got), got)
		}
		if !revoked {
			t.Fatalf("after start %d a token issued at the file's revocation is accepted", start)
		}
	}
}
