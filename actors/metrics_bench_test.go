//go:build unix

package actors_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSendDirectActorMetrics: the load of BenchmarkSendDirect with
// protoactor-go's actor metrics off and on (serve --ops-actor-metrics);
// cpu-us/send is the process's CPU time per durable send, which a loaded
// machine disturbs less than the rate.
func BenchmarkSendDirectActorMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			store, err := events.Open(filepath.Join(b.TempDir(), "store"), events.Options{ScavengeInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			cfg := actors.Config{Store: store}
			if on {
				cfg.Metrics.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			}
			svc, err := actors.Start(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { svc.Close(); store.Close() })
			cpu := processCPU()
			rate := sendDirectRate(b, svc)
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N)/1e3, "cpu-us/send")
			b.ReportMetric(rate, "sends/s")
		})
	}
}
