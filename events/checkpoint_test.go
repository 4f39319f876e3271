package events_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/imsync/imsync/events"
)

// TestCheckpointUnderAppends: checkpoints cut while writers append hold
// exactly the events up to the position they report — every append
// acknowledged before the checkpoint began, none after that position —
// open with Open (the original still open beside them), keep accepting
// appends, and refuse to open once their acknowledged events go missing.
func TestCheckpointUnderAppends(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var mu sync.Mutex
	acked := map[uint64]string{} // position → stream
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("s-%d", w)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := s.AppendToStream(ctx, stream, events.Any, events.EventData{Type: "T", Data: []byte(fmt.Sprint(i))})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[res.Position.Commit] = stream
				mu.Unlock()
			}
		}()
	}
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for range 3 {
		floor := ackedCount() + 200
		for ackedCount() < floor {
			runtime.Gosched()
		}
		mu.Lock()
		before := make(map[uint64]string, len(acked))
		for p, st := range acked {
			before[p] = st
		}
		mu.Unlock()
		cpDir := filepath.Join(t.TempDir(), "copy")
		pos, err := s.Checkpoint(ctx, cpDir)
		if err != nil {
			t.Fatal(err)
		}
		for p := range before {
			if p > pos.Commit {
				t.Fatalf("append acknowledged at %d before the checkpoint, which ends at %d", p, pos.Commit)
			}
		}
		cp, err := events.Open(cpDir, quiet())
		if err != nil {
			t.Fatalf("open the checkpoint: %v", err)
		}
		got, err := cp.ReadAll(ctx, events.ReadAllOptions{Limit: events.MaxReadLimit})
		if err != nil {
			t.Fatal(err)
		}
		orig, err := s.ReadAll(ctx, events.ReadAllOptions{Limit: len(got) + 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[len(got)-1].Position != pos {
			t.Fatalf("checkpoint holds %d events; want them up to %v", len(got), pos)
		}
		for i, e := range got {
			o := orig[i]
			if e.Position != o.Position || e.ID != o.ID || e.Stream != o.Stream || string(e.Data) != string(o.Data) {
				t.Fatalf("event %d of the checkpoint %+v differs from the store's %+v", i, e, o)
			}
		}
		for p, st := range before {
			if got[p-1].Stream != st { // positions start at 1, one per event
				t.Fatalf("acknowledged event at %d (%s) is %+v in the checkpoint", p, st, got[p-1])
			}
		}
		// The copy is a store of its own: it takes appends after pos.
		res, err := cp.AppendToStream(ctx, "after", events.NoStream, events.EventData{Type: "T"})
		if err != nil || res.Position.Commit != pos.Commit+1 {
			t.Fatalf("append to the checkpoint: %v at %v, want position %d", err, res.Position, pos.Commit+1)
		}
		if err := cp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()

	// The copy's marker says it keeps a high-water mark: without its mark
	// file it is refused like the original would be.
	cpDir := filepath.Join(t.TempDir(), "copy")
	if _, err := s.Checkpoint(ctx, cpDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cpDir, "db", "IMSYNC-HIGHWATER")); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Open(cpDir, quiet()); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("a checkpoint without its high-water mark: %v, want ErrCorrupt", err)
	}
}

func TestCheckpointRefusals(t *testing.T) {
	ctx := context.Background()
	s, err := events.Open(filepath.Join(t.TempDir(), "store"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint(ctx, full); !errors.Is(err, events.ErrInvalidArgument) {
		t.Fatalf("checkpoint into a non-empty directory: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(full, "x")); string(b) != "mine" {
		t.Fatal("the non-empty directory was changed")
	}
	mem, _ := events.OpenInMemory(quiet())
	defer mem.Close()
	if _, err := mem.Checkpoint(ctx, filepath.Join(t.TempDir(), "c")); !errors.Is(err, events.ErrInvalidArgument) {
		t.Fatalf("checkpoint of an in-memory store: %v", err)
	}
	// An empty store checkpoints to an empty store.
	empty := filepath.Join(t.TempDir(), "empty")
	if pos, err := s.Checkpoint(ctx, empty); err != nil || pos != (events.Position{}) {
		t.Fatalf("checkpoint of an empty store: %v %v", pos, err)
	}
	c, err := events.Open(empty, quiet())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestCheckpointRacesClose: a store closed while checkpoints are asked for
// answers each of them (done or ErrClosed) and closes.
func TestCheckpointRacesClose(t *testing.T) {
	ctx := context.Background()
	s, err := events.Open(filepath.Join(t.TempDir(), "store"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.AppendToStream(ctx, "s", events.Any, events.EventData{Type: "T", Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 8)
	for i := range cap(errs) {
		go func() {
			_, err := s.Checkpoint(ctx, filepath.Join(t.TempDir(), fmt.Sprint("cp-", i)))
			errs <- err
		}()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range cap(errs) {
		if err := <-errs; err != nil && !errors.Is(err, events.ErrClosed) {
			t.Fatalf("checkpoint during Close: %v", err)
		}
	}
}
