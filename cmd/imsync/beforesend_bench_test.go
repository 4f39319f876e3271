package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
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
	sb := newSendBench(b, cfg)
	b.ResetTimer()
	var sendTime time.Duration
	for op := range b.N {
		start := time.Now()
		sb.round(b, op)
		sendTime += time.Since(start)
	}
	b.StopTimer()
	if withHook && asked.Load() < int64(b.N*sendsPerOp) {
		b.Fatalf("the webhook was asked %d times for %d sends", asked.Load(), b.N*sendsPerOp)
	}
	b.ReportMetric(float64(b.N*sendsPerOp)/sendTime.Seconds(), "sends/s")
}
