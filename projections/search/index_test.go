package search_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/search"
)

func newStore(t testing.TB) *events.Embedded {
	t.Helper()
	s, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openIndex(t testing.TB, dir string) *search.Index {
	t.Helper()
	x, err := search.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// appendEvent appends m to conv's stream and returns its seq.
func appendEvent(t testing.TB, s events.Store, conv string, m proto.Message) uint64 {
	t.Helper()
	e, err := events.Encode(uuid.New(), m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.AppendToStream(context.Background(), events.ConversationStream(conv), events.Any, e)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(r.NextExpected) + 1
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func send(t testing.TB, s events.Store, conv, sender, kind, text string, at time.Time) uint64 {
	t.Helper()
	return appendEvent(t, s, conv, &eventspb.MessageSent{Sender: sender, ClientMsgId: uuid.NewString(), Kind: kind, Body: []byte(text), AtUnixMs: at.UnixMilli()})
}

// catchUp runs the index over everything the store holds now.
func catchUp(t testing.TB, s events.Store, x *search.Index, saveEvery int) {
	t.Helper()
	ctx := context.Background()
	last, err := s.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: x.Filter()})
	if err != nil {
		t.Fatal(err)
	}
	if len(last) == 0 {
		return
	}
	r := &projections.Runner{Store: s, Checkpoints: x.Checkpoints(), Projection: x, Until: last[0].Position, SaveEvery: saveEvery}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

type ref struct {
	Conv string
	Seq  uint64
}

func find(t testing.TB, x *search.Index, q search.Query) []ref {
	t.Helper()
	res, err := x.Search(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var out []ref
	for _, h := range res.Hits {
		out = append(out, ref{h.Conversation, h.Seq})
	}
	slices.SortFunc(out, func(a, b ref) int {
		if a.Conv != b.Conv {
			if a.Conv < b.Conv {
				return -1
			}
			return 1
		}
		return int(a.Seq) - int(b.Seq)
	})
	return out
}

func TestRecallAndEdit(t *testing.T) {
	s := newStore(t)
	x := openIndex(t, filepath.Join(t.TempDir(), "search"))
	a1 := send(t, s, "c1", "ann", "text", "the quarterly report is late", t0)
	a2 := send(t, s, "c1", "bob", "text", "report draft attached", t0.Add(time.Minute))
	a3 := send(t, s, "c1", "ann", "text", "lunch at noon", t0.Add(2*time.Minute))
	// Edited and recalled in the same batch as the send.
	appendEvent(t, s, "c1", &eventspb.MessageRecalled{Seq: a2, By: "bob"})
	appendEvent(t, s, "c1", &eventspb.MessageEdited{Seq: a3, By: "ann", Body: []byte("dinner at eight")})
	catchUp(t, s, x, 1000)

	if got, want := find(t, x, search.Query{Text: "report"}), []ref{{"c1", a1}}; !slices.Equal(got, want) {
		t.Fatalf("report: got %v, want %v (the recalled draft must be gone)", got, want)
	}
	if got := find(t, x, search.Query{Text: "lunch"}); len(got) != 0 {
		t.Fatalf("old text of an edited message still found: %v", got)
	}
	res, err := x.Search(context.Background(), search.Query{Text: "DINNER eight"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hits) != 1 || res.Hits[0].Seq != a3 || res.Hits[0].Text != "dinner at eight" || !res.Hits[0].Edited ||
		res.Hits[0].Sender != "ann" || !res.Hits[0].Time.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("edited message: got %+v", res.Hits)
	}

	// Edited and recalled in later batches than the send (read back from
	// the index).
	appendEvent(t, s, "c1", &eventspb.MessageEdited{Seq: a1, By: "ann", Body: []byte("the annual summary is late")})
	catchUp(t, s, x, 1000)
	if got := find(t, x, search.Query{Text: "quarterly"}); len(got) != 0 {
		t.Fatalf("old text still found after a later edit: %v", got)
	}
	if got, want := find(t, x, search.Query{Text: "annual", Sender: "ann"}), []ref{{"c1", a1}}; !slices.Equal(got, want) {
		t.Fatalf("annual: got %v, want %v", got, want)
	}
	appendEvent(t, s, "c1", &eventspb.MessageRecalled{Seq: a1, By: "ann"})
	catchUp(t, s, x, 1000)
	if got := find(t, x, search.Query{Text: "late"}); len(got) != 0 {
		t.Fatalf("recalled message still found: %v", got)
	}
	if n, _ := x.Count(); n != 1 {
		t.Fatalf("index holds %d messages, want 1 (only the edited one)", n)
	}
}

func TestFieldFilters(t *testing.T) {
	s := newStore(t)
	x := openIndex(t, filepath.Join(t.TempDir(), "search"))
	m1 := send(t, s, "c1", "ann", "text", "deploy tonight", t0)
	m2 := send(t, s, "c1", "bob", "text", "deploy tomorrow", t0.Add(time.Hour))
	m3 := send(t, s, "c2", "ann", "poll", "deploy when?", t0.Add(2*time.Hour))
	m4 := send(t, s, "c3", "cat", "text", "deploy done", t0.Add(3*time.Hour))
	catchUp(t, s, x, 2)

	for _, tc := range []struct {
		name string
		q    search.Query
		want []ref
	}{
		{"all", search.Query{Text: "deploy"}, []ref{{"c1", m1}, {"c1", m2}, {"c2", m3}, {"c3", m4}}},
		{"conversation", search.Query{Text: "deploy", Conversations: []string{"c1"}}, []ref{{"c1", m1}, {"c1", m2}}},
		{"conversations", search.Query{Text: "deploy", Conversations: []string{"c2", "c3"}}, []ref{{"c2", m3}, {"c3", m4}}},
		{"no conversations", search.Query{Text: "deploy", Conversations: []string{}}, nil},
		{"sender", search.Query{Text: "deploy", Sender: "ann"}, []ref{{"c1", m1}, {"c2", m3}}},
		{"kind", search.Query{Text: "deploy", Kind: "poll"}, []ref{{"c2", m3}}},
		{"from", search.Query{Text: "deploy", From: t0.Add(2 * time.Hour)}, []ref{{"c2", m3}, {"c3", m4}}},
		{"to (exclusive)", search.Query{Text: "deploy", To: t0.Add(time.Hour)}, []ref{{"c1", m1}}},
		{"range", search.Query{Text: "deploy", From: t0.Add(time.Minute), To: t0.Add(2*time.Hour + time.Millisecond)}, []ref{{"c1", m2}, {"c2", m3}}},
		{"every word", search.Query{Text: "deploy tonight"}, []ref{{"c1", m1}}},
		{"combined", search.Query{Text: "deploy", Sender: "ann", Conversations: []string{"c1", "c3"}}, []ref{{"c1", m1}}},
		{"unknown word", search.Query{Text: "rollback"}, nil},
	} {
		if got := find(t, x, tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPaging(t *testing.T) {
	s := newStore(t)
	x := openIndex(t, filepath.Join(t.TempDir(), "search"))
	const n = 25
	for i := range n {
		send(t, s, "c1", "ann", "text", fmt.Sprintf("standup note %d", i), t0.Add(time.Duration(i)*time.Minute))
	}
	catchUp(t, s, x, 7)
	seen := map[uint64]bool{}
	var times []time.Time
	for offset := 0; ; {
		res, err := x.Search(context.Background(), search.Query{Text: "standup", Limit: 10, Offset: offset})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != n {
			t.Fatalf("total %d, want %d", res.Total, n)
		}
		for _, h := range res.Hits {
			if seen[h.Seq] {
				t.Fatalf("seq %d on two pages", h.Seq)
			}
			seen[h.Seq] = true
			times = append(times, h.Time)
		}
		offset += len(res.Hits)
		if !res.More {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("paged %d hits, want %d", len(seen), n)
	}
	// Equal scores: newest first.
	if !slices.IsSortedFunc(times, func(a, b time.Time) int { return b.Compare(a) }) {
		t.Fatalf("hits of equal score not newest first: %v", times)
	}
}

func TestBadQueries(t *testing.T) {
	x := openIndex(t, filepath.Join(t.TempDir(), "search"))
	for _, q := range []search.Query{
		{Text: ""},
		{Text: "   "},
		{Text: "x", Limit: -1},
		{Text: "x", Limit: search.MaxLimit + 1},
		{Text: "x", Offset: -1},
		{Text: "x", Offset: search.MaxOffset + 1},
		{Text: "x", From: t0, To: t0},
		{Text: "x", From: t0.Add(time.Second), To: t0},
		{Text: string(make([]byte, search.MaxQueryBytes+1))},
	} {
		if _, err := x.Search(context.Background(), q); !errors.Is(err, search.ErrInvalidQuery) {
			t.Errorf("%+v: got %v, want ErrInvalidQuery", q, err)
		}
	}
}

// expected is what the index must hold after the events appendWorkload
// wrote: every message not recalled, with its latest text.
type expected map[ref]string

// appendWorkload writes n messages over three conversations with edits and
// recalls among them.
func appendWorkload(t testing.TB, s events.Store, n int, want expected) {
	t.Helper()
	for i := range n {
		conv := fmt.Sprintf("c%d", i%3)
		text := fmt.Sprintf("word%d common", i)
		seq := send(t, s, conv, "ann", "text", text, t0.Add(time.Duration(i)*time.Second))
		want[ref{conv, seq}] = text
		switch i % 7 {
		case 3:
			appendEvent(t, s, conv, &eventspb.MessageRecalled{Seq: seq, By: "ann"})
			delete(want, ref{conv, seq})
		case 5:
			edited := fmt.Sprintf("edited%d common", i)
			appendEvent(t, s, conv, &eventspb.MessageEdited{Seq: seq, By: "ann", Body: []byte(edited)})
			want[ref{conv, seq}] = edited
		}
	}
}

// checkHolds fails unless the index holds exactly want.
func checkHolds(t *testing.T, x *search.Index, want expected) {
	t.Helper()
	if n, err := x.Count(); err != nil || n != uint64(len(want)) {
		t.Fatalf("index holds %d messages (%v), want %d", n, err, len(want))
	}
	got := expected{}
	for offset := 0; ; offset += search.MaxLimit {
		res, err := x.Search(context.Background(), search.Query{Text: "common", Limit: search.MaxLimit, Offset: offset})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range res.Hits {
			r := ref{h.Conversation, h.Seq}
			if _, dup := got[r]; dup {
				t.Fatalf("%v found twice", r)
			}
			got[r] = h.Text
		}
		if !res.More {
			break
		}
	}
	for r, text := range want {
		if got[r] != text {
			t.Errorf("%v: got %q, want %q", r, got[r], text)
		}
	}
	for r := range got {
		if _, ok := want[r]; !ok {
			t.Errorf("%v found, but recalled or never sent", r)
		}
	}
}

// TestRestartResumesFromCheckpoint stops the projection with changes
// staged but not saved (a crash), reopens the index and resumes: nothing
// is missing, nothing doubled, and the checkpoint is the one stored with
// the documents.
func TestRestartResumesFromCheckpoint(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := filepath.Join(t.TempDir(), "search")
	want := expected{}
	appendWorkload(t, s, 60, want)

	x, err := search.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cps := x.Checkpoints()
	if _, ok, err := cps.Load(ctx, search.Name); err != nil || ok {
		t.Fatalf("new index has a checkpoint: %v %v", ok, err)
	}
	all, err := s.ReadAll(ctx, events.ReadAllOptions{From: events.PositionStart, Limit: events.MaxReadLimit, Filter: x.Filter()})
	if err != nil {
		t.Fatal(err)
	}
	// Apply and save the first 40 events, then stage 20 more and "crash".
	for i, re := range all[:60] {
		e, err := projections.Decode(re)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.Handle(ctx, e); err != nil {
			t.Fatal(err)
		}
		if i == 39 {
			if err := cps.Save(ctx, search.Name, projections.Checkpoint{Position: re.Position}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}

	x = openIndex(t, dir)
	cp, ok, err := x.Checkpoints().Load(ctx, search.Name)
	if err != nil || !ok || cp.Position != all[39].Position {
		t.Fatalf("checkpoint after restart: %v %v %v, want %v", cp.Position, ok, err, all[39].Position)
	}
	// More events arrive meanwhile; the runner resumes after the checkpoint.
	appendWorkload(t, s, 30, want)
	applied := 0
	last, _ := s.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: x.Filter()})
	r := &projections.Runner{Store: s, Checkpoints: x.Checkpoints(), Projection: x, Until: last[0].Position, SaveEvery: 9,
		Applied: func(projections.Event) { applied++ }}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	total, _ := s.ReadAll(ctx, events.ReadAllOptions{From: events.PositionStart, Limit: events.MaxReadLimit, Filter: x.Filter()})
	if applied != len(total)-40 {
		t.Fatalf("resumed with %d events, want the %d after the checkpoint", applied, len(total)-40)
	}
	checkHolds(t, x, want)

	// A rebuild from scratch ends in the same index.
	if err := r.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	checkHolds(t, x, want)
}

// TestLiveAndReopen feeds the index live while messages arrive, stops it,
// and checks that a reopened index holds everything.
func TestLiveAndReopen(t *testing.T) {
	s := newStore(t)
	dir := filepath.Join(t.TempDir(), "search")
	x, err := search.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		r := &projections.Runner{Store: s, Checkpoints: x.Checkpoints(), Projection: x, SaveIdle: 20 * time.Millisecond}
		done <- r.Run(ctx)
	}()
	want := expected{}
	appendWorkload(t, s, 50, want)
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := x.Count()
		if err != nil {
			t.Fatal(err)
		}
		// Searches run while the runner writes.
		if _, err := x.Search(context.Background(), search.Query{Text: "common"}); err != nil {
			t.Fatal(err)
		}
		if n == uint64(len(want)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live index holds %d messages, want %d", n, len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	x = openIndex(t, dir)
	checkHolds(t, x, want)
}

func TestIndexInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "search")
	openIndex(t, dir)
	if _, err := search.Open(dir); err == nil {
		t.Fatal("a second open of an index in use succeeded")
	}
}
