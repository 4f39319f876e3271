package actors_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/esdb/testserver"
)

// storeRate measures durable appends/s of ~200-byte events straight into the
// store from `writers` goroutines for d: the ceiling the grains sit on.
func storeRate(b *testing.B, store events.Store, writers int, d time.Duration) float64 {
	payload := make([]byte, 200)
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("probe-%d", w)
			for time.Now().Before(deadline) {
				if _, err := store.AppendToStream(context.Background(), stream, events.Any, events.EventData{Type: "Probe", Data: payload}); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

func benchService(b *testing.B) (*actors.Service, *events.Embedded) {
	store, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := actors.Start(actors.Config{Store: store})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		svc.Close()
		store.Close()
	})
	return svc, store
}

// runSends spreads b.N sends over `senders` goroutines; pick chooses what
// sender i sends where.
func runSends(b *testing.B, svc *actors.Service, senders int, pick func(i int) (conv, sender string)) time.Duration {
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv, sender := pick(i)
			for n := 0; left.Add(-1) >= 0; n++ {
				_, err := svc.Send(context.Background(), actors.SendRequest{Conversation: conv, Sender: sender, ClientMsgID: fmt.Sprint(n), Body: make([]byte, 100)})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkSendDirect: 256 pairs of users, each sender on its own direct
// conversation, every send durable, with write-fanout to both inboxes.
// store-appends/s is the store alone with the same concurrency, same run.
func BenchmarkSendDirect(b *testing.B) {
	svc, store := benchService(b)
	base := storeRate(b, store, directSenders, time.Second)
	rate := sendDirectRate(b, svc)
	b.ReportMetric(rate, "sends/s")
	b.ReportMetric(base, "store-appends/s")
	b.ReportMetric(rate/base, "x-store")
}

// BenchmarkSendDirectESDB: the load of BenchmarkSendDirect on the
// EventStoreDB backend (the official client against the protocol test
// server, whose events are on disk), beside the embedded store on disk used
// directly, same run.
func BenchmarkSendDirectESDB(b *testing.B) {
	srv, err := testserver.Start(context.Background(), testserver.Options{Dir: filepath.Join(b.TempDir(), "esdb")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	remote, err := esdb.Open(context.Background(), srv.URL(), esdb.Options{})
	if err != nil {
		b.Fatal(err)
	}
	onESDB, err := actors.Start(actors.Config{Store: remote})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		onESDB.Close()
		remote.Close()
	})
	embedded, _ := benchService(b)
	direct := sendDirectRate(b, embedded)
	b.StartTimer()
	rate := sendDirectRate(b, onESDB)
	b.ReportMetric(rate, "sends/s")
	b.ReportMetric(direct, "embedded-sends/s")
	b.ReportMetric(rate/direct, "x-embedded")
}

const directSenders = 256

// sendDirectRate runs b.N 1:1 sends from directSenders senders, each on
// its own direct conversation, and returns sends/s (the timer stops).
func sendDirectRate(b *testing.B, svc *actors.Service) float64 {
	b.StopTimer()
	convs := make([]string, directSenders)
	for i := range convs {
		c, err := svc.OpenDirect(context.Background(), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		if err != nil {
			b.Fatal(err)
		}
		convs[i] = c
	}
	b.StartTimer()
	elapsed := runSends(b, svc, directSenders, func(i int) (string, string) { return convs[i], fmt.Sprintf("a%d", i) })
	b.StopTimer()
	return float64(b.N) / elapsed.Seconds()
}

// BenchmarkSendGroup100: 64 members of one 100-member group send to it;
// each message fans out to 100 inboxes. fanned-sends/s counts sends whose
// fanout to every inbox finished.
func BenchmarkSendGroup100(b *testing.B) {
	const members, senders = 100, 64
	svc, store := benchService(b)
	var ids []string
	for i := range members {
		ids = append(ids, fmt.Sprintf("m%d", i))
	}
	g, err := svc.CreateGroup(context.Background(), "big", ids[0], "bench", ids[1:])
	if err != nil {
		b.Fatal(err)
	}
	base := storeRate(b, store, senders, time.Second)
	elapsed := runSends(b, svc, senders, func(i int) (string, string) { return g, ids[i] })
	acked := time.Now()
	rate := float64(b.N) / elapsed.Seconds()
	info, err := svc.Conversation(context.Background(), ids[0], g)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := svc.EnsureFanout(ctx, g, info.LastSeq); err != nil {
		b.Fatal(err)
	}
	fanned := float64(b.N) / (elapsed + time.Since(acked)).Seconds()
	b.StopTimer()
	b.ReportMetric(rate, "sends/s")
	b.ReportMetric(fanned, "fanned-sends/s")
	b.ReportMetric(base, "store-appends/s")
	b.ReportMetric(rate/base, "x-store")
}
