package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliServer runs `imsync serve` on a random port and returns its address
// and data directory; it stops with the test.
func cliServer(t *testing.T) (addr, data string) {
	t.Helper()
	return cliServerWith(t, "--listen", "127.0.0.1:0")
}

// cliServerWith is cliServer with these serve flags.
func cliServerWith(t *testing.T, flags ...string) (addr, data string) {
	t.Helper()
	data = filepath.Join(t.TempDir(), "data")
	addr, _, stop := serveInProcess(t, serveArgs(t, data, flags...)...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return addr, data
}

// TestOtherUsersTextIsEscaped: text from another user cannot reach the
// terminal as control characters or forge a line; --json keeps invalid
// UTF-8 visible as base64.
func TestOtherUsersTextIsEscaped(t *testing.T) {
	addr, data := cliServer(t)
	ca := filepath.Join(data, "server.crt")
	token := func(user string) string {
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", "d")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	ann, bob := token("ann"), token("bob")
	as := func(tok string, args ...string) string {
		t.Helper()
		full := append([]string{args[0], "--server", addr, "--token", tok, "--ca", ca}, args[1:]...)
		out, err := runCmd(t, full...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}
	evil := "hi\x1b[2J\nuser_seq=99 type=Forged\r\u202e"
	broken := "\xff\xfeok"
	conv := lines(t, as(ann, "send", "--json", "--to", "bob", evil))[0]["conversation"].(string)
	as(ann, "send", "--to", "bob", broken)

	text := as(bob, "history", "--conv", conv)
	if strings.ContainsAny(text, "\x1b\r\u202e") || !strings.Contains(text, `\xff\xfeok`) {
		t.Fatalf("history printed raw control characters or hid bytes:\n%q", text)
	}
	if got := strings.Split(strings.TrimSpace(text), "\n"); len(got) != 2 ||
		!strings.Contains(got[1], `text="hi\x1b[2J\nuser_seq=99 type=Forged\r\u202e"`) ||
		!strings.Contains(got[0], `text="\xff\xfeok"`) {
		t.Fatalf("history of two messages printed %d lines:\n%s", len(got), text)
	}

	js := lines(t, as(bob, "history", "--json", "--conv", conv))
	if len(js) != 2 || js[1]["text"] != evil {
		t.Fatalf("--json history: %v", js)
	}
	if _, ok := js[0]["text"]; ok || js[0]["text_base64"] != base64.StdEncoding.EncodeToString([]byte(broken)) {
		t.Fatalf("--json text that is not UTF-8: %v, want text_base64 and no text", js[0])
	}
}

// TestReadAndSyncPositions: `read` prints the marker that results, and a
// saved position beyond the server's newest is reported and synced anew.
func TestReadAndSyncPositions(t *testing.T) {
	addr, data := cliServer(t)
	ca := filepath.Join(data, "server.crt")
	token := func(user, device string) string {
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", device)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	ann, bob := token("ann", "d"), token("bob", "d")
	as := func(tok string, args ...string) []map[string]any {
		t.Helper()
		full := append([]string{args[0], "--server", addr, "--token", tok, "--ca", ca, "--json"}, args[1:]...)
		out, err := runCmd(t, full...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return lines(t, out)
	}
	var conv string
	for _, m := range []string{"one", "two", "three"} {
		conv = as(ann, "send", "--to", "bob", m)[0]["conversation"].(string)
	}
	if r := as(bob, "read", "--conv", conv, "--seq", "4"); r[0]["read_seq"] != 4.0 {
		t.Fatalf("read to 4 printed %v", r)
	}
	if r := as(bob, "read", "--conv", conv, "--seq", "2"); r[0]["read_seq"] != 4.0 {
		t.Fatalf("read to 2 after 4 printed %v; the marker stays at 4", r)
	}

	// Bob's timeline: joined, three messages, his read marker = 5 entries
	// (the last of them once the fanout is done).
	state := filepath.Join(t.TempDir(), "bob.seq")
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		os.Remove(state)
		if got := as(bob, "sync", "--state", state); len(got) == 5 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("bob's timeline did not reach 5 entries")
		}
	}
	os.WriteFile(state, []byte("40\n"), 0o644) // a position this server never had
	got := as(bob, "sync", "--state", state)
	if len(got) != 6 || got[0]["saved_user_seq"] != 40.0 || got[0]["newest_user_seq"] != 5.0 || got[0]["notice"] == nil {
		t.Fatalf("sync from beyond the newest printed %v", got)
	}
	for i, e := range got[1:] {
		if e["user_seq"] != float64(i+1) {
			t.Fatalf("resync printed %v", got)
		}
	}
	if b, _ := os.ReadFile(state); strings.TrimSpace(string(b)) != "5" {
		t.Fatalf("state after the resync: %q", b)
	}
	if again := as(bob, "sync", "--state", state); len(again) != 0 {
		t.Fatalf("sync after the resync printed %v", again)
	}
}
