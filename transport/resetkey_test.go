package transport_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imsync/imsync/transport"
)

func TestResetKeyKeptInDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := transport.LoadOrCreateResetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, transport.ResetKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("%s: mode %v, %d bytes; want 0600, 32", path, fi.Mode().Perm(), fi.Size())
	}
	k2, err := transport.LoadOrCreateResetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *k1 != *k2 {
		t.Fatal("the key changed when loaded again")
	}
	if *k1 == [32]byte{} {
		t.Fatal("an all-zero key")
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateResetKey(dir); err == nil {
		t.Fatal("a 5-byte key file was accepted")
	}
}
