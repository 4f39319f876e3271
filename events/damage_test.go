package events_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
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
			dir := closedStore(t, 300)
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
			if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), "acknowledged events are missing") ||
				!strings.Contains(err.Error(), "imsync store recover --data DIR --accept-data-loss") {
				t.Fatalf("open: %v, want ErrCorrupt naming the loss and the recovery", err)
			}
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
	if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), sst) || !strings.Contains(err.Error(), "restore the data directory from a backup") {
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

// TestWALTornTailOpens: bytes after the last acknowledged record (a write
// cut short by a crash) are dropped and the store opens with everything.
func TestWALTornTailOpens(t *testing.T) {
	dir := closedStore(t, 300)
	wal := newestFile(t, dir, ".log")
	f, err := os.OpenFile(wal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := []byte{0x12, 0x34, 0x56, 0x78, 0x40, 0x00, 0x01, 'p', 'a', 'r', 't'}
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatalf("open after a torn tail: %v", err)
	}
	defer s.Close()
	evs, err := s.ReadStream(context.Background(), "conv-c1", events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if err != nil || len(evs) != 1 || evs[0].Revision != 299 {
		t.Fatalf("newest event after reopen: %v %v, want revision 299", evs, err)
	}
}

// copyDir copies the files of src into dst, as a crash would leave them
// (everything acknowledged was fsynced).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWALFlipAfterCrashRefused: without a clean Close (the process killed
// right after its last acknowledgement) the mark still catches the loss.
func TestWALFlipAfterCrashRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendN(t, s, "conv-c1", 300)
	for _, where := range []string{"middle", "last-record"} {
		crashed := t.TempDir() // the files as a killed process leaves them
		copyDir(t, dir, crashed)
		os.Remove(filepath.Join(crashed, "LOCK"))
		wal := newestFile(t, crashed, ".log")
		off := fileSize(t, wal) / 2
		if where == "last-record" {
			off = fileSize(t, wal) - 100
		}
		flip(t, wal, off, 4)
		r, err := events.Open(crashed, events.Options{ScavengeInterval: -1})
		if err == nil {
			r.Close()
			t.Fatalf("%s: a damaged WAL opened silently after a crash", where)
		}
		if !errors.Is(err, events.ErrCorrupt) {
			t.Fatalf("%s: open: %v, want ErrCorrupt", where, err)
		}
	}
}

// TestRecoverAcceptsLoss: Recover opens the damaged store, reports the
// loss and never hands out an acknowledged position again; after it the
// store opens normally.
func TestRecoverAcceptsLoss(t *testing.T) {
	dir := closedStore(t, 300)
	wal := newestFile(t, dir, ".log")
	flip(t, wal, fileSize(t, wal)/2, 4)
	if _, err := events.Open(dir, events.Options{ScavengeInterval: -1}); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("open: %v, want ErrCorrupt", err)
	}
	r, loss, err := events.Recover(dir, events.Options{ScavengeInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if rec, err := os.ReadFile(filepath.Join(dir, "RECOVERIES")); err != nil || !strings.Contains(string(rec), "..300 were lost") {
		t.Fatalf("recovery record: %q %v", rec, err)
	}
	if loss.AcknowledgedPosition != 300 || loss.FoundPosition >= 300 || loss.Events() != 300-loss.FoundPosition {
		t.Fatalf("loss = %+v, want found < 300, acknowledged 300", loss)
	}
	res, err := r.AppendToStream(context.Background(), "conv-c9", events.NoStream, events.EventData{Type: "MessageSent"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Position.Commit <= 300 {
		t.Fatalf("first append after recovery at position %d: an acknowledged position handed out again", res.Position.Commit)
	}
	r.Close()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatalf("open after recovery: %v", err)
	}
	s.Close()
	// Recover on a healthy store changes nothing and reports no loss.
	r, loss, err = events.Recover(dir, events.Options{ScavengeInterval: -1})
	if err != nil || loss != (events.Loss{}) {
		t.Fatalf("recover of a healthy store: %+v %v", loss, err)
	}
	r.Close()
}

// TestHighWaterFileDamaged: a mark that cannot be read is damage, not "no
// mark".
func TestHighWaterFileDamaged(t *testing.T) {
	dir := closedStore(t, 3)
	mark := filepath.Join(dir, "db", "IMSYNC-HIGHWATER")
	if err := os.WriteFile(mark, make([]byte, 64), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Open(dir, events.Options{ScavengeInterval: -1}); !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), "IMSYNC-HIGHWATER") {
		t.Fatalf("open: %v, want ErrCorrupt naming the mark file", err)
	}
}

// TestLockErrorMapping: only a lock held elsewhere is "in use"; a file this
// process may not create is a permission error.
func TestLockErrorMapping(t *testing.T) {
	denied := events.LockError("/d", &fs.PathError{Op: "open", Path: "/d/LOCK", Err: syscall.EACCES})
	if !errors.Is(denied, os.ErrPermission) || errors.Is(denied, events.ErrInUse) {
		t.Errorf("permission denied creating the lock file: %v", denied)
	}
	for _, errno := range []error{syscall.EAGAIN, syscall.EACCES} {
		held := events.LockError("/d", errno)
		if !errors.Is(held, events.ErrInUse) {
			t.Errorf("lock held (%v): %v, want ErrInUse", errno, held)
		}
	}
	readOnly := events.LockError("/d", &fs.PathError{Op: "open", Path: "/d/LOCK", Err: syscall.EROFS})
	if errors.Is(readOnly, events.ErrInUse) {
		t.Errorf("read-only file system reported as in use: %v", readOnly)
	}
}

// TestOpenPermissionDenied: a store this user may not read is a permission
// error, never "in use by another process".
func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root is not denied by file modes")
	}
	dir := t.TempDir()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, p := range []string{filepath.Join(dir, "LOCK"), filepath.Join(dir, "db")} {
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.Chmod(filepath.Join(dir, "LOCK"), 0o640)
		os.Chmod(filepath.Join(dir, "db"), 0o750)
	})
	_, err = events.Open(dir, events.Options{ScavengeInterval: -1})
	if !errors.Is(err, os.ErrPermission) || errors.Is(err, events.ErrInUse) {
		t.Fatalf("open: %v, want a permission error", err)
	}
}

// TestSSTableDamageStopsBackgroundWork: once damaged, the store closes the
// database, so no compaction keeps retrying on the damaged table, and a
// waiting subscription ends with the error.
func TestSSTableDamageStopsBackgroundWork(t *testing.T) {
	s, _ := damagedTable(t)
	ctx := context.Background()
	sub, err := s.SubscribeToAll(ctx, events.SubscribeAllOptions{From: events.SubscribeFromEnd()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := make(chan error, 1)
	go func() {
		for {
			if _, err := sub.Recv(ctx); err != nil {
				got <- err
				return
			}
		}
	}()
	if _, err := s.ReadStream(ctx, "conv-c1", events.ReadStreamOptions{Limit: 300}); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("read of the damaged range: %v", err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, events.ErrCorrupt) {
			t.Fatalf("subscription ended with %v, want ErrCorrupt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription still waiting after the store was damaged")
	}
	if err := s.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if _, err := s.AppendToStream(ctx, "conv-c3", events.Any, events.EventData{Type: "MessageSent"}); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("append after Close of a damaged store: %v, want ErrCorrupt", err)
	}
}

// TestSSTableDamageAtOpen: damage met while opening (the log entries are
// read to refill the retry window) refuses the open with ErrCorrupt naming
// the file.
func TestSSTableDamageAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "conv-c1", 300)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	sst := newestFile(t, dir, ".sst")
	flip(t, sst, fileSize(t, sst)*9/10, 4) // among the log entries
	s, err = events.Open(dir, events.Options{ScavengeInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		s.Close()
		t.Fatal("a damaged table opened")
	}
	if !errors.Is(err, events.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(sst)) {
		t.Fatalf("open: %v, want ErrCorrupt naming %s", err, filepath.Base(sst))
	}
}

// TestHighWaterOneSlotTorn: a write torn by a power cut damages one slot of
// the mark; the other keeps the store openable with every event.
func TestHighWaterOneSlotTorn(t *testing.T) {
	for slot := range 2 {
		dir := closedStore(t, 5)
		flip(t, filepath.Join(dir, "db", "IMSYNC-HIGHWATER"), int64(slot*32+10), 4)
		s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
		if err != nil {
			t.Fatalf("slot %d torn: %v", slot, err)
		}
		evs, err := s.ReadStream(context.Background(), "conv-c1", events.ReadStreamOptions{Limit: 10})
		s.Close()
		if err != nil || len(evs) != 5 {
			t.Fatalf("slot %d torn: read %d events, %v", slot, len(evs), err)
		}
	}
}

// closedStore is a store in a new directory holding n events of conv-c1,
// closed cleanly: the starting point of the damage tests.
func closedStore(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "conv-c1", n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}
