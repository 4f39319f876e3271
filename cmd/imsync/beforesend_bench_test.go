package main

import (
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
	"github.com/imsync/imsync/projections/webhook"
)

// BenchmarkSendsWithBeforeSend measures durable 1:1 sends/s through the
// grains on the embedded store without a before-send webhook and with one
// (a receiver in this process that allows every message after checking
// its signature), in the same run: what one HTTP round trip per message
// costs. Each iteration is sendsPerOp sends by 64 senders on their own
// conversations.
func BenchmarkSendsWithBeforeSend(b *testing.B) {
	for _, withHook := range []bool{false, true} {
		name := "none"
		if withHook {
			name = "before-send"
		}
		b.Run(name, func(b *testing.B) { benchBeforeSend(b, withHook) })
	}
}

func benchBeforeSend(b *testing.B, withHook bool) {
	cfg := actors.Config{}
	var asked atomic.Int64
	if withHook {
		secret := []byte("bench")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if !webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader)) {
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			asked.Add(1)
			w.Write([]byte(`{"action":"allow"}`))
		}))
		defer srv.Close()
		hook := &webhook.BeforeSend{URL: srv.URL, Secret: secret, Timeout: time.Second,
			Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}}
		cfg.Extensions.Checks = []actors.Check{hook.AsCheck()}
	}
	store, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	cfg.Store = store
	svc, err := actors.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		svc.Close()
		store.Close()
	}()
	const senders = 64
	convs := make([]string, senders)
	for i := range convs {
		if convs[i], err = svc.OpenDirect(context.Background(), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var sendTime time.Duration
	for op := range b.N {
		var left atomic.Int64
		left.Store(sendsPerOp)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; left.Add(-1) >= 0; n++ {
					_, err := svc.Send(context.Background(), actors.SendRequest{Conversation: convs[i], Sender: fmt.Sprintf("a%d", i),
						ClientMsgID: fmt.Sprintf("%d-%d", op, n), Body: make([]byte, 100)})
					if err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		sendTime += time.Since(start)
	}
	b.StopTimer()
	if withHook && asked.Load() < int64(b.N*sendsPerOp) {
		b.Fatalf("the webhook was asked %d times for %d sends", asked.Load(), b.N*sendsPerOp)
	}
	b.ReportMetric(float64(b.N*sendsPerOp)/sendTime.Seconds(), "sends/s")
}
