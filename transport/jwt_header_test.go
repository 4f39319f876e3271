package transport_test

import (
	"errors"
	"fmt"
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

// TestBackendJWTStringDatesRefused: an app backend's JWT whose exp, iat
// or nbf is a JSON string instead of a number (RFC 7519 NumericDate) does
// not log in; the refusal names the claim.
func TestBackendJWTStringDatesRefused(t *testing.T) {
	b := newBackend(t, "k1")
	ts := startJWTServer(t, b, transport.Config{})
	good := deviceClaims("ann", "phone", time.Hour)
	if _, err := dialToken(t, ts, b.mint(t, "k1", good)); err != nil {
		t.Fatalf("numeric dates: %v", err)
	}
	for _, claim := range []string{"exp", "iat", "nbf"} {
		c := deviceClaims("ann", "phone", time.Hour)
		c["nbf"] = c["iat"]
		c[claim] = fmt.Sprint(c[claim])
		_, err := dialToken(t, ts, b.mint(t, "k1", c))
		if !errors.Is(err, client.ErrBadToken) || !strings.Contains(err.Error(), "claim "+claim+" is a JSON string") {
			t.Errorf("%s as a string: %v, want refused naming it", claim, err)
		}
	}
}
