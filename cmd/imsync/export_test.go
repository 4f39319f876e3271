package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections/export"
)

// exportData makes a data directory whose store holds n messages in
// conv-c1, one inbox entry per message and a raw event.
func exportData(t *testing.T, n int) (string, []events.RecordedEvent) {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range n {
		e, _ := events.Encode(uuid.Nil, &eventspb.MessageSent{Sender: "ann", SenderDevice: "phone", ClientMsgId: fmt.Sprint("m", i), Kind: "text", Body: []byte(fmt.Sprint("hello ", i))})
		if _, err := s.AppendToStream(ctx, "conv-c1", events.Any, e); err != nil {
			t.Fatal(err)
		}
		p, _ := events.Encode(uuid.Nil, &eventspb.MessagePointer{ConversationId: "c1", Seq: uint64(i + 1), Sender: "ann"})
		if _, err := s.AppendToStream(ctx, "inbox-bob", events.Any, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AppendToStream(ctx, "notes", events.Any, events.EventData{Type: "Text", Data: []byte("a note")}); err != nil {
		t.Fatal(err)
	}
	all, err := s.ReadAll(ctx, events.ReadAllOptions{Limit: events.MaxReadLimit})
	if err != nil {
		t.Fatal(err)
	}
	return data, all
}

func TestExportJSONLAndParquet(t *testing.T) {
	data, all := exportData(t, 30)
	dir := t.TempDir()

	jsonl := filepath.Join(dir, "events.jsonl")
	out, err := runCmd(t, "export", "--data", data, "--format", "jsonl", "--out", jsonl)
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 1 || got[0]["rows"] != float64(len(all)) {
		t.Fatalf("export printed %v, want %d rows", got, len(all))
	}
	b, _ := os.ReadFile(jsonl)
	rows := lines(t, string(b))
	if len(rows) != len(all) {
		t.Fatalf("%d lines, store holds %d events", len(rows), len(all))
	}
	for i, e := range all {
		r := rows[i]
		if r["stream"] != e.Stream || r["revision"] != float64(e.Revision) || r["position"] != float64(e.Position.Commit) || r["type"] != e.Type {
			t.Fatalf("row %d %v, event %s@%d at %v", i, r, e.Stream, e.Revision, e.Position)
		}
	}
	if r := rows[2]; r["conversation"] != "c1" || r["seq"] != 2.0 || r["sender"] != "ann" || r["device"] != "phone" || r["client_msg_id"] != "m1" || r["text"] != "hello 1" {
		t.Fatalf("second message row %v", r)
	}
	if r := rows[len(rows)-1]; r["stream"] != "notes" || r["text"] != "a note" {
		t.Fatalf("raw event row %v", r)
	}

	pq := filepath.Join(dir, "events.parquet")
	if _, err := runCmd(t, "export", "--data", data, "--format", "parquet", "--out", pq, "--streams", "conv-", "--from-position", "3", "--to-position", "41"); err != nil {
		t.Fatal(err)
	}
	got, err := parquet.ReadFile[export.Row](pq)
	if err != nil {
		t.Fatal(err)
	}
	// Positions 3..41 hold messages 1..20 (odd positions; pointers are even).
	if len(got) != 20 || got[0].Position != 3 || got[19].Position != 41 || *got[0].Seq != 2 || *got[19].Text != "hello 20" {
		t.Fatalf("parquet holds %d rows: first %+v", len(got), got[0])
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("export left %v in the output directory", entries)
	}

	out, err = runCmd(t, "export", "--data", data, "--format", "jsonl", "--out", "-", "--streams", "inbox-")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 30 || got[29]["user_seq"] != 30.0 || got[29]["seq"] != 30.0 {
		t.Fatalf("--out - printed %d rows, last %v", len(got), got[len(got)-1])
	}
}

// TestExportRefusals: no store is created where none is, a store held by
// a server gets an error saying what to do, bad flags are usage errors.
func TestExportRefusals(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	out := filepath.Join(t.TempDir(), "x.jsonl")
	if _, err := runCmd(t, "export", "--data", empty, "--format", "jsonl", "--out", out); err == nil || !strings.Contains(err.Error(), "holds no event store") {
		t.Fatalf("export of a directory without a store: %v", err)
	}
	if _, err := os.Stat(storeDir(empty)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("export created %s: %v", storeDir(empty), err)
	}

	data, _ := exportData(t, 1)
	held, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCmd(t, "export", "--data", data, "--format", "jsonl", "--out", out)
	held.Close()
	if !errors.Is(err, events.ErrInUse) || !strings.Contains(err.Error(), "stop the server") {
		t.Fatalf("export of a store in use: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed export left %s", out)
	}

	for _, args := range [][]string{
		{"export", "--format", "jsonl", "--out", out},
		{"export", "--data", data, "--format", "jsonl"},
		{"export", "--data", data, "--format", "csv", "--out", out},
		{"export", "--data", data, "--out", out, "--from-position", "x"},
		{"export", "--data", data, "--out", out, "--from-position", "5", "--to-position", "4"},
		{"export", "--data", data, "--out", out, "extra"},
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}

// TestStoreLogDecoded: store log and read print domain events decoded
// (message text as text); --raw keeps the stored payload.
func TestStoreLogDecoded(t *testing.T) {
	data, _ := exportData(t, 2)
	out, err := runCmd(t, "store", "log", "--data", data, "--prefix", "conv-")
	if err != nil {
		t.Fatal(err)
	}
	got := lines(t, out)
	if len(got) != 2 || got[1]["text"] != "hello 1" || got[1]["sender"] != "ann" || got[1]["seq"] != 2.0 || got[1]["type"] != "MessageSent" {
		t.Fatalf("store log printed %v", got)
	}
	if f, ok := got[1]["fields"].(map[string]any); !ok || f["client_msg_id"] != "m1" {
		t.Fatalf("store log fields %v", got[1]["fields"])
	}
	out, err = runCmd(t, "store", "read", "--data", data, "--stream", "inbox-bob")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 2 || got[1]["conversation"] != "c1" || got[1]["user_seq"] != 2.0 {
		t.Fatalf("store read printed %v", got)
	}
	out, err = runCmd(t, "store", "log", "--data", data, "--prefix", "conv-", "--raw")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, out); len(got) != 2 || got[0]["data"] == nil || got[0]["fields"] != nil {
		t.Fatalf("store log --raw printed %v", got)
	}
}
