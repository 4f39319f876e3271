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

// TestTailSaysWhenItReconnects: when its server restarts, tail says on
// standard error that the connection was lost and that it is back (and
// from which user seq), while standard output carries the timeline alone,
// the messages of before and after the restart.
func TestTailSaysWhenItReconnects(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, _, stop := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0")...)
	ca := filepath.Join(data, "server.crt")
	token := func(user string) string {
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", "phone")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	ann, bob := token("ann"), token("bob")
	send := func(id string) {
		t.Helper()
		if _, err := runCmd(t, "send", "--server", addr, "--token", ann, "--ca", ca, "--to", "bob", "--id", id, "text "+id); err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	ended := make(chan error, 1)
	go func() {
		ended <- run(withStderr(ctx, &errOut), []string{"tail", "--server", addr, "--token", bob, "--ca", ca}, &out)
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-ended:
				t.Fatalf("tail ended (%v) while waiting for %s; stderr %q", err, what, errOut.String())
			default:
			}
			if time.Now().After(end) {
				t.Fatalf("no %s; stdout %q, stderr %q", what, out.String(), errOut.String())
			}
		}
	}
	waitFor("start line", func() bool { return strings.Contains(errOut.String(), "following the sync timeline") })
	send("one")
	waitFor("first message", func() bool { return strings.Contains(out.String(), "text=\"text one\"") })

	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	waitFor("line about the lost connection", func() bool {
		return strings.Contains(errOut.String(), "imsync tail: connection to "+addr+" lost (")
	})
	_, _, stop2 := serveInProcess(t, serveArgs(t, data, "--listen", addr)...)
	defer stop2()
	waitFor("line about the reconnection", func() bool {
		return strings.Contains(errOut.String(), "imsync tail: reconnected to "+addr+"; resuming after user seq ")
	})
	send("two")
	waitFor("message after the restart", func() bool { return strings.Contains(out.String(), "text=\"text two\"") })

	var lastBefore string // the user seq of "one", the last entry printed before the restart
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, "user_seq=") {
			t.Fatalf("stdout line %q is not an entry: %q", line, out.String())
		}
		if strings.Contains(line, "text=\"text one\"") {
			lastBefore = strings.TrimPrefix(strings.Fields(line)[0], "user_seq=")
		}
	}
	if want := "resuming after user seq " + lastBefore + "\n"; !strings.Contains(errOut.String(), want) {
		t.Fatalf("stderr %q, want %q", errOut.String(), want)
	}
	cancel() // an interrupt ends tail without a word about its connection
	if err := <-ended; err != nil {
		t.Fatalf("tail ended with %v after the interrupt", err)
	}
	t.Logf("stderr:\n%s", errOut.String())
	if n := strings.Count(errOut.String(), "\n"); n != 3 {
		t.Fatalf("stderr has %d lines, want 3 (start, lost, reconnected): %q", n, errOut.String())
	}
}
