package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, &out)
	return out.String(), err
}

func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		got = append(got, m)
	}
	return got
}

func TestAppendReadLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, err := runCmd(t, "store", "append", "--data", dir, "--stream", "conv-1", "--expect", "no-stream", "hello", "world")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 1 || got[0]["revision"] != 1.0 || got[0]["position"] != 2.0 {
		t.Fatalf("append printed %v", got)
	}
	if _, err := runCmd(t, "store", "append", "--data", dir, "--stream", "inbox-a", "ping"); err != nil {
		t.Fatal(err)
	}
	_, err = runCmd(t, "store", "append", "--data", dir, "--stream", "conv-1", "--expect", "0", "late")
	if !errors.Is(err, events.ErrWrongExpectedRevision) {
		t.Fatalf("append at a stale revision: %v", err)
	}

	out, err = runCmd(t, "store", "read", "--data", dir, "--stream", "conv-1")
	if err != nil {
		t.Fatal(err)
	}
	got := lines(t, out)
	if len(got) != 2 || got[0]["text"] != "hello" || got[1]["text"] != "world" || got[1]["revision"] != 1.0 {
		t.Fatalf("read printed %v", got)
	}
	out, err = runCmd(t, "store", "read", "--data", dir, "--stream", "conv-1", "--backwards", "--limit", "1")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 1 || got[0]["text"] != "world" {
		t.Fatalf("read --backwards printed %v", got)
	}

	out, err = runCmd(t, "store", "log", "--data", dir, "--prefix", "conv-")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 2 || got[0]["stream"] != "conv-1" {
		t.Fatalf("log --prefix printed %v", got)
	}
	out, err = runCmd(t, "store", "log", "--data", dir, "--from", "3")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 1 || got[0]["text"] != "ping" {
		t.Fatalf("log --from 3 printed %v", got)
	}
}

// With no server running, nothing new can arrive in the store: log
// --follow refuses at once with status 5 and leaves the store free, so
// that a server starts on the directory.
func TestFollowWithoutServerRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := runCmd(t, "store", "append", "--data", dir, "--stream", "s", "one"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"store", "log", "--data", dir, "--follow"}, &out)
	if ctx.Err() != nil {
		t.Fatal("store log --follow kept following a store no server runs on")
	}
	if exitCode(err) != exitUnavailable || !strings.Contains(fmt.Sprint(err), "no server is running on "+dir) {
		t.Fatalf("store log --follow without a server: status %d, %v; want status %d naming the directory", exitCode(err), err, exitUnavailable)
	}
	if out.Len() != 0 {
		t.Fatalf("the refusal printed %q", out.String())
	}
	_, _, stop := serveInProcess(t, "serve", "--data", dir, "--listen", "127.0.0.1:0", "--log-level", "error")
	if err := stop(); err != nil {
		t.Fatalf("serve after the refused follow: %v", err)
	}
}

func TestBadUsage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	for _, args := range [][]string{
		{"frobnicate"},
		{"store", "read", "--stream", "x"},
		{"store"},
		{"send", "--to", "bob"},
		{"group", "rename"},
		{"read", "--conv", "c"},
		{"send", "--server", "x:1", "--token", "t", "--to", "a", "--conv", "b", "hi"},
		{"convs"},
		{"store", "append", "--data", dir, "--stream", "x"},
		{"store", "append", "--data", dir, "--stream", "x", "--expect", "sometimes", "t"},
		{"store", "read", "--data", dir, "--stream", "x", "--from", "-1"},
		{"store", "read", "--data", dir, "--nosuchflag"},
		{"store", "log", "--data", dir, "--stream", "x"},
		{"store", "scavenge", "--data", dir, "--stream", "x"},
		{"store", "log", "--data", dir, "--limit", "100000"},
		{"store", "log", "--data", dir, "--limit", "0"},
		{"store", "read", "--data", dir, "--stream", "x", "--limit", "10001"},
		{"store", "log", "--data", dir, "--follow", "--limit", "10"},
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
	// A bad --limit is refused by name before anything is opened.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, err := runCmd(t, "store", "log", "--data", fresh, "--limit", "100000"); !errors.Is(err, errUsage) ||
		!strings.Contains(err.Error(), "--limit 100000: want 1 to 10000") {
		t.Errorf("store log --limit 100000: %v", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused --limit touched %s: %v", fresh, err)
	}
	if _, err := runCmd(t, "store", "append", "--data", dir, "--stream", "", "t"); !errors.Is(err, events.ErrInvalidArgument) {
		t.Errorf("empty stream: %v", err)
	}
	if _, err := runCmd(t, "store", "read", "--data", dir, "--stream", "missing"); !errors.Is(err, events.ErrStreamNotFound) {
		t.Errorf("missing stream: %v", err)
	}
	if out, err := runCmd(t); err != nil || !strings.Contains(out, "imsync serve") {
		t.Errorf("no arguments: %q %v", out, err)
	}
}
