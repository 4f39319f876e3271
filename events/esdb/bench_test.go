package esdb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb/testserver"
)

// appendRate runs writers goroutines that append one ~200-byte event each
// to their own stream with an exact expected revision, n appends in all,
// and returns durable appends per second.
func appendRate(b *testing.B, s events.Store, writers, n int) float64 {
	payload := make([]byte, 200)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), w)
			exp := events.NoStream
			for next.Add(1) <= int64(n) {
				res, err := s.AppendToStream(ctx, stream, exp, events.EventData{Type: "Bench", Data: payload})
				if err != nil {
					b.Error(err)
					return
				}
				exp = events.Exactly(res.NextExpected)
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkAppendThroughClient measures durable appends through the
// official client against the protocol server (over an embedded store on
// disk) beside the embedded store used directly, in the same run, with 1,
// 16 and 256 writers. x-embedded is the ratio of the two.
func BenchmarkAppendThroughClient(b *testing.B) {
	for _, writers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			dir := b.TempDir()
			direct, err := events.Open(filepath.Join(dir, "direct"), events.Options{ScavengeInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer direct.Close()
			srv, err := testserver.Start(context.Background(), testserver.Options{Dir: filepath.Join(dir, "served")})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			client := open(b, srv.URL())
			defer client.Close()
			n := max(b.N, writers)
			embedded := appendRate(b, direct, writers, n)
			b.ResetTimer()
			viaClient := appendRate(b, client, writers, n)
			b.ReportMetric(viaClient, "appends/s")
			b.ReportMetric(embedded, "embedded-appends/s")
			b.ReportMetric(viaClient/embedded, "x-embedded")
		})
	}
}
