package transport

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	key := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	other := NewKey([]byte("another-key-another-key-another-k"))
	tok, err := key.Mint("ann", "phone", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := key.Verify(tok, now.Add(59*time.Minute))
	if err != nil || c.User != "ann" || c.Device != "phone" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	forged := strings.Replace(tok, tok[3:10], "AAAAAAA", 1)
	parts := strings.Split(tok, ".")
	otherTok, _ := other.Mint("ann", "phone", time.Hour, now)
	for name, bad := range map[string]struct {
		tok string
		at  time.Time
	}{
		"expired":        {tok, now.Add(time.Hour)},
		"wrong key":      {otherTok, now},
		"forged claims":  {forged, now},
		"no signature":   {parts[0] + "." + parts[1], now},
		"empty":          {"", now},
		"garbage":        {"v1.%%%.%%%", now},
		"other version":  {"v2." + parts[1] + "." + parts[2], now},
		"signature only": {"v1..", now},
	} {
		if _, err := key.Verify(bad.tok, bad.at); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := key.Mint("a/b", "phone", time.Hour, now); err == nil {
		t.Fatal("minted a token for an invalid user id")
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
