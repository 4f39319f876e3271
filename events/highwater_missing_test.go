package events_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsync/imsync/events"
)

// TestHighWaterFileMissingRefused: a truncated WAL together with a deleted
// or emptied high-water file must not open as a smaller, healthy-looking
// store; Recover opens it and says that the loss cannot be counted.
func TestHighWaterFileMissingRefused(t *testing.T) {
	for _, damage := range []string{"deleted", "emptied"} {
		t.Run(damage, func(t *testing.T) {
			dir := closedStore(t, 20)
			wal := newestFile(t, dir, ".log")
			if err := os.Truncate(wal, fileSize(t, wal)/2); err != nil {
				t.Fatal(err)
			}
			mark := filepath.Join(dir, "db", "IMSYNC-HIGHWATER")
			var err error
			if damage == "deleted" {
				err = os.Remove(mark)
			} else {
				err = os.WriteFile(mark, nil, 0o640)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = events.Open(dir, events.Options{ScavengeInterval: -1})
			if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), "IMSYNC-HIGHWATER") || !strings.Contains(err.Error(), "--accept-data-loss") {
				t.Fatalf("open with the mark %s: %v, want ErrCorrupt naming the mark and the recovery", damage, err)
			}
			r, _, err := events.Recover(dir, events.Options{ScavengeInterval: -1, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			r.Close()
			if rec, err := os.ReadFile(filepath.Join(dir, "RECOVERIES")); err != nil || !strings.Contains(string(rec), "high-water mark was missing") {
				t.Fatalf("recovery record: %q %v", rec, err)
			}
			s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
			if err != nil {
				t.Fatalf("open after recovery: %v", err)
			}
			s.Close()
		})
	}
}

// TestHighWaterTrackingStartsOnOldStores: a store whose marker predates the
// mark (no tracking line, no mark file) opens, and from then on a missing
// mark is refused.
func TestHighWaterTrackingStartsOnOldStores(t *testing.T) {
	dir := closedStore(t, 5)
	marker := filepath.Join(dir, "IMSYNC-EVENTS")
	mark := filepath.Join(dir, "db", "IMSYNC-HIGHWATER")
	if err := os.WriteFile(marker, []byte("imsync-events/1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mark); err != nil {
		t.Fatal(err)
	}
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatalf("open of a store from before the mark: %v", err)
	}
	s.Close()
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("no mark written: %v", err)
	}
	if err := os.Remove(mark); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Open(dir, events.Options{ScavengeInterval: -1}); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("open without the mark once it is tracked: %v, want ErrCorrupt", err)
	}
}
