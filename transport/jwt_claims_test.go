package transport

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// devJWT signs raw claims with k's development key, as a careless issuer
// would write them.
func devJWT(t *testing.T, k *Key, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.dev)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// v1Token signs a raw JSON claim set in the v1 format.
func v1Token(k *Key, claims string) string {
	body := "v1." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	return body + "." + base64.RawURLEncoding.EncodeToString(k.sign(body))
}

// TestNumericDateMustBeANumber: exp, iat and nbf are NumericDates, JSON
// numbers (RFC 7519, section 2). The same claims as strings, null or
// anything else refuse the token with ErrBadToken naming the claim, in
// JWTs (of the development key; JWKS keys go the same way, see
// TestBackendJWTStringDatesRefused) and in v1 tokens alike.
func TestNumericDateMustBeANumber(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	key := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	exp, iat := now.Add(time.Hour).Unix(), now.Add(-time.Minute).Unix()
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "ann", "device": "phone", "exp": exp, "iat": iat, "nbf": iat}
		if change != nil {
			change(c)
		}
		return c
	}
	if c, err := key.Verify(devJWT(t, key, claims(nil)), now); err != nil || c.Expires != exp || c.Issued != iat {
		t.Fatalf("numbers: %+v, %v", c, err)
	}
	for name, tc := range map[string]struct {
		claim  string
		change func(jwt.MapClaims)
	}{
		"exp as a string":      {"exp", func(c jwt.MapClaims) { c["exp"] = "9999999999" }},
		"iat as a string":      {"iat", func(c jwt.MapClaims) { c["iat"] = "1767225600" }},
		"nbf as a string":      {"nbf", func(c jwt.MapClaims) { c["nbf"] = "1767225600" }},
		"exp as a date string": {"exp", func(c jwt.MapClaims) { c["exp"] = "2030-01-01T00:00:00Z" }},
		"exp null":             {"exp", func(c jwt.MapClaims) { c["exp"] = nil }},
		"iat null":             {"iat", func(c jwt.MapClaims) { c["iat"] = nil }},
		"exp a boolean":        {"exp", func(c jwt.MapClaims) { c["exp"] = true }},
		"exp an array":         {"exp", func(c jwt.MapClaims) { c["exp"] = []int64{exp} }},
		"exp past int64":       {"exp", func(c jwt.MapClaims) { c["exp"] = 1e19 }},
		"exp past year 9999":   {"exp", func(c jwt.MapClaims) { c["exp"] = int64(maxNumericDate + 1) }},
		"iat negative":         {"iat", func(c jwt.MapClaims) { c["iat"] = -1 }},
	} {
		_, err := key.Verify(devJWT(t, key, claims(tc.change)), now)
		if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), "claim "+tc.claim+" ") || !strings.Contains(err.Error(), "JSON number") && !strings.Contains(err.Error(), "want seconds from 0") {
			t.Errorf("JWT with %s: %v", name, err)
		}
	}

	ok := `{"u":"ann","d":"phone","exp":` + itoa(exp) + `,"iat":` + itoa(iat) + `}`
	if c, err := key.Verify(v1Token(key, ok), now); err != nil || c.Expires != exp {
		t.Fatalf("v1 with numbers: %+v, %v", c, err)
	}
	for name, tc := range map[string]struct{ claim, claims string }{
		"exp as a string": {"exp", `{"u":"ann","d":"phone","exp":"` + itoa(exp) + `","iat":` + itoa(iat) + `}`},
		"iat as a string": {"iat", `{"u":"ann","d":"phone","exp":` + itoa(exp) + `,"iat":"` + itoa(iat) + `"}`},
		"exp null":        {"exp", `{"u":"ann","d":"phone","exp":null}`},
		"exp past int64":  {"exp", `{"u":"ann","d":"phone","exp":1e19}`},
	} {
		_, err := key.Verify(v1Token(key, tc.claims), now)
		if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), "claim "+tc.claim+" ") || !strings.Contains(err.Error(), "JSON number") && !strings.Contains(err.Error(), "want seconds from 0") {
			t.Errorf("v1 token with %s: %v", name, err)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
