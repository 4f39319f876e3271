package events_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/storetest"
)

func quiet() events.Options {
	return events.Options{ScavengeInterval: -1}
}

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Features: storetest.Features{Reopen: true, Clock: true},
		New: func(t *testing.T, clock func() time.Time) (events.Store, storetest.Reopener) {
			dir := filepath.Join(t.TempDir(), "store")
			opts := quiet()
			opts.Now = clock
			s, err := events.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			cur := s
			return s, func(t *testing.T) events.Store {
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				next, err := events.Open(dir, opts)
				if err != nil {
					t.Fatal(err)
				}
				cur = next
				return next
			}
		},
	})
}

func TestInMemoryConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Features: storetest.Features{Clock: true},
		New: func(t *testing.T, clock func() time.Time) (events.Store, storetest.Reopener) {
			opts := quiet()
			opts.Now = clock
			s, err := events.OpenInMemory(opts)
			if err != nil {
				t.Fatal(err)
			}
			return s, nil
		},
	})
}

func TestOpenRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := events.Open(dir, quiet())
	if !errors.Is(err, events.ErrNotAStore) {
		t.Fatalf("open a foreign directory: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
		t.Fatal("foreign directory was modified")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("foreign directory gained files: %v", entries)
	}
}

func TestOpenRefusesOtherFormat(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "IMSYNC-EVENTS"), []byte("imsync-events/99\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Open(dir, quiet()); !errors.Is(err, events.ErrNotAStore) {
		t.Fatalf("open a store of another format: %v", err)
	}
}

// TestOpenCorruptStore damages a closed store in several ways; each open
// must fail with an error (never a panic, never an empty store).
func TestOpenCorruptStore(t *testing.T) {
	damage := map[string]func(t *testing.T, db string){
		"manifest garbage": func(t *testing.T, db string) {
			for _, m := range glob(t, db, "MANIFEST-*") {
				overwrite(t, m, 0, []byte("not a manifest at all, not at all"))
			}
		},
		"manifest missing": func(t *testing.T, db string) {
			for _, m := range glob(t, db, "MANIFEST-*") {
				if err := os.Remove(m); err != nil {
					t.Fatal(err)
				}
			}
		},
		"database removed": func(t *testing.T, db string) {
			if err := os.RemoveAll(db); err != nil {
				t.Fatal(err)
			}
		},
		"table flipped": func(t *testing.T, db string) {
			tables := glob(t, db, "*.sst")
			if len(tables) == 0 {
				t.Fatal("no table to damage")
			}
			for _, f := range tables {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				overwrite(t, f, st.Size()/3, []byte("garbage-garbage-garbage-garbage-garbage"))
			}
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			s, err := events.Open(dir, quiet())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i := range 50 {
				if _, err := s.AppendToStream(ctx, "conv-1", events.Any, events.EventData{Type: "T", Data: []byte{byte(i)}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			fn(t, filepath.Join(dir, "db"))
			s, err = events.Open(dir, quiet())
			if err == nil {
				// Some damage only shows when the data is read: then reads fail.
				defer s.Close()
				_, rerr := s.ReadAll(ctx, events.ReadAllOptions{Limit: 100})
				if rerr == nil {
					t.Fatal("damaged store opened and read without error")
				}
				return
			}
			if !errors.Is(err, events.ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
}

func glob(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAfterCutCreation: a store whose creation was cut short (marker
// still temporary, no data acknowledged) opens as a new store.
func TestOpenAfterCutCreation(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "IMSYNC-EVENTS.tmp"), []byte("imsync-events/1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "IMSYNC-EVENTS")); err != nil {
		t.Fatalf("marker not in place: %v", err)
	}
}

func TestOpenTwiceRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := events.Open(dir, quiet()); !errors.Is(err, events.ErrInUse) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("a second open of a store in use: %v", err)
	}
	s.Close()
	s2, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	s2.Close()
}
