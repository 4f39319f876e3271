package search_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/search"
)

// generateMessages appends n events to conversation streams of store:
// messages of 4 to 16 words from a vocabulary of 5,000 over 1,000
// conversations, with an edit every 20th event and a recall every 50th.
// It returns the position of the last one.
func generateMessages(b *testing.B, store events.Store, n int) events.Position {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := make([]string, 5000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%x", i*7919)
	}
	const convs, perAppend = 1000, 100
	seqs := make([]uint64, convs) // last seq per conversation
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var last events.Position
	for done := 0; done < n; {
		c := rng.IntN(convs)
		batch := make([]events.EventData, 0, perAppend)
		for len(batch) < perAppend && done+len(batch) < n {
			seq := seqs[c] + uint64(len(batch)) + 1
			i := done + len(batch)
			var e events.EventData
			var err error
			switch {
			case i%50 == 49 && seq > 1:
				e, err = events.Encode(uuid.New(), &eventspb.MessageRecalled{Seq: seq - 1, By: "u1", AtUnixMs: at})
			case i%20 == 19 && seq > 1:
				e, err = events.Encode(uuid.New(), &eventspb.MessageEdited{Seq: seq - 1, By: "u1", Body: []byte(words(rng, vocab)), AtUnixMs: at})
			default:
				e, err = events.Encode(uuid.New(), &eventspb.MessageSent{
					Sender: fmt.Sprintf("u%d", rng.IntN(10_000)), ClientMsgId: strconv.Itoa(i), Kind: "text",
					Body: []byte(words(rng, vocab)), AtUnixMs: at,
				})
			}
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, e)
			at += 10
		}
		r, err := store.AppendToStream(ctx, events.ConversationStream(fmt.Sprintf("c%d", c)), events.Any, batch...)
		if err != nil {
			b.Fatal(err)
		}
		seqs[c] += uint64(len(batch))
		done += len(batch)
		last = r.Position
	}
	return last
}

func words(rng *rand.Rand, vocab []string) string {
	w := make([]string, 4+rng.IntN(13))
	for i := range w {
		w[i] = vocab[rng.IntN(len(vocab))]
	}
	return strings.Join(w, " ")
}

// BenchmarkSearchReplay measures the replay of the search projection over
// generated message events (IMSYNC_BENCH_EVENTS, default 20,000) into a
// new index, as `imsync replay --projection search --rebuild` runs it,
// beside the raw read rate of $all (the same events, not decoded) from
// the same store in the same run. Metrics: search-events/s,
// read-events/s and their ratio.
func BenchmarkSearchReplay(b *testing.B) {
	n := teststore.BenchEvents(b, 20_000)
	dir := b.TempDir()
	store, err := events.Open(filepath.Join(dir, "events"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	start := time.Now()
	until := generateMessages(b, store, n)
	b.Logf("generated %d events in %s", n, time.Since(start).Round(time.Millisecond))
	filter := events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
	ctx := context.Background()

	var readTime, replayTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Raw $all: pages of the store's maximum, nothing decoded.
		t0 := time.Now()
		read, from := 0, events.PositionStart
		for {
			page, err := store.ReadAll(ctx, events.ReadAllOptions{From: from, Limit: events.MaxReadLimit, Filter: filter})
			if err != nil {
				b.Fatal(err)
			}
			read += len(page)
			if len(page) < events.MaxReadLimit {
				break
			}
			next := page[len(page)-1].Position
			from = events.Position{Commit: next.Commit + 1, Prepare: next.Prepare + 1}
		}
		readTime += time.Since(t0)
		if read != n {
			b.Fatalf("read %d events of %d", read, n)
		}

		b.StopTimer()
		x, err := search.Open(filepath.Join(dir, fmt.Sprintf("search-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 = time.Now()
		applied := 0
		r := &projections.Runner{Store: store, Checkpoints: x.Checkpoints(), Projection: x, Until: until,
			Applied: func(projections.Event) { applied++ }}
		if err := r.Run(ctx); err != nil {
			b.Fatal(err)
		}
		replayTime += time.Since(t0)
		b.StopTimer()
		if applied != n {
			b.Fatalf("replayed %d events of %d", applied, n)
		}
		if c, err := x.Count(); err != nil || c == 0 {
			b.Fatalf("index holds %d messages: %v", c, err)
		}
		x.Close()
		b.StartTimer()
	}
	readRate := float64(n*b.N) / readTime.Seconds()
	replayRate := float64(n*b.N) / replayTime.Seconds()
	b.ReportMetric(replayRate, "search-events/s")
	b.ReportMetric(readRate, "read-events/s")
	b.ReportMetric(replayRate/readRate, "search/read")
}
