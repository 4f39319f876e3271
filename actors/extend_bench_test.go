package actors_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// BenchmarkSendWithReactor: the load of BenchmarkSendDirect (256 senders,
// each on its own direct conversation) with no extension, with a reactor
// that counts every message after the commit, and with a check that lets
// every message through, in one run. x-none is each rate over none's
// (measured just before); reacted-sends/s counts sends until the reactor
// had seen them all.
func BenchmarkSendWithReactor(b *testing.B) {
	var none float64
	b.Run("none", func(b *testing.B) {
		none = sendDirectRate(b, benchServiceWith(b, actors.Extensions{}))
		b.ReportMetric(none, "sends/s")
	})
	b.Run("reactor", func(b *testing.B) {
		var seen atomic.Int64
		counter := actors.Reactor{Name: "count", React: func(_ context.Context, _ *actors.Service, e actors.Committed) error {
			if _, ok := e.Event.(*eventspb.MessageSent); ok {
				seen.Add(1)
			}
			return nil
		}}
		svc := benchServiceWith(b, actors.Extensions{Reactors: []actors.Reactor{counter}})
		rate := sendDirectRate(b, svc)
		sending := float64(b.N) / rate
		caught := time.Now()
		for seen.Load() < int64(b.N) {
			if time.Since(caught) > time.Minute {
				b.Fatalf("the reactor saw %d of %d sends", seen.Load(), b.N)
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(rate, "sends/s")
		b.ReportMetric(float64(b.N)/(sending+time.Since(caught).Seconds()), "reacted-sends/s")
		if none > 0 {
			b.ReportMetric(rate/none, "x-none")
		}
	})
	b.Run("check", func(b *testing.B) {
		pass := actors.Check{Name: "pass", Func: func(context.Context, *actors.Draft) error { return nil }}
		rate := sendDirectRate(b, benchServiceWith(b, actors.Extensions{Checks: []actors.Check{pass}}))
		b.ReportMetric(rate, "sends/s")
		if none > 0 {
			b.ReportMetric(rate/none, "x-none")
		}
	})
}

func benchServiceWith(b *testing.B, ext actors.Extensions) *actors.Service {
	store, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := actors.Start(actors.Config{Store: store, Extensions: ext})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		svc.Close()
		store.Close()
	})
	return svc
}
