package ops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsync/imsync/transport/ops"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9400": true,
		"127.3.2.1:9400": true,
		"[::1]:9400":     true,
		"localhost:9400": true,
		"0.0.0.0:9400":   false,
		":9400":          false,
		"[::]:9400":      false,
		"10.0.0.5:9400":  false,
		"example.com:80": false,
		"127.0.0.1":      false, // no port: not an address Listen takes
	} {
		if got := ops.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestReadyzNotReady(t *testing.T) {
	srv, err := ops.Listen("127.0.0.1:0", ops.Options{
		Registry: prometheus.NewRegistry(),
		Ready:    func(context.Context) error { return errors.New("store closed") },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := http.Get("http://" + srv.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "store closed") {
		t.Fatalf("/readyz: %d %q", res.StatusCode, body)
	}
}

func TestListenNeedsRegistry(t *testing.T) {
	if _, err := ops.Listen("127.0.0.1:0", ops.Options{}); err == nil {
		t.Fatal("Listen without a registry")
	}
}
