package transport

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeyNeverCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if _, err := LoadKey(dir); !errors.Is(err, ErrNoKey) {
		t.Fatalf("LoadKey of a missing key: %v, want ErrNoKey", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("LoadKey created something: %v", err)
	}
	if KeyExists(dir) {
		t.Fatal("KeyExists on a missing key")
	}
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKey(dir)
	if err != nil || !bytes.Equal(k1.secret, k2.secret) || !KeyExists(dir) {
		t.Fatalf("LoadKey after creation: %v", err)
	}
}

func TestLoadOrCreateCertRefusesHalfAPair(t *testing.T) {
	for _, missing := range []string{CertFile, certKey} {
		dir := t.TempDir()
		if _, err := LoadOrCreateCert(dir); err != nil {
			t.Fatal(err)
		}
		other := CertFile
		if missing == CertFile {
			other = certKey
		}
		kept, _ := os.ReadFile(filepath.Join(dir, other))
		os.Remove(filepath.Join(dir, missing))
		if _, err := LoadOrCreateCert(dir); err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("%s missing: %v, want an error naming it", missing, err)
		}
		if now, _ := os.ReadFile(filepath.Join(dir, other)); !bytes.Equal(now, kept) {
			t.Fatalf("%s missing: %s was rewritten", missing, other)
		}
		if _, err := os.Stat(filepath.Join(dir, missing)); !os.IsNotExist(err) {
			t.Fatalf("%s was recreated", missing)
		}
	}
	dir := t.TempDir()
	if _, err := LoadCert(dir); !errors.Is(err, ErrNoCert) || CertExists(dir) {
		t.Fatalf("LoadCert of an empty directory: %v", err)
	}
}
