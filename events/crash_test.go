package events_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// The crash test runs the test binary again as a child that appends in a
// loop and prints every acknowledged append; the parent kills it with
// SIGKILL at a random instant, reopens the store and checks that every
// acknowledged event is there, once, in order, and that nothing torn or
// partial is visible. Then the next child continues on the same store.

const (
	crashDirEnv  = "IMSYNC_CRASH_CHILD_DIR"
	crashWriters = 8
)

// batchSize is how many events writer w appends at once: a stream's length
// is always a multiple of it unless an append was torn.
func batchSize(w int) int { return w%3 + 1 }

// crashAppend is writer w's next append to stream at revision next: events
// whose data names their own place, so that any misplaced one shows.
func crashAppend(w int, stream string, next events.Revision) ([]events.EventData, events.ExpectedRevision) {
	batch := make([]events.EventData, batchSize(w))
	for i := range batch {
		batch[i] = events.EventData{ID: uuid.New(), Type: "Crash", Data: fmt.Appendf(nil, "%s/%d", stream, next+events.Revision(i))}
	}
	if next == 0 {
		return batch, events.NoStream
	}
	return batch, events.Exactly(next - 1)
}

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashKill9")
	}
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("crash-%d", w)
			next := events.Revision(0)
			last, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
			if err == nil && len(last) == 1 {
				next = last[0].Revision + 1
			} else if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
				fmt.Println("read:", err)
				os.Exit(2)
			}
			for {
				batch, exp := crashAppend(w, stream, next)
				n := len(batch)
				if _, err := s.AppendToStream(ctx, stream, exp, batch...); err != nil {
					fmt.Println("append:", err)
					os.Exit(2)
				}
				var line strings.Builder
				for i, e := range batch {
					fmt.Fprintf(&line, "ack %s %d %s\n", stream, next+events.Revision(i), e.ID)
				}
				os.Stdout.WriteString(line.String()) // one write: a line is never split
				next += events.Revision(n)
			}
		}()
	}
	wg.Wait()
}

type ack struct {
	stream string
	rev    events.Revision
	id     uuid.UUID
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir() + "/store"
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var acked []ack
	for cycle := range 5 {
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []ack, 1)
		started := make(chan struct{})
		go func() {
			var got []ack
			signalled := false
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if !signalled && strings.HasPrefix(sc.Text(), "ack ") {
					close(started)
					signalled = true
				}
				var a ack
				var id string
				if n, _ := fmt.Sscanf(sc.Text(), "ack %s %d %s", &a.stream, &a.rev, &id); n != 3 {
					t.Errorf("child said %q", sc.Text())
					continue
				}
				a.id = uuid.MustParse(id)
				got = append(got, a)
			}
			lines <- got
		}()
		// Kill at a random instant once the child is appending (opening a
		// big store under -race can take a while).
		select {
		case <-started:
		case <-time.After(60 * time.Second):
			t.Fatalf("cycle %d: the child acknowledged nothing in a minute", cycle)
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		got := <-lines
		cmd.Wait()
		if len(got) == 0 {
			t.Fatalf("cycle %d: the child acknowledged nothing", cycle)
		}
		acked = append(acked, got...)
		s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
		if err != nil {
			t.Fatalf("reopen after SIGKILL: %v", err)
		}
		total := verifyStore(t, s, acked)
		s.Close()
		t.Logf("cycle %d: %d events acknowledged before SIGKILL, %d stored", cycle, len(got), total)
	}
}

// verifyStore checks a store written by crash writers against every ack:
// each acknowledged event present once at its revision, streams gapless and
// made of whole appends, $all consistent with the streams.
func verifyStore(t *testing.T, s events.Store, acked []ack) int {
	t.Helper()
	ctx := context.Background()
	stored := map[string][]events.RecordedEvent{}
	total := 0
	for w := range crashWriters {
		stream := fmt.Sprintf("crash-%d", w)
		var all []events.RecordedEvent
		for from := events.Revision(0); ; {
			page, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{From: from, Limit: events.MaxReadLimit})
			if errors.Is(err, events.ErrStreamNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
			from = page[len(page)-1].Revision + 1
		}
		for i, e := range all {
			if e.Revision != events.Revision(i) || string(e.Data) != fmt.Sprintf("%s/%d", stream, i) {
				t.Fatalf("%s: event %d is %d %q", stream, i, e.Revision, e.Data)
			}
		}
		if len(all)%batchSize(w) != 0 {
			t.Fatalf("%s holds %d events, not whole appends of %d: a torn append is visible", stream, len(all), batchSize(w))
		}
		stored[stream] = all
		total += len(all)
	}
	seen := map[uuid.UUID]bool{}
	for _, a := range acked {
		evs := stored[a.stream]
		if int(a.rev) >= len(evs) {
			t.Fatalf("acknowledged %s/%d lost (stream has %d events)", a.stream, a.rev, len(evs))
		}
		if evs[a.rev].ID != a.id {
			t.Fatalf("%s/%d holds %s, acknowledged %s", a.stream, a.rev, evs[a.rev].ID, a.id)
		}
		if seen[a.id] {
			t.Fatalf("event %s acknowledged twice", a.id)
		}
		seen[a.id] = true
	}
	// $all holds the same events, each once, in increasing positions.
	count := 0
	var last events.Position
	ids := map[uuid.UUID]bool{}
	for from := events.PositionStart; ; {
		page, err := s.ReadAll(ctx, events.ReadAllOptions{From: from, Limit: events.MaxReadLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if count > 0 && !last.Less(e.Position) {
				t.Fatalf("$all position %s after %s", e.Position, last)
			}
			if ids[e.ID] {
				t.Fatalf("$all repeats %s", e.ID)
			}
			ids[e.ID] = true
			last = e.Position
			count++
		}
		from = events.Position{Commit: last.Commit + 1, Prepare: last.Prepare + 1}
	}
	if count != total {
		t.Fatalf("$all holds %d events, the streams %d", count, total)
	}
	return total
}
