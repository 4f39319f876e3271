package transport_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// iat is optional, but a token without it cannot be told apart from one
// issued before a revocation: once a user's tokens are revoked, such tokens
// are refused for good, and the refusal says so (that new tokens need an
// iat) instead of a bare "token revoked" that sends the backend hunting.
// Tokens with an iat after the revocation log in.
func TestRevokedUserTokenWithoutIatSaysWhy(t *testing.T) {
	b := newBackend(t, "k1")
	revs, err := transport.LoadRevocations(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Now().Unix())
	ts := startJWTServer(t, b, transport.Config{Revocations: revs, Now: func() time.Time { return time.Unix(now.Load(), 0) }})
	noIat := func() string {
		c := deviceClaims("ann", "phone", time.Hour)
		delete(c, "iat")
		return b.mint(t, "k1", c)
	}
	if _, err := dialToken(t, ts, noIat()); err != nil {
		t.Fatalf("a token without iat before any revocation: %v", err)
	}
	if _, _, err := ts.srv.RevokeTokens("ann"); err != nil {
		t.Fatal(err)
	}
	now.Add(5) // later tokens are minted after the revocation's second
	_, err = dialToken(t, ts, noIat())
	if !errors.Is(err, client.ErrBadToken) || !strings.Contains(err.Error(), "no iat") {
		t.Fatalf("a token without iat after a revocation: %v, want a refusal that names the missing iat", err)
	}
	c := deviceClaims("ann", "phone", time.Hour)
	c["iat"] = now.Load()
	if _, err := dialToken(t, ts, b.mint(t, "k1", c)); err != nil {
		t.Fatalf("a token with an iat after the revocation: %v", err)
	}
}

// A token whose iat lies ahead of the server's clock would outlive a
// revocation until then (revocations refuse tokens issued up to their
// second): one issued more than a minute in the future is refused.
func TestTokenIssuedInTheFutureRefused(t *testing.T) {
	b := newBackend(t, "k1")
	revs, err := transport.LoadRevocations(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := startJWTServer(t, b, transport.Config{Revocations: revs})
	withIat := func(iat time.Time) string {
		c := deviceClaims("ann", "phone", 48*time.Hour)
		c["iat"] = iat.Unix()
		return b.mint(t, "k1", c)
	}
	if _, err := dialToken(t, ts, withIat(time.Now().Add(30*time.Second))); err != nil {
		t.Fatalf("iat 30 s ahead (clock skew): %v", err)
	}
	future := withIat(time.Now().Add(24 * time.Hour))
	_, err = dialToken(t, ts, future)
	if !errors.Is(err, client.ErrBadToken) || !strings.Contains(err.Error(), "iat") {
		t.Fatalf("iat a day ahead: %v, want refused naming iat", err)
	}
	if _, _, err := ts.srv.RevokeTokens("ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := dialToken(t, ts, future); err == nil {
		t.Fatal("a token issued in the future outlived its user's revocation")
	}
}

// A revocations file holding JSON null (hand-edited, or written by a
// tool) loads as no revocations, and revoking then works instead of
// panicking on a nil map.
func TestRevocationsFileWithNull(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, transport.RevocationsFile), []byte("null\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	revs, err := transport.LoadRevocations(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := revs.Revoke("ann", at); err != nil {
		t.Fatal(err)
	}
	again, err := transport.LoadRevocations(dir)
	if err != nil || !again.Revoked("ann", at) {
		t.Fatalf("after a restart: revoked %v, %v", again.Revoked("ann", at), err)
	}
}
