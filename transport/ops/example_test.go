package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsync/imsync/transport/ops"
)

func Example() {
	reg := prometheus.NewRegistry()
	sends := prometheus.NewCounter(prometheus.CounterOpts{Name: "example_sends_total", Help: "Sends."})
	reg.MustRegister(sends)
	sends.Add(3)

	srv, err := ops.Listen("127.0.0.1:0", ops.Options{
		Registry: reg,
		Ready:    func(context.Context) error { return nil },
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get("http://" + srv.Addr().String() + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Printf("%s %d %s", path, res.StatusCode, body)
	}
	// Output:
	// /healthz 200 ok
	// /readyz 200 ready
}
