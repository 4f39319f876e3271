package transport

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mintV1 makes a token in the HMAC format of earlier releases.
func mintV1(k *Key, user, device string, ttl time.Duration, now time.Time) string {
	claims, _ := json.Marshal(Claims{User: user, Device: device, Expires: now.Add(ttl).Unix(), Issued: now.Unix()})
	body := "v1." + base64.RawURLEncoding.EncodeToString(claims)
	return body + "." + base64.RawURLEncoding.EncodeToString(k.sign(body))
}

func TestTokens(t *testing.T) {
	now := time.Now()
	key := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	other := NewKey([]byte("another-key-another-key-another-k"))
	tok, err := key.Mint("ann", "phone", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok, ".") != 2 || isV1(tok) {
		t.Fatalf("not a JWT: %s", tok)
	}
	c, err := key.Verify(tok, now.Add(59*time.Minute))
	if err != nil || c.User != "ann" || c.Device != "phone" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	if key.KID() == other.KID() || !strings.HasPrefix(key.KID(), "dev-") {
		t.Fatalf("kids %q %q", key.KID(), other.KID())
	}
	parts := strings.Split(tok, ".")
	otherTok, _ := other.Mint("ann", "phone", time.Hour, now)
	bobTok, _ := key.Mint("bob", "phone", time.Hour, now)
	bobParts := strings.Split(bobTok, ".")
	for name, bad := range map[string]struct {
		tok string
		at  time.Time
	}{
		"expired":         {tok, now.Add(time.Hour + time.Second)},
		"wrong key":       {otherTok, now},
		"swapped claims":  {parts[0] + "." + bobParts[1] + "." + parts[2], now},
		"no signature":    {parts[0] + "." + parts[1], now},
		"empty signature": {parts[0] + "." + parts[1] + ".", now},
		"empty":           {"", now},
		"garbage":         {"%%%.%%%.%%%", now},
		"too long":        {tok + strings.Repeat("A", maxTokenSize), now},
	} {
		if _, err := key.Verify(bad.tok, bad.at); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := key.Mint("a/b", "phone", time.Hour, now); err == nil {
		t.Fatal("minted a token for an invalid user id")
	}
}

// Tokens in the v1 format of earlier releases keep working until they
// expire.
func TestV1TokensStillAccepted(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	key := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	other := NewKey([]byte("another-key-another-key-another-k"))
	tok := mintV1(key, "ann", "phone", time.Hour, now)
	c, err := key.Verify(tok, now.Add(59*time.Minute))
	if err != nil || c.User != "ann" || c.Device != "phone" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	forged := strings.Replace(tok, tok[3:10], "AAAAAAA", 1)
	parts := strings.Split(tok, ".")
	for name, bad := range map[string]struct {
		tok string
		at  time.Time
	}{
		"expired":        {tok, now.Add(time.Hour)},
		"wrong key":      {mintV1(other, "ann", "phone", time.Hour, now), now},
		"forged claims":  {forged, now},
		"no signature":   {parts[0] + "." + parts[1], now},
		"garbage":        {"v1.%%%.%%%", now},
		"signature only": {"v1..", now},
	} {
		if _, err := key.Verify(bad.tok, bad.at); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := k1.Mint("ann", "phone", time.Hour, time.Now())
	if _, err := k2.Verify(tok, time.Now()); err != nil {
		t.Fatalf("the reloaded key refuses a token of the first: %v", err)
	}
}

// The cost of checking a token at login: a JWT (Ed25519 signature) and a
// v1 token (HMAC-SHA256).
func BenchmarkVerifyToken(b *testing.B) {
	key := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Now()
	b.Run("jwt", func(b *testing.B) {
		tok, _ := key.Mint("ann", "phone", time.Hour, now)
		for b.Loop() {
			if _, err := key.Verify(tok, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("v1", func(b *testing.B) {
		tok := mintV1(key, "ann", "phone", time.Hour, now)
		for b.Loop() {
			if _, err := key.Verify(tok, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
