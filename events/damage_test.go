package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// appendN appends n events one by one (each acknowledged, so fsynced) to
// stream and returns the store's last position.
func appendN(t *testing.T, s *events.Embedded, stream string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		exp := events.Exactly(events.Revision(i - 1))
		if i == 0 {
			exp = events.NoStream
		}
		payload := []byte(strings.Repeat(fmt.Sprintf("message %d ", i), 20))
		if _, err := s.AppendToStream(ctx, stream, exp, events.EventData{ID: uuid.New(), Type: "MessageSent", Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
}

// newestFile returns the path of the newest file in dir/db with the suffix.
func newestFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "db", "*"+suffix))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no %s file in %s: %v", suffix, dir, err)
	}
	sort.Strings(matches)
	return matches[len(matches)-1]
}

// flip inverts n bytes of path at offset off.
func flip(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestWALFlipMidFileRefused: damage in the middle of the newest WAL file
// must not make acknowledged events disappear silently.
func TestWALFlipMidFileRefused(t *testing.T) {
	for _, where := range []string{"middle", "last-record"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, "conv-c1", 300)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			wal := newestFile(t, dir, ".log")
			size := fileSize(t, wal)
			off := size / 2
			if where == "last-record" {
				off = size - 100 // inside the last acknowledged append
			}
			flip(t, wal, off, 4)
			r, err := events.Open(dir, events.Options{ScavengeInterval: -1})
			if err == nil {
				evs, _ := r.ReadStream(context.Background(), "conv-c1", events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
				r.Close()
				t.Fatalf("a damaged WAL opened silently; newest event now %v", evs)
			}
			if !errors.Is(err, events.ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			t.Logf("open: %v", err)
		})
	}
}

// damagedTable writes two overlapping tables, flips bytes among the events
// of conv-c1 in the first one (which opening does not read) and reopens.
func damagedTable(t *testing.T) (*events.Embedded, string) {
	dir := t.TempDir()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "conv-c1", 300)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sst := newestFile(t, dir, ".sst")
	flip(t, sst, fileSize(t, sst)/3, 4)
	s, err = events.Open(dir, events.Options{ScavengeInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, filepath.Base(sst)
}

// TestSSTableDamageInCompaction: a damaged table met by a background
// compaction puts the store into a failed state (ErrCorrupt naming the
// file); it used to panic the process.
func TestSSTableDamageInCompaction(t *testing.T) {
	s, sst := damagedTable(t)
	ctx := context.Background()
	// More tables on top make pebble compact them with the damaged one.
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for i := 0; time.Now().Before(deadline); i++ {
		_, err = s.AppendToStream(ctx, fmt.Sprintf("conv-x%d", i), events.Any, events.EventData{Type: "MessageSent", Data: make([]byte, 64<<10)})
		if err != nil {
			break
		}
		if i%8 == 7 {
			if ferr := s.Flush(); ferr != nil {
				err = ferr
				break
			}
		}
	}
	if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), sst) || !strings.Contains(err.Error(), "imsync store recover") {
		t.Fatalf("append after damage: %v, want ErrCorrupt naming %s and the recovery", err, sst)
	}
	if _, err := s.ReadStream(ctx, "conv-c1", events.ReadStreamOptions{From: 299, Limit: 1}); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("read after damage: %v, want ErrCorrupt", err)
	}
}

// TestSSTableDamageInRead: a read that meets the damage gets ErrCorrupt,
// and so does everything after it.
func TestSSTableDamageInRead(t *testing.T) {
	s, sst := damagedTable(t)
	ctx := context.Background()
	_, err := s.ReadStream(ctx, "conv-c1", events.ReadStreamOptions{Limit: 300})
	if !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("read of the damaged range: %v, want ErrCorrupt", err)
	}
	_, err = s.AppendToStream(ctx, "conv-c1", events.Any, events.EventData{Type: "MessageSent"})
	if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), sst) {
		t.Fatalf("append after damage: %v, want ErrCorrupt naming %s", err, sst)
	}
}
