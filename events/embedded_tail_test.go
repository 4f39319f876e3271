package events_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imsync/imsync/events"
)

// TestLiveReadsEqualColdReads: what subscriptions read while the events are
// new (from the store's memory of its newest records, where it has them)
// equals what a reopened store reads from disk — for small and large
// records, for a subscriber that keeps up and one that starts thousands of
// events behind, and with a truncated stream whose hidden events must stay
// hidden.
func TestLiveReadsEqualColdReads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 12000
	follow := func(from events.SubscribeFrom, count int, out *[]events.RecordedEvent, wg *sync.WaitGroup) {
		sub, err := s.SubscribeToAll(ctx, events.SubscribeAllOptions{From: from})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			for len(*out) < count {
				e, err := sub.Recv(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				*out = append(*out, e)
			}
		}()
	}
	// Stream h's 100 events are new (in memory) and hidden at once.
	for i := range 100 {
		if _, err := s.AppendToStream(ctx, "h", events.Any, events.EventData{Type: "T", Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetStreamMetadata(ctx, "h", events.StreamMetadata{TruncateBefore: 100}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var live, late []events.RecordedEvent
	follow(events.SubscribeFromStart(), n, &live, &wg)

	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range n / 4 {
				size := 10 + (i*37+w*101)%5000 // some above what memory keeps
				data := bytes.Repeat([]byte{byte('a' + (i+w)%26)}, size)
				meta := []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				if _, err := s.AppendToStream(ctx, fmt.Sprintf("s-%d", w), events.Any, events.EventData{Type: fmt.Sprintf("T%d", i%3), Data: data, Metadata: meta}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	writers.Wait()
	follow(events.SubscribeFromStart(), n, &late, &wg) // thousands of events behind
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cold, err := events.Open(dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()
	var want []events.RecordedEvent
	for from := (events.Position{}); ; {
		page, err := cold.ReadAll(ctx, events.ReadAllOptions{From: from, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		want = append(want, page...)
		last := page[len(page)-1].Position.Commit + 1
		from = events.Position{Commit: last, Prepare: last}
	}
	if len(want) != n {
		t.Fatalf("cold read %d events, want %d", len(want), n)
	}
	for name, got := range map[string][]events.RecordedEvent{"live": live, "late": late} {
		if len(got) != len(want) {
			t.Fatalf("%s subscriber read %d events, want %d", name, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.ID != w.ID || g.Type != w.Type || g.Stream != w.Stream || g.Revision != w.Revision ||
				g.Position != w.Position || !g.Created.Equal(w.Created) || !bytes.Equal(g.Data, w.Data) || !bytes.Equal(g.Metadata, w.Metadata) {
				t.Fatalf("%s subscriber's event %d: %s/%d at %v (%d bytes); disk holds %s/%d at %v (%d bytes)",
					name, i, g.Stream, g.Revision, g.Position, len(g.Data), w.Stream, w.Revision, w.Position, len(w.Data))
			}
		}
	}
}
