package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/transport"
)

// lockedLog collects log lines written from several goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Entries of an older version's revocations file that the server would
// never have recorded (a bad user id, a time before 1970 or far ahead)
// are skipped with one warning each and never appended; the valid one is
// appended once, whatever the number of starts.
func TestRevocationsFileMigrationSkipsInvalidEntries(t *testing.T) {
	dir := t.TempDir()
	valid := time.Unix(1_700_000_000, 0).UTC()
	file := map[string]time.Time{
		"ann":                     valid,
		"":                        valid,
		"a b":                     valid,
		"..":                      valid,
		"x\n\u001b[31mEVIL\u0000": valid,
		"old":                     time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
		"epoch":                   time.Unix(0, 0).UTC(),
		"future":                  time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	b, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, transport.RevocationsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	data := teststore.NewDurable(t, filepath.Join(dir, "store"))
	for start := 1; start <= 3; start++ {
		var logs lockedLog
		store := data.Open()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		revs, err := transport.OpenRevocations(ctx, store, dir, slog.New(slog.NewTextHandler(&logs, nil)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := revocationEvents(t, store)
		annRevoked := revs.Revoked("ann", valid)
		var revokedInvalid []string
		for user, at := range file {
			if user != "ann" && revs.Revoked(user, at) {
				revokedInvalid = append(revokedInvalid, user)
			}
		}
		revs.Close()
		store.Close()
		if len(got) != 1 || got[0] != "ann" {
			t.Fatalf("after start %d the stream holds revocations of %q, want ann's alone", start, got)
		}
		if !annRevoked || len(revokedInvalid) > 0 {
			t.Fatalf("after start %d: ann revoked %v; invalid entries applied: %q", start, annRevoked, revokedInvalid)
		}
		if n := strings.Count(logs.String(), "is not valid; skipped"); n != len(file)-1 {
			t.Fatalf("start %d warned %d times, want once for each of the %d invalid entries:\n%s", start, n, len(file)-1, logs.String())
		}
		if strings.Contains(logs.String(), "not a token revocation or disconnect") {
			t.Fatalf("start %d met an invalid event in the stream:\n%s", start, logs.String())
		}
	}
}
