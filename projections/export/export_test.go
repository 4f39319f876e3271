package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	pb "github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections/export"
)

const at = 1_700_000_000_123 // at_unix_ms of the hand-written events

type fixture struct {
	stream string
	msg    proto.Message // nil: a "Text" event (not a domain event) of raw
	want   map[string]any
	raw    []byte
}

// fixtures are events of every domain type with the columns each must
// fill (values as in the JSONL line), besides stream, revision, position,
// id, type and time, which every row is checked for.
var fixtures = []fixture{
	{stream: "conv-c1", msg: &pb.ConversationCreated{ConversationId: "c1", Kind: pb.ConversationKind_GROUP, Name: "team", Creator: "ann", Members: []string{"ann", "bob"}, AtUnixMs: at},
		want: map[string]any{"conversation": "c1", "seq": 1.0, "conversation_kind": "GROUP", "name": "team", "by": "ann", "members": []any{"ann", "bob"}, "at": "2023-11-14T22:13:20.123Z"}},
	{stream: "conv-c1", msg: &pb.MessageSent{Sender: "ann", SenderDevice: "phone", ClientMsgId: "m1", Kind: "text", Body: []byte("héllo\nworld"), Mentions: []string{"bob"}, AtUnixMs: at},
		want: map[string]any{"conversation": "c1", "seq": 2.0, "sender": "ann", "device": "phone", "client_msg_id": "m1", "kind": "text", "text": "héllo\nworld", "mentions": []any{"bob"}, "at": "2023-11-14T22:13:20.123Z"}},
	{stream: "conv-c1", msg: &pb.MessageSent{Sender: "bob", SenderDevice: "laptop", ClientMsgId: "m2", Kind: "text", Body: []byte{0xff, 0xfe}, ReplyTo: 2},
		want: map[string]any{"conversation": "c1", "seq": 3.0, "sender": "bob", "device": "laptop", "client_msg_id": "m2", "kind": "text", "text_base64": "//4=", "reply_to": 2.0}},
	{stream: "conv-c1", msg: &pb.MessageRecalled{Seq: 2, By: "ann", AtUnixMs: at},
		want: map[string]any{"conversation": "c1", "seq": 4.0, "target_seq": 2.0, "by": "ann", "at": "2023-11-14T22:13:20.123Z"}},
	{stream: "conv-c1", msg: &pb.MessageEdited{Seq: 3, By: "bob", Body: []byte("fixed")},
		want: map[string]any{"conversation": "c1", "seq": 5.0, "target_seq": 3.0, "by": "bob", "text": "fixed"}},
	{stream: "conv-c1", msg: &pb.MemberAdded{User: "carol", By: "ann"},
		want: map[string]any{"conversation": "c1", "seq": 6.0, "user": "carol", "by": "ann"}},
	{stream: "conv-c1", msg: &pb.MembersJoined{Users: []string{"dan", "eve"}, By: "ann"},
		want: map[string]any{"conversation": "c1", "seq": 7.0, "members": []any{"dan", "eve"}, "by": "ann"}},
	{stream: "conv-c1", msg: &pb.MemberRemoved{User: "dan", By: "dan"},
		want: map[string]any{"conversation": "c1", "seq": 8.0, "user": "dan", "by": "dan"}},
	{stream: "inbox-bob", msg: &pb.MessagePointer{ConversationId: "c1", Seq: 2, Sender: "ann", Message: &pb.MessageSent{Sender: "ann", SenderDevice: "phone", ClientMsgId: "m1", Kind: "text", Body: []byte("hi")}},
		want: map[string]any{"user_seq": 1.0, "conversation": "c1", "seq": 2.0, "sender": "ann", "device": "phone", "client_msg_id": "m1", "kind": "text", "text": "hi"}},
	{stream: "inbox-bob", msg: &pb.RecallNotice{ConversationId: "c1", Seq: 4, RecalledSeq: 2, By: "ann"},
		want: map[string]any{"user_seq": 2.0, "conversation": "c1", "seq": 4.0, "target_seq": 2.0, "by": "ann"}},
	{stream: "inbox-bob", msg: &pb.EditNotice{ConversationId: "c1", Seq: 5, EditedSeq: 3, By: "bob", Body: []byte("fixed")},
		want: map[string]any{"user_seq": 3.0, "conversation": "c1", "seq": 5.0, "target_seq": 3.0, "by": "bob", "text": "fixed"}},
	{stream: "inbox-bob", msg: &pb.MembershipChanged{ConversationId: "c1", Seq: 6, User: "carol", Added: true, By: "ann", Kind: pb.ConversationKind_GROUP, Name: "team"},
		want: map[string]any{"user_seq": 4.0, "conversation": "c1", "seq": 6.0, "user": "carol", "added": true, "by": "ann", "conversation_kind": "GROUP", "name": "team", "read_fanout": false}},
	{stream: "inbox-bob", msg: &pb.ConversationChanged{ConversationId: "c1", Seq: 8},
		want: map[string]any{"user_seq": 5.0, "conversation": "c1", "seq": 8.0}},
	{stream: "inbox-bob", msg: &pb.ReadMarkerMoved{ConversationId: "c1", ReadSeq: 3, Device: "phone"},
		want: map[string]any{"user_seq": 6.0, "conversation": "c1", "read_seq": 3.0, "device": "phone"}},
	{stream: "device-bob/phone", msg: &pb.DeviceAcked{UserSeq: 6}, want: map[string]any{"user_seq": 6.0}},
	{stream: "fanout-c1", msg: &pb.FanoutCheckpoint{Seq: 8}, want: map[string]any{"conversation": "c1", "seq": 8.0}},
	{stream: "watch-fanout", msg: &pb.WatchCheckpoint{Commit: 9, Prepare: 9}, want: map[string]any{}},
	{stream: "notes", raw: []byte("raw text"), want: map[string]any{"text": "raw text"}},
	{stream: "notes", raw: []byte{0, 0xff}, want: map[string]any{"text_base64": "AP8="}},
}

// bulk is how many generated messages follow the fixtures: more than one
// read page and one Parquet write batch.
const bulk = 2500

func fill(t *testing.T) *events.Embedded {
	t.Helper()
	s, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for _, f := range fixtures {
		e := events.EventData{Type: "Text", Data: f.raw}
		if f.msg != nil {
			if e, err = events.Encode(uuid.Nil, f.msg); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.AppendToStream(ctx, f.stream, events.Any, e); err != nil {
			t.Fatal(err)
		}
	}
	for i := range bulk {
		e, _ := events.Encode(uuid.Nil, &pb.MessageSent{Sender: fmt.Sprint("u", i%7), Kind: "text", Body: []byte(fmt.Sprint("message ", i))})
		if _, err := s.AppendToStream(ctx, fmt.Sprint("conv-g", i%3), events.Any, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func readAll(t *testing.T, s events.Store, filter events.Filter) []events.RecordedEvent {
	t.Helper()
	evs, err := s.ReadAll(context.Background(), events.ReadAllOptions{Limit: events.MaxReadLimit, Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func exportTo(t *testing.T, s events.Store, f export.Format, rng export.Range) ([]byte, int) {
	t.Helper()
	var buf bytes.Buffer
	w, err := export.NewWriter(f, &buf)
	if err != nil {
		t.Fatal(err)
	}
	n, err := export.Export(context.Background(), s, rng, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), n
}

func jsonLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// placeColumns are in every row.
var placeColumns = []string{"stream", "revision", "position", "id", "type", "time"}

// TestJSONLMatchesStore: one line per stored event, in order, with the
// event's place in the store and the fixture's columns — and no others.
func TestJSONLMatchesStore(t *testing.T) {
	s := fill(t)
	stored := readAll(t, s, events.Filter{})
	out, n := exportTo(t, s, export.JSONL, export.Range{})
	rows := jsonLines(t, out)
	if n != len(stored) || len(rows) != len(stored) || len(stored) != len(fixtures)+bulk {
		t.Fatalf("exported %d rows (%d lines), store holds %d events", n, len(rows), len(stored))
	}
	for i, e := range stored {
		r := rows[i]
		place := map[string]any{"stream": e.Stream, "revision": float64(e.Revision), "position": float64(e.Position.Commit),
			"id": e.ID.String(), "type": e.Type, "time": e.Created.UTC().Format(time.RFC3339Nano)}
		want := map[string]any{}
		if i < len(fixtures) {
			maps.Copy(want, fixtures[i].want)
		} else {
			want["conversation"] = strings.TrimPrefix(e.Stream, "conv-")
			want["seq"] = float64(e.Revision + 1)
			want["sender"] = fmt.Sprint("u", (i-len(fixtures))%7)
			want["kind"] = "text"
			want["text"] = fmt.Sprint("message ", i-len(fixtures))
		}
		maps.Copy(want, place)
		got := maps.Clone(r)
		fields, hasFields := got["fields"]
		delete(got, "fields")
		if gj, wj := jsonString(t, got), jsonString(t, want); gj != wj {
			t.Fatalf("row %d:\n got  %s\n want %s", i, gj, wj)
		}
		// fields: the whole event, as protobuf JSON.
		if i < len(fixtures) && fixtures[i].msg == nil {
			if hasFields {
				t.Fatalf("row %d: fields for a raw event", i)
			}
			continue
		}
		if !hasFields {
			t.Fatalf("row %d: no fields", i)
		}
		if i < len(fixtures) {
			m := fixtures[i].msg.ProtoReflect().New().Interface()
			if err := (protojsonUnmarshal(jsonString(t, fields), m)); err != nil || !proto.Equal(m, fixtures[i].msg) {
				t.Fatalf("row %d: fields %s do not decode to the stored event (%v)", i, jsonString(t, fields), err)
			}
		}
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRanges: --from/--to are inclusive positions, the filter keeps
// streams by prefix; counts match the store.
func TestRanges(t *testing.T) {
	s := fill(t)
	all := readAll(t, s, events.Filter{})
	from, to := all[5].Position, all[1500].Position
	_, n := exportTo(t, s, export.JSONL, export.Range{From: from, To: to})
	if n != 1496 {
		t.Fatalf("exported %d rows from %v to %v, want 1496", n, from, to)
	}
	filter := events.Filter{StreamPrefixes: []string{"inbox-", "conv-c"}}
	out, n := exportTo(t, s, export.JSONL, export.Range{Filter: filter})
	want := readAll(t, s, filter)
	if n != len(want) || n != 14 {
		t.Fatalf("exported %d rows with prefixes, store holds %d", n, len(want))
	}
	for i, r := range jsonLines(t, out) {
		if r["position"] != float64(want[i].Position.Commit) {
			t.Fatalf("row %d at %v, want %v", i, r["position"], want[i].Position)
		}
	}
	if _, n := exportTo(t, s, export.JSONL, export.Range{From: events.Position{Commit: all[len(all)-1].Position.Commit + 1}}); n != 0 {
		t.Fatalf("exported %d rows after the end", n)
	}
}

// TestParquetReadsBack writes the same export as Parquet and reads it back
// through parquet-go's untyped reader (parquet.File + parquet.Row values
// looked up by column name in the file's own schema): a decode path that
// does not use the export.Row struct mapping the writer used. Every row
// must equal its JSONL line, which TestJSONLMatchesStore checks against
// the store.
func TestParquetReadsBack(t *testing.T) {
	s := fill(t)
	jsonl, _ := exportTo(t, s, export.JSONL, export.Range{})
	want := jsonLines(t, jsonl)
	data, n := exportTo(t, s, export.Parquet, export.Range{})
	path := filepath.Join(t.TempDir(), "events.parquet")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got := readParquet(t, path)
	if n != len(want) || len(got) != len(want) {
		t.Fatalf("parquet holds %d rows (%d written), JSONL %d", len(got), n, len(want))
	}
	for i := range want {
		w := normalize(t, want[i])
		if !maps.Equal(got[i], w) {
			t.Fatalf("row %d:\n parquet %v\n jsonl   %v", i, got[i], w)
		}
	}
}

// readParquet returns each row as column name → canonical string, null
// columns left out.
func readParquet(t *testing.T, path string) []map[string]string {
	t.Helper()
	osf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	st, _ := osf.Stat()
	f, err := parquet.OpenFile(osf, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	schema := f.Schema()
	names := map[int]string{} // leaf column index → top-level column name
	for _, path := range schema.Columns() {
		leaf, _ := schema.Lookup(path...)
		names[leaf.ColumnIndex] = path[0]
	}
	for _, c := range []string{"stream", "revision", "position", "id", "type", "time", "conversation", "seq", "text", "fields"} {
		if _, ok := schema.Lookup(c); !ok {
			t.Fatalf("schema has no column %s:\n%s", c, schema)
		}
	}
	r := parquet.NewReader(f)
	defer r.Close()
	var out []map[string]string
	buf := make([]parquet.Row, 100)
	for {
		k, err := r.ReadRows(buf)
		for _, row := range buf[:k] {
			m := map[string]string{}
			for _, v := range row {
				if v.IsNull() {
					continue
				}
				name := names[v.Column()]
				var s string
				switch v.Kind() {
				case parquet.ByteArray:
					s = string(v.ByteArray())
				case parquet.Boolean:
					s = fmt.Sprint(v.Boolean())
				case parquet.Int64:
					s = fmt.Sprint(v.Int64())
				default:
					t.Fatalf("column %s of kind %v", name, v.Kind())
				}
				if prev, ok := m[name]; ok { // a list
					s = prev + "|" + s
				}
				m[name] = s
			}
			if f, ok := m["fields"]; ok {
				var v any
				if err := json.Unmarshal([]byte(f), &v); err != nil {
					t.Fatalf("fields column is not JSON: %q", f)
				}
				m["fields"] = jsonString(t, v)
			}
			out = append(out, m)
		}
		if err != nil {
			break
		}
	}
	return out
}

// normalize turns a JSONL row into readParquet's form: timestamps as
// integers (time: microseconds, at: milliseconds), lists joined by "|".
func normalize(t *testing.T, row map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range row {
		switch v := v.(type) {
		case string:
			out[k] = v
			if k == "time" || k == "at" {
				ts, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					t.Fatal(err)
				}
				out[k] = fmt.Sprint(ts.UnixMicro())
				if k == "at" {
					out[k] = fmt.Sprint(ts.UnixMilli())
				}
			}
		case float64:
			out[k] = fmt.Sprint(int64(v))
		case bool:
			out[k] = fmt.Sprint(v)
		case []any:
			var parts []string
			for _, p := range v {
				parts = append(parts, p.(string))
			}
			out[k] = strings.Join(parts, "|")
		case map[string]any:
			out[k] = jsonString(t, v)
		default:
			t.Fatalf("column %s: unexpected %T", k, v)
		}
	}
	return out
}

// TestParquetSchema pins the documented schema: every column, its type and
// whether it may be null (docs/analysts.md lists the same).
func TestParquetSchema(t *testing.T) {
	got := parquet.SchemaOf(export.Row{}).String()
	want, err := os.ReadFile("testdata/schema.txt")
	if os.Getenv("REWRITE") != "" {
		os.WriteFile("testdata/schema.txt", []byte(got), 0o644)
		return
	}
	if err != nil || strings.TrimSpace(string(want)) != strings.TrimSpace(got) {
		t.Fatalf("schema changed (update docs/analysts.md, then REWRITE=1):\n%s", got)
	}
}

func protojsonUnmarshal(s string, m proto.Message) error { return protojson.Unmarshal([]byte(s), m) }
