package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

// BenchmarkDelivery measures the sender alone: events/s from a store
// holding 20,000 message events (100-byte bodies, 64 conversations) to a
// receiver that only counts them, batches of 100, signed.
func BenchmarkDelivery(b *testing.B) {
	const n = 20_000
	store, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	for i := range n / 100 {
		var evs []events.EventData
		for j := range 100 {
			ed, _ := events.Encode(uuid.Nil, &eventspb.MessageSent{Sender: "ann", Kind: "text", Body: bytes.Repeat([]byte{'a' + byte(j%26)}, 100), AtUnixMs: int64(i)})
			evs = append(evs, ed)
		}
		if _, err := store.AppendToStream(context.Background(), events.ConversationStream(fmt.Sprint("c", i%64)), events.Any, evs...); err != nil {
			b.Fatal(err)
		}
	}
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Add(int64(bytes.Count(body, []byte(`"kind":"event"`))))
	}))
	defer srv.Close()
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		got.Store(0)
		s, err := webhook.New(webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: srv.URL, Secret: []byte("k")})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		start := time.Now()
		go func() { s.Run(ctx); close(done) }()
		for got.Load() < n {
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		cancel()
		<-done
	}
	b.ReportMetric(float64(b.N*n)/total.Seconds(), "events/s")
}
