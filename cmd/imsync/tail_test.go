package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTailExitsWhenTokenExpires: tail with a short-lived token ends, with
// an error naming the expiry, instead of waiting silently for ever.
func TestTailExitsWhenTokenExpires(t *testing.T) {
	addr, data := cliServer(t)
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "phone", "--ttl", "2s")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	ended := make(chan error, 1)
	go func() {
		ended <- run(ctx, []string{"tail", "--server", addr, "--token", strings.TrimSpace(tok), "--ca", filepath.Join(data, "server.crt")}, &out)
	}()
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "unauthorized") || !strings.Contains(err.Error(), "token expired") || exitCode(err) != exitRefused {
			t.Fatalf("tail ended with %v, want an error naming the expired token", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("tail still running after its token expired")
	}
}
