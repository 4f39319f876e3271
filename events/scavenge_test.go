package events_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
)

// TestScavengeReclaims checks that hidden events leave the disk, and that
// scavenging changes nothing a reader sees.
func TestScavengeReclaims(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, err := events.OpenInMemory(events.Options{Now: clock, ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	appendN := func(stream string, n int) {
		t.Helper()
		for i := range n {
			if _, err := s.AppendToStream(ctx, stream, events.Any, events.EventData{Type: "T", Data: fmt.Appendf(nil, "%s-%d", stream, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN("counted", 10)
	appendN("aged", 4)
	appendN("truncated", 5)
	appendN("soft", 3)
	appendN("tomb", 3)
	appendN("kept", 3)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetStreamMetadata(ctx, "counted", events.StreamMetadata{MaxCount: 3}))
	must(s.SetStreamMetadata(ctx, "aged", events.StreamMetadata{MaxAge: time.Hour}))
	must(s.SetStreamMetadata(ctx, "truncated", events.StreamMetadata{TruncateBefore: 4}))
	_, err = s.DeleteStream(ctx, "soft", events.Any)
	must(err)
	_, err = s.TombstoneStream(ctx, "tomb", events.Any)
	must(err)
	advance(2 * time.Hour)
	appendN("aged", 1) // young: stays

	visible := func() []string {
		got, err := s.ReadAll(ctx, events.ReadAllOptions{Limit: 1000})
		must(err)
		var out []string
		for _, e := range got {
			out = append(out, string(e.Data))
		}
		return out
	}
	before := visible()
	must(s.Scavenge(ctx))
	after := visible()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("scavenge changed what readers see:\n%q\n%q", before, after)
	}
	want := map[string]int{"counted": 3, "aged": 1, "truncated": 1, "soft": 0, "tomb": 0, "kept": 3}
	total := 0
	for stream, n := range want {
		got, err := s.StoredEvents(stream)
		must(err)
		if got != n {
			t.Errorf("%s: %d events on disk after scavenge, want %d", stream, got, n)
		}
		total += n
	}
	if n, err := s.StoredLogEntries(); err != nil || n != total {
		t.Fatalf("%d log entries on disk, want %d (%v)", n, total, err)
	}
	// Revisions go on after scavenging.
	res, err := s.AppendToStream(ctx, "counted", events.Exactly(9), events.EventData{Type: "T"})
	if err != nil || res.NextExpected != 10 {
		t.Fatalf("append after scavenge: %+v %v", res, err)
	}
}

func TestScavengeRunsInBackground(t *testing.T) {
	s, err := events.OpenInMemory(events.Options{ScavengeInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for range 5 {
		if _, err := s.AppendToStream(ctx, "c", events.Any, events.EventData{Type: "T"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetStreamMetadata(ctx, "c", events.StreamMetadata{MaxCount: 1}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := s.StoredEvents("c")
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still on disk", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScavengeThenReopenKeepsRevisions: after the scavenger deleted every
// event of a stream, a reopened store still knows where its revisions are.
func TestScavengeThenReopenKeepsRevisions(t *testing.T) {
	dir := t.TempDir() + "/s"
	s, err := events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, stream := range []string{"soft", "capped"} {
		for range 3 {
			if _, err := s.AppendToStream(ctx, stream, events.Any, events.EventData{Type: "T"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.DeleteStream(ctx, "soft", events.Any); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStreamMetadata(ctx, "capped", events.StreamMetadata{TruncateBefore: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Scavenge(ctx); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{"soft", "capped"} {
		if n, _ := s.StoredEvents(stream); n != 0 {
			t.Fatalf("%s: %d events left on disk", stream, n)
		}
	}
	s.Close()
	s, err = events.Open(dir, events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if res, err := s.AppendToStream(ctx, "soft", events.NoStream, events.EventData{Type: "T"}); err != nil || res.NextExpected != 3 {
		t.Fatalf("recreate soft-deleted stream after scavenge and reopen: %+v %v", res, err)
	}
	if res, err := s.AppendToStream(ctx, "capped", events.Exactly(2), events.EventData{Type: "T"}); err != nil || res.NextExpected != 3 {
		t.Fatalf("append to emptied stream after reopen: %+v %v", res, err)
	}
}
