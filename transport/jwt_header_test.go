package transport_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// A JWS whose crit header names extensions must be refused by a verifier
// that does not understand them (RFC 7515, section 4.1.11): the issuer
// meant the token to be invalid anywhere they are not enforced.
func TestCritHeaderRefused(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, deviceClaims("ann", "phone", time.Hour))
	tok.Header["kid"] = "k1"
	tok.Header["crit"] = []string{"https://app.example/bound-to-ip"}
	tok.Header["https://app.example/bound-to-ip"] = "203.0.113.7"
	s, err := tok.SignedString(b.keys["k1"])
	if err != nil {
		t.Fatal(err)
	}
	_, err = dialToken(t, ts, s)
	if !errors.Is(err, client.ErrBadToken) || !strings.Contains(err.Error(), "crit") {
		t.Fatalf("a token with a crit header: %v, want refused naming crit", err)
	}
}
