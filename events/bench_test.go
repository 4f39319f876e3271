package events_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
)

// plainFsyncRate measures a loop of 200-byte write + fsync on a file in dir:
// the rate a store without group commit could at best acknowledge.
func plainFsyncRate(tb testing.TB, dir string, n int) float64 {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 200)
	start := time.Now()
	for range n {
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkPlainFsync is the baseline: one write+fsync per event.
func BenchmarkPlainFsync(b *testing.B) {
	rate := plainFsyncRate(b, b.TempDir(), b.N)
	b.ReportMetric(rate, "fsyncs/s")
}

// BenchmarkAppend measures durable appends of one ~200-byte event each from
// 1, 16 and 256 concurrent writers (each on its own stream, with an exact
// expected revision), beside a plain write+fsync loop measured just before
// in the same run. x-fsync is the ratio of the two.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			dir := b.TempDir()
			fsync := plainFsyncRate(b, dir, 300)
			s, err := events.Open(filepath.Join(dir, "store"), events.Options{ScavengeInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			payload := make([]byte, 200)
			for i := range payload {
				payload[i] = byte('a' + i%26)
			}
			ctx := context.Background()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream := fmt.Sprintf("bench-%d", w)
					exp := events.NoStream
					for left.Add(-1) >= 0 {
						res, err := s.AppendToStream(ctx, stream, exp, events.EventData{Type: "MessageSent", Data: payload})
						if err != nil {
							b.Error(err)
							return
						}
						exp = events.Exactly(res.NextExpected)
					}
				}()
			}
			wg.Wait()
			rate := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(rate, "appends/s")
			b.ReportMetric(fsync, "fsyncs/s")
			b.ReportMetric(rate/fsync, "x-fsync")
		})
	}
}

// BenchmarkLiveSubscribers measures durable appends (256 writers, one ~200-byte
// event each) while 0 or 4 subscriptions to $all follow them to the end, as
// the server's fanout watcher, search index, reactors and webhooks do. The
// ratio of the rows is what each live reader costs the writers on the same
// cores.
func BenchmarkLiveSubscribers(b *testing.B) {
	for _, subs := range []int{0, 4} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			s, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			payload := make([]byte, 200)
			var followers sync.WaitGroup
			for range subs {
				sub, err := s.SubscribeToAll(ctx, events.SubscribeAllOptions{From: events.SubscribeFromStart()})
				if err != nil {
					b.Fatal(err)
				}
				followers.Add(1)
				go func() {
					defer followers.Done()
					defer sub.Close()
					for n := 0; n < b.N; n++ {
						if _, err := sub.Recv(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			var writers sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range 256 {
				writers.Add(1)
				go func() {
					defer writers.Done()
					stream := fmt.Sprintf("bench-%d", w)
					exp := events.NoStream
					for left.Add(-1) >= 0 {
						res, err := s.AppendToStream(ctx, stream, exp, events.EventData{Type: "MessageSent", Data: payload})
						if err != nil {
							b.Error(err)
							return
						}
						exp = events.Exactly(res.NextExpected)
					}
				}()
			}
			writers.Wait()
			followers.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
