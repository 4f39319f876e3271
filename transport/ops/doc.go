// Package ops serves a server's operations endpoints over HTTP: Prometheus
// metrics, liveness, readiness and pprof. It is meant for a loopback or
// otherwise private address.
//
//	m, _ := transport.NewMetrics()
//	// ... start the grains with m.Actors() and the gateway with Config.Metrics = m ...
//	srv, err := ops.Listen("127.0.0.1:9400", ops.Options{
//		Registry: m.Registry(),
//		Ready: func(ctx context.Context) error {
//			if gateway.Draining() {
//				return errors.New("draining")
//			}
//			return nil
//		},
//	})
//	defer srv.Close()
//
// Endpoints:
//
//	/metrics       Prometheus text format (the registry's series)
//	/healthz       200 while the process serves HTTP
//	/readyz        200 when Ready returns nil, else 503 with its error
//	/debug/pprof/  Go's profiles (net/http/pprof)
package ops
