package actors_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

// countingStore counts the events read from streams with a prefix.
type countingStore struct {
	events.Store
	prefix string
	read   atomic.Int64
}

func (c *countingStore) ReadStream(ctx context.Context, stream string, opts events.ReadStreamOptions) ([]events.RecordedEvent, error) {
	page, err := c.Store.ReadStream(ctx, stream, opts)
	if strings.HasPrefix(stream, c.prefix) {
		c.read.Add(int64(len(page)))
	}
	return page, err
}

// dyingStore stands for the store as seen by a process that died: once
// dead, it writes nothing (grains stopping after the "crash" cannot write
// snapshots or checkpoints).
type dyingStore struct {
	events.Store
	dead atomic.Bool
}

func (d *dyingStore) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	if d.dead.Load() {
		return events.WriteResult{}, events.ErrClosed
	}
	return d.Store.AppendToStream(ctx, stream, expected, evs...)
}

func (d *dyingStore) SetStreamMetadata(ctx context.Context, stream string, meta events.StreamMetadata) error {
	if d.dead.Load() {
		return events.ErrClosed
	}
	return d.Store.SetStreamMetadata(ctx, stream, meta)
}

// crash stops svc as a process death would: nothing it does afterwards
// reaches the store.
func crash(svc *actors.Service, store *dyingStore) {
	store.dead.Store(true)
	svc.Crash()
}

// TestUserSnapshot: a user grain writes a snapshot every SnapshotEvery
// entries and rebuilds from it, replaying only the entries after it; the
// list is the same as from a full replay, and a snapshot that cannot be
// decoded falls back to the full replay.
func TestUserSnapshot(t *testing.T) {
	base := newStore(t)
	store := &countingStore{Store: base, prefix: events.InboxPrefix + "bob"}
	cfg := actors.Config{Store: store, SnapshotEvery: 10}
	ctx := tctx(t)

	dying := &dyingStore{Store: store}
	svc1, err := actors.Start(actors.Config{Store: dying, SnapshotEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	dm, err := svc1.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 25 {
		r, err := svc1.Send(ctx, actors.SendRequest{Conversation: dm, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	if err := svc1.EnsureFanout(ctx, dm, last); err != nil {
		t.Fatal(err)
	}
	if _, err := svc1.MarkRead(ctx, "bob", "phone", dm, 20); err != nil {
		t.Fatal(err)
	}
	want, err := svc1.Conversations(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got := summaryOf(t, want, dm).Unread; got != last-20 {
		t.Fatalf("unread %d, want %d", got, last-20)
	}
	// Crash: no snapshot at stop; the latest one was written after entry 20.
	crash(svc1, dying)

	check := func(name string, maxRead int64) {
		t.Helper()
		svc := start(t, cfg)
		store.read.Store(0)
		got, err := svc.Conversations(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		s := summaryOf(t, got, dm)
		if got.UserSeq != want.UserSeq || s.Unread != last-20 || s.LastReadSeq != 20 || s.LatestMessageSeq != last {
			t.Fatalf("%s: list %v, want %v", name, got, want)
		}
		if n := store.read.Load(); n > maxRead {
			t.Fatalf("%s: %d inbox entries read to load, want at most %d", name, n, maxRead)
		}
		svc.Crash()
	}
	check("from the snapshot", 10)

	// A snapshot that cannot be decoded: the full replay.
	if _, err := base.AppendToStream(ctx, events.SnapshotStream(events.InboxStream("bob")), events.Any,
		events.EventData{Type: "SnapshotPart", Data: []byte{0xff, 0xff, 0xff}}); err != nil {
		t.Fatal(err)
	}
	check("from a corrupt snapshot", int64(want.UserSeq))
}

// TestConversationSnapshot: a conversation grain writes a snapshot every
// SnapshotEvery events and rebuilds from it: unread counts, recalls,
// edits and client-id dedup are as before, and only the events after the
// snapshot are read; a corrupt snapshot means a full replay.
func TestConversationSnapshot(t *testing.T) {
	base := newStore(t)
	store := &countingStore{Store: base, prefix: events.ConversationPrefix + "snappy"}
	cfg := actors.Config{Store: store, SnapshotEvery: 10}
	ctx := tctx(t)

	dying := &dyingStore{Store: store}
	svc1, err := actors.Start(actors.Config{Store: dying, SnapshotEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	conv, err := svc1.CreateGroup(ctx, "snappy", "ann", "snap", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := range 24 {
		r, err := svc1.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte(fmt.Sprint("m", i))})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.Seq)
	}
	if _, err := svc1.Recall(ctx, "ann", conv, seqs[3]); err != nil {
		t.Fatal(err)
	}
	last, err := svc1.Edit(ctx, "ann", conv, seqs[4], []byte("edited"))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc1.EnsureFanout(ctx, conv, last); err != nil {
		t.Fatal(err)
	}
	// Asked after the fanout: the grain has written its snapshot by then.
	want, err := svc1.Conversation(ctx, "bob", conv)
	if err != nil {
		t.Fatal(err)
	}
	crash(svc1, dying)

	check := func(name string, maxRead int64) {
		t.Helper()
		svc := start(t, cfg)
		store.read.Store(0)
		got, err := svc.Conversation(ctx, "bob", conv)
		if err != nil {
			t.Fatal(err)
		}
		if n := store.read.Load(); n > maxRead {
			t.Fatalf("%s: %d conversation events read to load, want at most %d", name, n, maxRead)
		}
		if got.LastSeq != want.LastSeq || got.Unread != 23 || got.LatestMessageSeq != seqs[23] {
			t.Fatalf("%s: %v, want %v with 23 unread", name, got, want)
		}
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "5", Body: []byte("retry")})
		if err != nil || !r.Duplicate || r.Seq != seqs[5] {
			t.Fatalf("%s: retried send %+v %v, want duplicate of %d", name, r, err, seqs[5])
		}
		h, err := svc.History(ctx, "bob", conv, actors.HistoryQuery{After: seqs[2], Limit: 2})
		if err != nil || len(h.Messages) != 2 || !h.Messages[0].Recalled || string(h.Messages[1].Message.Body) != "edited" {
			t.Fatalf("%s: history %v %v, want a recalled and an edited message", name, h, err)
		}
		svc.Crash()
	}
	check("from the snapshot", 10)

	if _, err := base.AppendToStream(ctx, events.SnapshotStream(events.ConversationStream(conv)), events.Any,
		events.EventData{Type: "SnapshotPart", Data: []byte("not a snapshot")}); err != nil {
		t.Fatal(err)
	}
	check("from a corrupt snapshot", int64(want.LastSeq))
}
