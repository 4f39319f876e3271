package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

func TestFollowStopsOnCancel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := runCmd(t, "store", "append", "--data", dir, "--stream", "s", "one"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"store", "log", "--data", dir, "--follow"}, &out); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out.String()); len(got) != 1 || got[0]["text"] != "one" {
		t.Fatalf("log --follow printed %v", got)
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
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
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
