package events_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/teststore"
)

// BenchmarkCheckpoint cuts checkpoints of a store holding
// IMSYNC_BENCH_EVENTS events (default 20,000) of 200 bytes while 16
// writers append, and reports how long a checkpoint takes and the longest
// append acknowledged meanwhile (appends wait while the copy is cut).
func BenchmarkCheckpoint(b *testing.B) {
	n := teststore.BenchEvents(b, 20_000)
	ctx := context.Background()
	s, err := events.Open(filepath.Join(b.TempDir(), "store"), quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]events.EventData, 500)
	for i := range batch {
		batch[i] = events.EventData{Type: "T", Data: make([]byte, 200)}
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := s.AppendToStream(ctx, fmt.Sprint("s-", i%100), events.Any, batch...); err != nil {
			b.Fatal(err)
		}
	}
	var worst atomic.Int64 // longest append, ns
	var appended atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now()
				if _, err := s.AppendToStream(ctx, fmt.Sprint("w-", w), events.Any, events.EventData{Type: "T", Data: make([]byte, 200)}); err != nil {
					b.Error(err)
					return
				}
				appended.Add(1)
				for d := int64(time.Since(began)); ; {
					old := worst.Load()
					if d <= old || worst.CompareAndSwap(old, d) {
						break
					}
				}
			}
		}()
	}
	for appended.Load() < 1000 { // the writers' steady state, before the measurement
		runtime.Gosched()
	}
	worst.Store(0)
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Checkpoint(ctx, filepath.Join(b.TempDir(), fmt.Sprint("cp-", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/checkpoint")
	b.ReportMetric(float64(worst.Load())/1e6, "max-append-ms")
}
