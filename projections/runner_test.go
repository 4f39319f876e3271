package projections_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

func newStore(t *testing.T) *events.Embedded {
	t.Helper()
	s, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendMessages sends n messages into each of convs, interleaved, with
// an inbox pointer and a raw (non-domain) event now and then as noise.
func appendMessages(t *testing.T, s events.Store, convs []string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		for _, c := range convs {
			e, err := events.Encode(uuid.Nil, &eventspb.MessageSent{Sender: "ann", ClientMsgId: uuid.NewString(), Kind: "text", Body: []byte(fmt.Sprint(c, i))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.AppendToStream(ctx, events.ConversationStream(c), events.Any, e); err != nil {
				t.Fatal(err)
			}
		}
		if i%5 == 0 {
			e, _ := events.Encode(uuid.Nil, &eventspb.MessagePointer{ConversationId: convs[0], Seq: uint64(i + 1)})
			if _, err := s.AppendToStream(ctx, events.InboxStream("bob"), events.Any, e); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AppendToStream(ctx, "notes", events.Any, events.EventData{Type: "Text", Data: []byte("raw")}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// truth counts MessageSent per conversation straight from the store.
func truth(t *testing.T, s events.Store) map[string]int {
	t.Helper()
	out := map[string]int{}
	from := events.PositionStart
	for {
		page, err := s.ReadAll(context.Background(), events.ReadAllOptions{From: from, Limit: 500, Filter: events.Filter{StreamPrefixes: []string{"conv-"}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if e.Type == "MessageSent" {
				out[strings.TrimPrefix(e.Stream, "conv-")]++
			}
		}
		if len(page) < 500 {
			return out
		}
		last := page[len(page)-1].Position
		from = events.Position{Commit: last.Commit, Prepare: last.Prepare + 1}
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// start runs r in the background; stop cancels it and returns Run's error.
func start(r *projections.Runner) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

// TestReplayThenLive: history and live events give the same counts as the
// store holds, the checkpoint ends at the last event, and a rebuild from
// scratch gives them again.
func TestReplayThenLive(t *testing.T) {
	s := newStore(t)
	convs := []string{"a", "b", "c"}
	appendMessages(t, s, convs, 40)
	cps := &projections.MemoryCheckpoints{}
	p := &messageCounts{}
	r := &projections.Runner{Store: s, Checkpoints: cps, Projection: p, SaveEvery: 1000, SaveIdle: 20 * time.Millisecond}
	stop := start(r)
	want := truth(t, s)
	waitFor(t, "replay", func() bool { return sum(p.get()) == sum(want) })
	appendMessages(t, s, convs, 25) // live
	want = truth(t, s)
	waitFor(t, "live events", func() bool { return sum(p.get()) == sum(want) })
	// Fewer than SaveEvery events: the idle save writes the checkpoint.
	last, _ := s.ReadAll(context.Background(), events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: events.Filter{StreamPrefixes: []string{"conv-"}}})
	waitFor(t, "the idle save", func() bool {
		cp, ok, _ := cps.Load(context.Background(), "message-counts")
		return ok && cp.Position == last[0].Position
	})
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run ended with %v, want context.Canceled", err)
	}
	if got := p.get(); !maps.Equal(got, want) {
		t.Fatalf("counts %v, store holds %v", got, want)
	}

	// Rebuild on a fresh instance: same counts from scratch.
	p2 := &messageCounts{}
	r2 := &projections.Runner{Store: s, Checkpoints: cps, Projection: p2}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r2.Rebuild(ctx) }()
	waitFor(t, "rebuild", func() bool { return sum(p2.get()) == sum(want) })
	cancel()
	<-done
	if got := p2.get(); !maps.Equal(got, want) {
		t.Fatalf("rebuilt counts %v, store holds %v", got, want)
	}
}

// dyingCheckpoints is a FileCheckpoints whose process "dies" at the
// killAt-th save: that save and every later one fail, as if the process
// had been killed just before writing.
type dyingCheckpoints struct {
	projections.FileCheckpoints
	killAt int
	saves  atomic.Int32
}

var errKilled = errors.New("killed")

func (d *dyingCheckpoints) Save(ctx context.Context, name string, cp projections.Checkpoint) error {
	if int(d.saves.Add(1)) >= d.killAt {
		return errKilled
	}
	return d.FileCheckpoints.Save(ctx, name, cp)
}

// deliveries counts every event handed to Handle, besides the counts.
type countingProjection struct {
	messageCounts
	delivered atomic.Int32
}

func (c *countingProjection) Handle(ctx context.Context, e projections.Event) error {
	c.delivered.Add(1)
	return c.messageCounts.Handle(ctx, e)
}

// TestResumeAfterKill: a projection killed mid-replay (its in-memory
// counts ahead of its last saved checkpoint) is restarted as a new
// instance from the file checkpoint; it ends with exactly the store's
// counts — neither loss nor double counting — and is handed again exactly
// the events after the checkpoint.
func TestResumeAfterKill(t *testing.T) {
	s := newStore(t)
	convs := []string{"a", "b", "c", "d"}
	appendMessages(t, s, convs, 50) // 200 messages, 10 inbox pointers, 10 raw events
	want := truth(t, s)
	for _, killAt := range []int{1, 2, 5, 9} {
		t.Run(fmt.Sprint("kill at save ", killAt), func(t *testing.T) {
			dir := t.TempDir()
			files := projections.FileCheckpoints{Dir: dir}
			p1 := &countingProjection{}
			r1 := &projections.Runner{Store: s, Checkpoints: &dyingCheckpoints{FileCheckpoints: files, killAt: killAt}, Projection: p1, SaveEvery: 17}
			err := r1.Run(context.Background())
			if !errors.Is(err, errKilled) {
				t.Fatalf("first run ended with %v, want the kill", err)
			}
			cp, saved, err := files.Load(context.Background(), "message-counts")
			if err != nil || saved != (killAt > 1) {
				t.Fatalf("checkpoint after the kill: saved %v, %v", saved, err)
			}
			if int(p1.delivered.Load()) != 17*killAt {
				t.Fatalf("first run applied %d events, want %d", p1.delivered.Load(), 17*killAt)
			}
			if sum(p1.get()) >= sum(want) || int(p1.delivered.Load()) <= 17*(killAt-1) {
				t.Fatal("the kill did not happen mid-replay with unsaved events")
			}

			// Restart: a fresh instance, the same checkpoint file.
			p2 := &countingProjection{}
			stop := start(&projections.Runner{Store: s, Checkpoints: files, Projection: p2, SaveEvery: 17})
			waitFor(t, "resumed replay", func() bool { return sum(p2.get()) >= sum(want) })
			if err := stop(); !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			if got := p2.get(); !maps.Equal(got, want) {
				t.Fatalf("after restart: counts %v, store holds %v", got, want)
			}
			// Handed exactly the conversation events after the checkpoint.
			after := 0
			for _, n := range want {
				after += n
			}
			if saved {
				after -= 17 * (killAt - 1)
			}
			if int(p2.delivered.Load()) != after {
				t.Fatalf("restart delivered %d events, want the %d after checkpoint %v", p2.delivered.Load(), after, cp.Position)
			}
			// The final checkpoint restores the same counts again.
			p3 := &messageCounts{}
			cp, _, _ = files.Load(context.Background(), "message-counts")
			if err := p3.Restore(cp.State); err != nil || !maps.Equal(p3.get(), want) {
				t.Fatalf("saved state %v (%v), want %v", p3.get(), err, want)
			}
		})
	}
}

// stoppingCounts cancels its run after handling stopAt events.
type stoppingCounts struct {
	countingProjection
	stopAt int32
	cancel context.CancelFunc
}

func (s *stoppingCounts) Handle(ctx context.Context, e projections.Event) error {
	err := s.countingProjection.Handle(ctx, e)
	if s.delivered.Load() == s.stopAt {
		s.cancel()
	}
	return err
}

// TestStopMidReplayResumes: a run stopped mid-replay saves its checkpoint
// at the last event it applied; a new instance resumes right after it.
func TestStopMidReplayResumes(t *testing.T) {
	s := newStore(t)
	appendMessages(t, s, []string{"a", "b", "c"}, 40)
	want := truth(t, s)
	files := projections.FileCheckpoints{Dir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	p1 := &stoppingCounts{stopAt: 50, cancel: cancel}
	if err := (&projections.Runner{Store: s, Checkpoints: files, Projection: p1, SaveEvery: 1000}).Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run ended with %v", err)
	}
	if sum(p1.get()) != 50 {
		t.Fatalf("stopped after %d messages, want 50", sum(p1.get()))
	}
	p2 := &countingProjection{}
	stop := start(&projections.Runner{Store: s, Checkpoints: files, Projection: p2})
	waitFor(t, "resumed replay", func() bool { return sum(p2.get()) >= sum(want) })
	stop()
	if got := p2.get(); !maps.Equal(got, want) || int(p2.delivered.Load()) != sum(want)-50 {
		t.Fatalf("after restart: counts %v (%d delivered), want %v (%d delivered)", got, p2.delivered.Load(), want, sum(want)-50)
	}
}

// failingCounts fails on one message until told otherwise.
type failingCounts struct {
	messageCounts
	mu     sync.Mutex
	failOn string // message body that fails
}

func (f *failingCounts) Handle(ctx context.Context, e projections.Event) error {
	f.mu.Lock()
	failOn := f.failOn
	f.mu.Unlock()
	if m, ok := e.Message.(*eventspb.MessageSent); ok && string(m.Body) == failOn {
		return errors.New("cannot index this one")
	}
	return f.messageCounts.Handle(ctx, e)
}

// TestHandleErrorStops: a failing event stops the runner with its
// position; nothing after it is applied or checkpointed, and the next run
// (after the fix) starts at that very event.
func TestHandleErrorStops(t *testing.T) {
	s := newStore(t)
	appendMessages(t, s, []string{"a", "b"}, 30)
	var failing events.RecordedEvent
	page, _ := s.ReadStream(context.Background(), "conv-b", events.ReadStreamOptions{From: 12, Limit: 1})
	failing = page[0]

	cps := &projections.MemoryCheckpoints{}
	p := &failingCounts{failOn: "b12"}
	r := &projections.Runner{Store: s, Checkpoints: cps, Projection: p, SaveEvery: 1}
	err := r.Run(context.Background())
	var ee *projections.EventError
	if !errors.As(err, &ee) || ee.Position != failing.Position || ee.Stream != "conv-b" || ee.Revision != 12 || ee.Projection != "message-counts" {
		t.Fatalf("Run ended with %v, want an EventError at %v", err, failing.Position)
	}
	cp, _, _ := cps.Load(context.Background(), "message-counts")
	if !cp.Position.Less(failing.Position) {
		t.Fatalf("checkpoint %v not before the failing event %v", cp.Position, failing.Position)
	}
	if got := p.get(); got["a"] != 13 || got["b"] != 12 {
		t.Fatalf("counts before the failure %v, want a:13 b:12", got)
	}

	p.mu.Lock()
	p.failOn = ""
	p.mu.Unlock()
	stop := start(r)
	want := truth(t, s)
	waitFor(t, "the rest", func() bool { return sum(p.get()) == sum(want) })
	stop()
	if got := p.get(); !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}

// TestUndecodableEventStops: a MessageSent whose payload does not parse
// stops the runner at it rather than being skipped; an event of a type
// that is not a domain event reaches Handle with a nil Message.
func TestUndecodableEventStops(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	res, err := s.AppendToStream(ctx, "notes", events.Any, events.EventData{Type: "Text", Data: []byte("raw")})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := s.AppendToStream(ctx, "conv-x", events.Any, events.EventData{Type: "MessageSent", Data: []byte{0x0a, 0x05}})
	if err != nil {
		t.Fatal(err)
	}
	var seen []projections.Event
	p := funcProjection(func(e projections.Event) error { seen = append(seen, e); return nil })
	err = (&projections.Runner{Store: s, Checkpoints: &projections.MemoryCheckpoints{}, Projection: p}).Run(ctx)
	var ee *projections.EventError
	if !errors.As(err, &ee) || ee.Position != bad.Position {
		t.Fatalf("Run ended with %v, want an EventError at %v", err, bad.Position)
	}
	if len(seen) != 1 || seen[0].Position != res.Position || seen[0].Message != nil || string(seen[0].Data) != "raw" || seen[0].Type != "Text" {
		t.Fatalf("handled %+v, want the raw event with a nil Message", seen)
	}
}

type funcProjection func(projections.Event) error

func (funcProjection) Name() string { return "func" }

func (f funcProjection) Handle(_ context.Context, e projections.Event) error { return f(e) }

func TestFileCheckpoints(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := projections.FileCheckpoints{Dir: dir}
	if _, ok, err := f.Load(ctx, "p"); ok || err != nil {
		t.Fatalf("Load of a missing checkpoint: %v %v", ok, err)
	}
	want := projections.Checkpoint{Position: events.Position{Commit: 7, Prepare: 6}, State: []byte{0, 1, 2}}
	for range 2 {
		if err := f.Save(ctx, "p", want); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := f.Load(ctx, "p")
	if err != nil || !ok || got.Position != want.Position || string(got.State) != string(want.State) {
		t.Fatalf("Load: %+v %v %v", got, ok, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "p.checkpoint" {
		t.Fatalf("directory holds %v, want only p.checkpoint", entries)
	}
	if err := f.Delete(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.Load(ctx, "p"); ok {
		t.Fatal("checkpoint still there after Delete")
	}
	for _, bad := range []string{"", "../x", "a/b", ".."} {
		if err := f.Save(ctx, bad, want); !errors.Is(err, events.ErrInvalidArgument) {
			t.Errorf("Save(%q): %v", bad, err)
		}
	}
}

// countingCheckpoints counts saves.
type countingCheckpoints struct {
	projections.MemoryCheckpoints
	saves atomic.Int32
}

func (c *countingCheckpoints) Save(ctx context.Context, name string, cp projections.Checkpoint) error {
	c.saves.Add(1)
	return c.MemoryCheckpoints.Save(ctx, name, cp)
}

// TestSaveInterval: with SaveInterval, saves by count wait for the
// interval (the first one and the last, at Until, do not); without it,
// every SaveEvery events is saved. Both end with the same checkpoint.
func TestSaveInterval(t *testing.T) {
	s := newStore(t)
	appendMessages(t, s, []string{"a"}, 100)
	ctx := context.Background()
	last, err := s.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: events.Filter{StreamPrefixes: []string{"conv-"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		interval time.Duration
		saves    int32
	}{{0, 100}, {time.Hour, 2}} {
		cps := &countingCheckpoints{}
		p := &messageCounts{}
		r := &projections.Runner{Store: s, Checkpoints: cps, Projection: p, SaveEvery: 1, SaveInterval: tc.interval, Until: last[0].Position}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		cp, _, _ := cps.Load(ctx, "message-counts")
		if got := cps.saves.Load(); got != tc.saves || cp.Position != last[0].Position || sum(p.get()) != 100 {
			t.Fatalf("SaveInterval %v: %d saves, checkpoint at %v; want %d saves, at %v", tc.interval, got, cp.Position, tc.saves, last[0].Position)
		}
	}
}
