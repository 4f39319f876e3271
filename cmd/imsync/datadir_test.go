package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
)

// started runs a first start on a new data directory and stops it.
func started(t *testing.T) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	st, err := startStack(data, "", "127.0.0.1:0", nil, transport.Config{})
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	st.close()
	for _, name := range []string{"events", "token.key", "server.crt", "server.key", dataMarker} {
		if _, err := os.Stat(filepath.Join(data, name)); err != nil {
			t.Fatalf("first start did not create %s: %v", name, err)
		}
	}
	return data
}

func restart(t *testing.T, data string) error {
	t.Helper()
	st, err := startStack(data, "", "127.0.0.1:0", nil, transport.Config{})
	if err == nil {
		st.close()
	}
	return err
}

func TestServeRefusesMissingStore(t *testing.T) {
	data := started(t)
	if err := os.RemoveAll(storeDir(data)); err != nil {
		t.Fatal(err)
	}
	err := restart(t, data)
	if !errors.Is(err, errDataDir) || !strings.Contains(err.Error(), storeDir(data)) || !strings.Contains(err.Error(), "--new-store") {
		t.Fatalf("restart without events/: %v", err)
	}
	if _, err := os.Stat(storeDir(data)); !os.IsNotExist(err) {
		t.Fatalf("a refused start created the store: %v", err)
	}
	if err := createAllowed(data, dataDirAllow{store: true}, false, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := restart(t, data); err != nil {
		t.Fatalf("after --new-store: %v", err)
	}
}

// A directory from a build without the marker is recognised by its
// certificate.
func TestServeRefusesMissingStoreWithoutMarker(t *testing.T) {
	data := started(t)
	os.RemoveAll(storeDir(data))
	os.Remove(filepath.Join(data, dataMarker))
	if err := restart(t, data); !errors.Is(err, errDataDir) {
		t.Fatalf("restart without events/ and marker: %v", err)
	}
}

func TestServeRefusesMissingKey(t *testing.T) {
	data := started(t)
	old, _ := os.ReadFile(filepath.Join(data, "token.key"))
	os.Remove(filepath.Join(data, "token.key"))
	err := restart(t, data)
	if !errors.Is(err, errDataDir) || !strings.Contains(err.Error(), "token.key") || !strings.Contains(err.Error(), "--new-key") {
		t.Fatalf("restart without token.key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "token.key")); !os.IsNotExist(err) {
		t.Fatalf("a refused start created a key: %v", err)
	}
	if err := createAllowed(data, dataDirAllow{key: true}, false, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := restart(t, data); err != nil {
		t.Fatalf("after --new-key: %v", err)
	}
	if now, _ := os.ReadFile(filepath.Join(data, "token.key")); bytes.Equal(now, old) || len(now) == 0 {
		t.Fatal("--new-key did not create a new key")
	}
}

func TestServeRefusesMissingCertificate(t *testing.T) {
	data := started(t)
	crt := filepath.Join(data, transport.CertFile)
	old, _ := os.ReadFile(crt)
	// Half a pair: refused, the other half left as it is.
	os.Remove(filepath.Join(data, "server.key"))
	err := restart(t, data)
	if err == nil || !strings.Contains(err.Error(), "server.key") {
		t.Fatalf("restart without server.key: %v", err)
	}
	if now, _ := os.ReadFile(crt); !bytes.Equal(now, old) {
		t.Fatal("the certificate was replaced")
	}
	// Neither file: refused unless --new-cert.
	os.Remove(crt)
	if err := restart(t, data); !errors.Is(err, errDataDir) || !strings.Contains(err.Error(), "--new-cert") {
		t.Fatalf("restart without a certificate: %v", err)
	}
	if _, err := os.Stat(crt); !os.IsNotExist(err) {
		t.Fatalf("a refused start created a certificate: %v", err)
	}
	if err := createAllowed(data, dataDirAllow{cert: true}, false, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := restart(t, data); err != nil {
		t.Fatalf("after --new-cert: %v", err)
	}
}

// A key put in place before the first start (provisioning) is used.
func TestServeFirstStartWithProvisionedKey(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := restart(t, data); err != nil {
		t.Fatalf("first start with a provisioned key: %v", err)
	}
	again, err := transport.LoadKey(data)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	tok, _ := key.Mint("ann", "d", time.Minute, now)
	if _, err := again.Verify(tok, now); err != nil {
		t.Fatalf("the provisioned key was replaced: %v", err)
	}
}

func TestTokenRefusesWrongDir(t *testing.T) {
	wrong := filepath.Join(t.TempDir(), "not-data")
	_, err := runCmd(t, "token", "--data", wrong, "--user", "ann", "--device", "d")
	if !errors.Is(err, transport.ErrNoKey) || !strings.Contains(err.Error(), "not the data directory") {
		t.Fatalf("token --data WRONGDIR: %v", err)
	}
	if _, err := os.Stat(wrong); !os.IsNotExist(err) {
		t.Fatalf("token created something in the wrong directory: %v", err)
	}
}

// TestStoreRecover: `store recover` needs --accept-data-loss, then opens a
// store whose WAL lost acknowledged events and reports the loss; serve
// refuses the damaged store before it.
func TestStoreRecover(t *testing.T) {
	data := t.TempDir()
	for i := range 50 {
		if _, err := runCmd(t, "store", "append", "--data", data, "--stream", "conv-1", strings.Repeat("x", 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(storeDir(data), "db", "*.log"))
	if len(logs) == 0 {
		t.Fatal("no WAL file")
	}
	wal := logs[len(logs)-1]
	b, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+4; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(wal, b, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "store", "read", "--data", data, "--stream", "conv-1"); !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), "--accept-data-loss") {
		t.Fatalf("read of a damaged store: %v", err)
	}
	if _, err := runCmd(t, "store", "recover", "--data", data); !errors.Is(err, errUsage) {
		t.Fatalf("recover without --accept-data-loss: %v", err)
	}
	out, err := runCmd(t, "store", "recover", "--data", data, "--accept-data-loss")
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if !strings.Contains(out, `"acknowledged_position":50`) || strings.Contains(out, `"lost_events":0`) {
		t.Fatalf("recover reported %s", out)
	}
	if rec, err := os.ReadFile(filepath.Join(storeDir(data), "RECOVERIES")); err != nil || !strings.Contains(string(rec), "..50 were lost") {
		t.Fatalf("recovery record: %q %v", rec, err)
	}
	out, err = runCmd(t, "store", "append", "--data", data, "--stream", "conv-2", "after")
	if err != nil || !strings.Contains(out, `"position":51`) {
		t.Fatalf("append after recovery: %s %v (want position 51: no acknowledged position reused)", out, err)
	}
}
