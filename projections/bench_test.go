package projections_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/projections"
)

// chatStore fills an on-disk store with about n events shaped like 1:1
// chat: each message in a conversation's stream is followed by a pointer
// in each member's inbox (write-fanout), over 1,000 conversations of 2,000
// users, with a few hundred bytes of text each.
func chatStore(b *testing.B, n int) *events.Embedded {
	b.Helper()
	s, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	const perRound = 200 // messages of one conversation appended at once
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	text := []byte("the quick brown fox jumps over the lazy dog; ")
	written := 0
	for round := 0; written < n; round++ {
		c := round % 1000
		conv, a, bb := fmt.Sprint("c", c), fmt.Sprint("u", 2*c), fmt.Sprint("u", 2*c+1)
		k := min(perRound, (n-written+2)/3)
		msgs := make([]events.EventData, k)
		for i := range msgs {
			sender := a
			if i%2 == 1 {
				sender = bb
			}
			at := start.Add(time.Duration(round*perRound+i) * time.Second)
			msgs[i], _ = events.Encode(uuid.New(), &eventspb.MessageSent{Sender: sender, SenderDevice: "phone",
				ClientMsgId: uuid.NewString(), Kind: "text", Body: append(text, text...), AtUnixMs: at.UnixMilli()})
		}
		res, err := s.AppendToStream(ctx, events.ConversationStream(conv), events.Any, msgs...)
		if err != nil {
			b.Fatal(err)
		}
		first := uint64(res.NextExpected) + 2 - uint64(k)
		for _, user := range []string{a, bb} {
			ptrs := make([]events.EventData, k)
			for i := range ptrs {
				ptrs[i], _ = events.Encode(uuid.New(), &eventspb.MessagePointer{ConversationId: conv, Seq: first + uint64(i), Sender: a})
			}
			if _, err := s.AppendToStream(ctx, events.InboxStream(user), events.Any, ptrs...); err != nil {
				b.Fatal(err)
			}
		}
		written += 3 * k
	}
	return s
}

// BenchmarkReplay measures, over one store of IMSYNC_BENCH_EVENTS events,
// the raw read rate of $all (pages of 1,000, nothing decoded) and the
// replay rate of the stats projection through the runner (decode, Handle,
// checkpoints saved as `imsync replay` saves them), and their ratio.
func BenchmarkReplay(b *testing.B) {
	n := teststore.BenchEvents(b, 30_000)
	s := chatStore(b, n)
	ctx := context.Background()
	last, err := s.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1})
	if err != nil || len(last) == 0 {
		b.Fatalf("store: %v", err)
	}
	n = int(last[0].Position.Commit)  // positions count the events from 1
	if err := s.Flush(); err != nil { // read from tables, as a store that has run a while
		b.Fatal(err)
	}
	// One untimed pass first: both measurements then find the same warm
	// caches, whichever runs first.
	readAll(b, s)
	b.ResetTimer()
	var readTime, replayTime time.Duration
	var read, replayed int
	for range b.N {
		began := time.Now()
		read += readAll(b, s)
		readTime += time.Since(began)

		began = time.Now()
		stats := projections.NewStats()
		r := &projections.Runner{Store: s, Checkpoints: &projections.MemoryCheckpoints{}, Projection: stats,
			Until: last[0].Position, SaveInterval: time.Second,
			Applied: func(projections.Event) { replayed++ }}
		if err := r.Run(ctx); err != nil {
			b.Fatal(err)
		}
		replayTime += time.Since(began)
		if got := stats.Report().Fanout.Count; got == 0 {
			b.Fatal("stats counted no message")
		}
	}
	if read != b.N*n || replayed != b.N*n {
		b.Fatalf("read %d and replayed %d events, want %d each", read/b.N, replayed/b.N, n)
	}
	readRate := float64(read) / readTime.Seconds()
	replayRate := float64(replayed) / replayTime.Seconds()
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(readRate, "read-events/s")
	b.ReportMetric(replayRate, "stats-events/s")
	b.ReportMetric(replayRate/readRate, "stats/read")
}

// readAll reads $all from the start in pages of 1,000, decoding nothing,
// and returns how many events it read.
func readAll(b *testing.B, s events.Store) int {
	ctx := context.Background()
	n := 0
	from, first := events.PositionStart, true
	for {
		page, err := s.ReadAll(ctx, events.ReadAllOptions{From: from, Limit: 1000})
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range page {
			if !first && e.Position == from {
				continue // pages start at the previous page's last event
			}
			n++
		}
		if len(page) < 1000 {
			return n
		}
		from, first = page[len(page)-1].Position, false
	}
}
