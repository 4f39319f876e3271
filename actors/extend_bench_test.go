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
	// paired: the three services take turns, pairedTurn sends at a time,
	// so that a machine whose load changes during the run slows all three
	// alike; ns/op counts the three services' sends together.
	b.Run("paired", func(b *testing.B) {
		b.StopTimer()
		none := newPairedService(b, actors.Extensions{})
		reactor := newPairedService(b, actors.Extensions{Reactors: []actors.Reactor{{Name: "count",
			React: func(context.Context, *actors.Service, actors.Committed) error { return nil }}}})
		check := newPairedService(b, actors.Extensions{Checks: []actors.Check{passCheck}})
		order := []*pairedService{none, reactor, check}
		b.StartTimer()
		for done := 0; done < b.N; done += pairedTurn {
			n := min(pairedTurn, b.N-done)
			for _, p := range order {
				p.round(b, n)
			}
			order = append(order[1:], order[0]) // each goes first in turn
		}
		b.StopTimer()
		rate := func(p *pairedService) float64 { return float64(b.N) / p.took.Seconds() }
		b.ReportMetric(rate(none), "none-sends/s")
		b.ReportMetric(rate(reactor), "reactor-sends/s")
		b.ReportMetric(rate(check), "check-sends/s")
		b.ReportMetric(rate(reactor)/rate(none), "reactor-x-none")
		b.ReportMetric(rate(check)/rate(none), "check-x-none")
	})
	b.Run("check", func(b *testing.B) {
		rate := sendDirectRate(b, benchServiceWith(b, actors.Extensions{Checks: []actors.Check{passCheck}}))
		b.ReportMetric(rate, "sends/s")
		if none > 0 {
			b.ReportMetric(rate/none, "x-none")
		}
	})
}

// pairedService is one service of the paired sub-benchmark, with
// directSenders direct conversations and the time its sends took.
type pairedService struct {
	svc   *actors.Service
	convs []string
	next  []int // per sender: the next client message id
	took  time.Duration
}

func newPairedService(b *testing.B, ext actors.Extensions) *pairedService {
	p := &pairedService{svc: benchServiceWith(b, ext), convs: make([]string, directSenders), next: make([]int, directSenders)}
	for i := range p.convs {
		c, err := p.svc.OpenDirect(context.Background(), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		if err != nil {
			b.Fatal(err)
		}
		p.convs[i] = c
	}
	return p
}

// round runs n sends spread over the service's conversations.
func (p *pairedService) round(b *testing.B, n int) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range p.convs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				p.next[i]++
				_, err := p.svc.Send(context.Background(), actors.SendRequest{Conversation: p.convs[i], Sender: fmt.Sprintf("a%d", i), ClientMsgID: fmt.Sprint(p.next[i]), Body: make([]byte, 100)})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	p.took += time.Since(start)
}

const pairedTurn = 1000

// passCheck lets every message through. On a machine loaded far beyond its
// cores a goroutine can wait longer than the default 200 ms to run, so it
// gets a longer timeout, and fails open rather than failing the benchmark.
var passCheck = actors.Check{Name: "pass", Timeout: time.Second, FailOpen: true,
	Func: func(context.Context, *actors.Draft) error { return nil }}

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
