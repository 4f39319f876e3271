package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeClusterFlagsRefused: cluster mode without what it needs, or
// with a malformed address, is a usage error that names the problem, and
// nothing is created.
func TestServeClusterFlagsRefused(t *testing.T) {
	const store = "esdb://127.0.0.1:1?tls=false"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"embedded store", []string{"--store", "", "--cluster", "chat", "--advertise", "127.0.0.1:8101"}, "store the members share"},
		{"no advertise", []string{"--store", store, "--cluster", "chat"}, "--advertise"},
		{"advertise without cluster", []string{"--store", store, "--advertise", "127.0.0.1:8101"}, "need --cluster"},
		{"peers without cluster", []string{"--store", store, "--peers", "127.0.0.1:8102"}, "need --cluster"},
		{"bad name", []string{"--store", store, "--cluster", "my chat", "--advertise", "127.0.0.1:8101"}, "--cluster"},
		{"advertise without port", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1"}, "--advertise"},
		{"wildcard advertise", []string{"--store", store, "--cluster", "chat", "--advertise", "0.0.0.0:8101"}, "wildcard"},
		{"advertise port too high", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:65000"}, "port"},
		{"bad peer", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--peers", "127.0.0.1:8102,nowhere"}, "--peers"},
		{"etcd without cluster", []string{"--store", store, "--etcd", "127.0.0.1:2379"}, "need --cluster"},
		{"etcd and peers", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--peers", "127.0.0.1:8102", "--etcd", "127.0.0.1:2379"}, "give one"},
		{"etcd without port", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", "127.0.0.1"}, "--etcd"},
		{"etcd port out of range", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", "127.0.0.1:2379,127.0.0.1:70000"}, "--etcd"},
		{"etcd with a scheme", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", "http://127.0.0.1:2379"}, "want HOST:PORT without a scheme (127.0.0.1:2379, not http://)"},
		{"etcd empty list", []string{"--store", store, "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", ","}, "--etcd"},
		{"etcd without advertise", []string{"--store", store, "--cluster", "chat", "--etcd", "127.0.0.1:2379"}, "--advertise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, tc.args...)
			err := run(context.Background(), args, io.Discard)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve %v: %v, want a usage error about %q", tc.args, err, tc.want)
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("serve %v created %s (%v)", tc.args, data, err)
			}
		})
	}
}

// TestServeEtcdUnreachable: with --etcd naming an address where no etcd
// answers, serve says so within its dial timeout, and creates nothing.
func TestServeEtcdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := l.Addr().String()
	l.Close() // nothing listens there now
	data := filepath.Join(t.TempDir(), "data")
	err = run(context.Background(), []string{"serve", "--data", data, "--listen", "127.0.0.1:0",
		"--store", "esdb://127.0.0.1:1?tls=false", "--cluster", "chat", "--advertise", "127.0.0.1:8101", "--etcd", nowhere}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--etcd") || !strings.Contains(err.Error(), nowhere) || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("serve with no etcd at %s: %v, want an error that says etcd did not answer there", nowhere, err)
	}
	if code := exitCode(err); code != exitUnavailable {
		t.Fatalf("exit status %d, want %d (unavailable: retry later)", code, exitUnavailable)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("serve created %s (%v)", data, err)
	}
}
