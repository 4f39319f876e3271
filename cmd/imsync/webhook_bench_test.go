package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

// BenchmarkSendsWithWebhook measures durable 1:1 sends/s through the
// grains on the embedded store, with no webhook and with a webhook posting
// every event to a receiver in this process, in the same run. Each
// iteration is sendsPerOp sends by 64 senders (so -benchtime 1x takes a
// few seconds); "webhook-events/s" is how fast the webhook delivered them
// (from the first send until the receiver had them all).
func BenchmarkSendsWithWebhook(b *testing.B) {
	for _, withHook := range []bool{false, true} {
		name := "none"
		if withHook {
			name = "webhook"
		}
		b.Run(name, func(b *testing.B) { benchSends(b, withHook) })
	}
}

const sendsPerOp = 4000

// sendBench is what the send benchmarks run on: the grains on an embedded
// store in dir, with one direct conversation a%d–b%d per sender.
type sendBench struct {
	svc   *actors.Service
	store events.Store
	dir   string
	convs []string
}

func newSendBench(b *testing.B, cfg actors.Config) *sendBench {
	dir := b.TempDir()
	store, err := events.Open(filepath.Join(dir, "store"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	cfg.Store = store
	svc, err := actors.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		svc.Close()
		store.Close()
	})
	const senders = 64
	sb := &sendBench{svc: svc, store: store, dir: dir, convs: make([]string, senders)}
	for i := range sb.convs {
		if sb.convs[i], err = svc.OpenDirect(context.Background(), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	return sb
}

// round makes sendsPerOp sends of iteration op, spread over the senders,
// and returns when all are acknowledged.
func (sb *sendBench) round(b *testing.B, op int) {
	var left atomic.Int64
	left.Store(sendsPerOp)
	var wg sync.WaitGroup
	for i := range sb.convs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; left.Add(-1) >= 0; n++ {
				_, err := sb.svc.Send(context.Background(), actors.SendRequest{Conversation: sb.convs[i], Sender: fmt.Sprintf("a%d", i),
					ClientMsgID: fmt.Sprintf("%d-%d", op, n), Body: make([]byte, 100)})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func benchSends(b *testing.B, withHook bool) {
	sb := newSendBench(b, actors.Config{})
	store, dir := sb.store, sb.dir
	var received atomic.Int64
	var stopHook func()
	if withHook {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Counting without parsing keeps the receiver's cost out of the figure.
			body, _ := io.ReadAll(r.Body)
			received.Add(int64(bytes.Count(body, []byte(`"type":"MessageSent"`))))
		}))
		defer srv.Close()
		s, err := webhook.New(webhook.Config{Store: store, Checkpoints: projections.FileCheckpoints{Dir: dir}, URL: srv.URL, Secret: []byte("bench"),
			From: events.SubscribeFromEnd()})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
		stopHook = func() { cancel(); wg.Wait() }
		defer stopHook()
	}
	b.ResetTimer()
	var sendTime, hookTime time.Duration
	for op := range b.N {
		start := time.Now()
		sb.round(b, op)
		sendTime += time.Since(start)
		if withHook {
			want := int64((op + 1) * sendsPerOp)
			deadline := time.Now().Add(time.Minute)
			for received.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("webhook delivered %d of %d", received.Load(), want)
				}
				time.Sleep(time.Millisecond)
			}
			hookTime += time.Since(start)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*sendsPerOp)/sendTime.Seconds(), "sends/s")
	if withHook {
		b.ReportMetric(float64(b.N*sendsPerOp)/hookTime.Seconds(), "webhook-events/s")
	}
}
