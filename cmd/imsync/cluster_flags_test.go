package main

import (
	"context"
	"errors"
	"io"
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
