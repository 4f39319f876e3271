package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// recv reads n events from sub.
func recv(t *testing.T, sub events.Subscription, n int) []events.RecordedEvent {
	t.Helper()
	out := make([]events.RecordedEvent, 0, n)
	for len(out) < n {
		e, err := sub.Recv(ctx(t))
		if err != nil {
			t.Fatalf("recv after %d events: %v", len(out), err)
		}
		out = append(out, e)
	}
	return out
}

// recvIn reads n events of the test's space from sub, skipping events of
// other streams (an unfiltered $all subscription on a shared server).
func recvIn(t *testing.T, sp space, sub events.Subscription, n int) []events.RecordedEvent {
	t.Helper()
	out := make([]events.RecordedEvent, 0, n)
	for len(out) < n {
		e, err := sub.Recv(ctx(t))
		if err != nil {
			t.Fatalf("recv after %d events: %v", len(out), err)
		}
		if strings.HasPrefix(e.Stream, string(sp)) {
			out = append(out, e)
		}
	}
	return out
}

// expectNext appends a marker event to stream and checks that it is the
// next event each of subs delivers: nothing else (no duplicate, no stray
// event) was pending before it.
func expectNext(t *testing.T, s events.Store, stream string, subs ...events.Subscription) {
	t.Helper()
	marker := evs("marker-"+uuid.NewString(), 1)
	mustAppend(t, s, stream, events.Any, marker...)
	for _, sub := range subs {
		e, err := sub.Recv(ctx(t))
		if err != nil {
			t.Fatalf("recv the marker: %v", err)
		}
		if !bytes.Equal(e.Data, marker[0].Data) {
			t.Fatalf("unexpected event %s/%d %q before the marker", e.Stream, e.Revision, e.Data)
		}
	}
}

func testSubscribeToStream(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	stream, later := sp.s("sub"), sp.s("later")
	mustAppend(t, s, stream, events.NoStream, evs("h", 3)...)

	fromStart, err := s.SubscribeToStream(ctx(t), stream, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer fromStart.Close()
	after1, err := s.SubscribeToStream(ctx(t), stream, events.SubscribeAfterRevision(1))
	if err != nil {
		t.Fatal(err)
	}
	defer after1.Close()
	fromEnd, err := s.SubscribeToStream(ctx(t), stream, events.SubscribeFromEnd())
	if err != nil {
		t.Fatal(err)
	}
	defer fromEnd.Close()
	notYet, err := s.SubscribeToStream(ctx(t), later, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer notYet.Close()

	wantDatas(t, "history from start", recv(t, fromStart, 3), "h-0", "h-1", "h-2")
	wantDatas(t, "history after 1", recv(t, after1, 1), "h-2")
	mustAppend(t, s, stream, events.Exactly(2), evs("live", 2)...)
	mustAppend(t, s, sp.s("other"), events.NoStream, evs("o", 1)...)
	mustAppend(t, s, later, events.NoStream, evs("l", 1)...)
	wantDatas(t, "live from start", recv(t, fromStart, 2), "live-0", "live-1")
	wantDatas(t, "live after 1", recv(t, after1, 2), "live-0", "live-1")
	wantDatas(t, "from end", recv(t, fromEnd, 2), "live-0", "live-1")
	wantDatas(t, "stream created later", recv(t, notYet, 1), "l-0")
	expectNext(t, s, stream, fromStart, after1, fromEnd)
	expectNext(t, s, later, notYet)

	fromStart.Close()
	if _, err := fromStart.Recv(ctx(t)); !errors.Is(err, events.ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	if _, err := s.SubscribeToStream(ctx(t), stream, events.SubscribeAfterPosition(events.PositionStart)); !errors.Is(err, events.ErrInvalidArgument) {
		t.Fatalf("stream subscription after a position: %v", err)
	}
}

// testSubscribeSwitchUnderLoad subscribes while writers append, so the
// switch from history to live happens mid-stream: every event once, in order.
func testSubscribeSwitchUnderLoad(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	load := sp.s("load")
	const total = 2000
	begin := mustAppend(t, s, sp.s("begin"), events.NoStream, evs("begin", 1)...)
	mustAppend(t, s, load, events.NoStream, evs("e", 1)...)
	done := make(chan error, 1)
	go func() {
		for i := 1; i < total; i++ {
			e := events.EventData{Type: "Test", Data: fmt.Appendf(nil, "e-%d", i)}
			if _, err := s.AppendToStream(ctx(t), load, events.Exactly(events.Revision(i-1)), e); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	sub, err := s.SubscribeToStream(ctx(t), load, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	all, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{Filter: sp.all()})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	// Unfiltered, from an event before the first: whatever else the log
	// holds, ours come in order, each once.
	unfiltered, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{From: events.SubscribeAfterPosition(begin.Position)})
	if err != nil {
		t.Fatal(err)
	}
	defer unfiltered.Close()
	got := recv(t, sub, total)
	wantDatas(t, "stream subscription", got, names("e", 0, total)...)
	gotAll := recv(t, all, total+1)
	wantDatas(t, "$all subscription", gotAll, append([]string{"begin-0"}, names("e", 0, total)...)...)
	checkIncreasing(t, gotAll)
	gotUnfiltered := recvIn(t, sp, unfiltered, total)
	wantDatas(t, "unfiltered $all subscription", gotUnfiltered, names("e", 0, total)...)
	checkIncreasing(t, gotUnfiltered)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expectNext(t, s, load, sub, all)
}

func testSubscribeToAllFiltered(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	mustAppend(t, s, sp.s("conv-a"), events.NoStream, evs("a", 2)...)
	mustAppend(t, s, sp.s("inbox-a"), events.NoStream, evs("i", 2)...)

	convs := sp.filter("conv-")
	sub, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{Filter: convs})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	first := recv(t, sub, 2)
	wantDatas(t, "history", first, "a-0", "a-1")

	// Concurrent writers on several streams: each conv- event once, in
	// position order; inbox- events never.
	const writers, per = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				stream := sp.s(fmt.Sprintf("conv-w%d", w))
				if i%2 == 1 {
					stream = sp.s(fmt.Sprintf("inbox-w%d", w))
				}
				e := events.EventData{Type: "Test", Data: fmt.Appendf(nil, "%s-%d", stream, i)}
				if _, err := s.AppendToStream(ctx(t), stream, events.Any, e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := recv(t, sub, writers*per/2)
	checkIncreasing(t, append(first[1:], got...))
	seen := map[string]bool{}
	for _, e := range got {
		if !strings.HasPrefix(e.Stream, sp.s("conv-")) {
			t.Fatalf("filtered subscription delivered %s", e.Stream)
		}
		if seen[string(e.Data)] {
			t.Fatalf("delivered %s twice", e.Data)
		}
		seen[string(e.Data)] = true
	}
	mustAppend(t, s, sp.s("inbox-z"), events.Any, evs("skipped", 1)...)
	expectNext(t, s, sp.s("conv-z"), sub)

	// Resuming after a checkpoint delivers exactly what follows it.
	resumed, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{
		From:   events.SubscribeAfterPosition(got[len(got)-2].Position),
		Filter: convs,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	wantDatas(t, "resumed", recv(t, resumed, 1), string(got[len(got)-1].Data))
	if e := recv(t, resumed, 1)[0]; !strings.HasPrefix(string(e.Data), "marker-") {
		t.Fatalf("resumed subscription delivered %q, want the marker", e.Data)
	}
	expectNext(t, s, sp.s("conv-z"), resumed)

	end, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{From: events.SubscribeFromEnd(), Filter: sp.all()})
	if err != nil {
		t.Fatal(err)
	}
	defer end.Close()
	mustAppend(t, s, sp.s("conv-y"), events.NoStream, evs("y", 1)...)
	wantDatas(t, "$all from end", recv(t, end, 1), "y-0")
	unfiltered, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{From: events.SubscribeFromEnd()})
	if err != nil {
		t.Fatal(err)
	}
	defer unfiltered.Close()
	mustAppend(t, s, sp.s("inbox-y"), events.NoStream, evs("iy", 1)...)
	wantDatas(t, "unfiltered $all from end", recvIn(t, sp, unfiltered, 1), "iy-0")
}

func testSlowSubscriber(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	busy := sp.s("busy")
	stalled, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{Filter: sp.all()})
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	streamSub, err := s.SubscribeToStream(ctx(t), busy, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer streamSub.Close()
	// Neither subscription reads while 3,000 events are appended; the
	// appends must all complete (a writer waiting on a reader would hang
	// here until the deadline).
	const total = 3000
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < total; i += 100 {
		batch := make([]events.EventData, 100)
		for j := range batch {
			batch[j] = events.EventData{Type: "Test", Data: fmt.Appendf(nil, "b-%d", i+j)}
		}
		if _, err := s.AppendToStream(c, busy, events.Any, batch...); err != nil {
			t.Fatalf("append while a subscriber stalls: %v", err)
		}
	}
	wantDatas(t, "stalled $all subscriber catches up", recv(t, stalled, total), names("b", 0, total)...)
	wantDatas(t, "stalled stream subscriber catches up", recv(t, streamSub, total), names("b", 0, total)...)
}
