package actors_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// testClock is a clock the test moves; the store and the rules share it.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func summaryOf(t *testing.T, list *eventspb.ConversationList, conv string) *eventspb.ConversationSummary {
	t.Helper()
	for _, c := range list.Conversations {
		if c.ConversationId == conv {
			return c
		}
	}
	t.Fatalf("%s is not in the conversation list %v", conv, list)
	return nil
}

// TestSyncRetentionRecoversThroughList: with a sync retention, a device
// away for longer than it finds its sync timeline cut (a gap), and then
// recovers through the conversation list: every conversation is there with
// the right unread counts, and read markers and history work.
func TestSyncRetentionRecoversThroughList(t *testing.T) {
	clock := newTestClock()
	store, err := events.OpenInMemory(events.Options{Now: clock.now, ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := actors.Config{Store: store, Now: clock.now, SyncRetention: 30 * 24 * time.Hour}
	ctx := tctx(t)

	svc1, err := actors.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := svc1.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	group, err := svc1.CreateGroup(ctx, "old-friends", "ann", "friends", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	send := func(svc *actors.Service, conv, body string) uint64 {
		t.Helper()
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: conv + body, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.EnsureFanout(ctx, conv, r.Seq); err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	first := send(svc1, dm, "d1")
	send(svc1, dm, "d2")
	send(svc1, dm, "d3")
	send(svc1, group, "g1")
	send(svc1, group, "g2")
	if _, err := svc1.MarkRead(ctx, "bob", "phone", dm, first); err != nil {
		t.Fatal(err)
	}
	before, err := svc1.Conversations(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if u := summaryOf(t, before, dm).Unread; u != 2 {
		t.Fatalf("dm unread %d before, want 2", u)
	}
	svc1.Close()

	clock.advance(31 * 24 * time.Hour) // every entry of bob's inbox expires
	svc2 := start(t, cfg)
	latest := send(svc2, dm, "d4")

	page, err := svc2.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.LastUserSeq != before.UserSeq+1 || len(page.Entries) != 1 || page.FirstUserSeq != before.UserSeq+1 {
		t.Fatalf("sync from 0 after the retention: first %d, last %d, %d entries; want only entry %d (a gap before it)",
			page.FirstUserSeq, page.LastUserSeq, len(page.Entries), before.UserSeq+1)
	}

	list, err := svc2.Conversations(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Conversations) != 2 {
		t.Fatalf("bob's list after the retention has %d conversations, want 2: %v", len(list.Conversations), list)
	}
	d, g := summaryOf(t, list, dm), summaryOf(t, list, group)
	if d.Unread != 3 || d.LastReadSeq != first || d.LatestMessageSeq != latest {
		t.Fatalf("dm after the retention: unread %d, read %d, latest %d; want 3, %d, %d", d.Unread, d.LastReadSeq, d.LatestMessageSeq, first, latest)
	}
	if g.Unread != 2 {
		t.Fatalf("group after the retention: unread %d, want 2", g.Unread)
	}

	// Jump to the first unread message, then read everything.
	h, err := svc2.History(ctx, "bob", dm, actors.HistoryQuery{After: d.LastReadSeq, Limit: 10})
	if err != nil || len(h.Messages) != 3 || string(h.Messages[0].Message.Body) != "d2" {
		t.Fatalf("history after the read marker: %v %v, want d2, d3, d4", h, err)
	}
	if _, err := svc2.MarkRead(ctx, "bob", "phone", dm, latest); err != nil {
		t.Fatalf("mark read after the retention: %v", err)
	}
	list, err = svc2.Conversations(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if u := summaryOf(t, list, dm).Unread; u != 0 {
		t.Fatalf("dm unread %d after reading, want 0", u)
	}
	meta, err := store.GetStreamMetadata(ctx, events.InboxStream("bob"))
	if err != nil || meta.MaxAge != cfg.SyncRetention {
		t.Fatalf("inbox-bob metadata %+v %v, want $maxAge %s", meta, err, cfg.SyncRetention)
	}
}

// TestInboxMaxCountKeepsList: an inbox with a $maxCount keeps only its
// latest entries; the user grain snapshots often enough that after a crash
// the conversation list, read markers and history still work.
func TestInboxMaxCountKeepsList(t *testing.T) {
	store := newStore(t)
	ctx := tctx(t)
	if err := store.SetStreamMetadata(ctx, events.InboxStream("bob"), events.StreamMetadata{MaxCount: 3}); err != nil {
		t.Fatal(err)
	}
	cfg := actors.Config{Store: store}
	dying := &dyingStore{Store: store}
	svc1, err := actors.Start(actors.Config{Store: dying})
	if err != nil {
		t.Fatal(err)
	}
	dm, err := svc1.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	group, err := svc1.CreateGroup(ctx, "trio", "ann", "trio", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	var dmSeqs []uint64
	for i := range 6 {
		r, err := svc1.Send(ctx, actors.SendRequest{Conversation: dm, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte(fmt.Sprint("d", i))})
		if err != nil {
			t.Fatal(err)
		}
		dmSeqs = append(dmSeqs, r.Seq)
	}
	if err := svc1.EnsureFanout(ctx, dm, dmSeqs[5]); err != nil {
		t.Fatal(err)
	}
	r, err := svc1.Send(ctx, actors.SendRequest{Conversation: group, Sender: "ann", ClientMsgID: "g", Body: []byte("g")})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc1.EnsureFanout(ctx, group, r.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := svc1.MarkRead(ctx, "bob", "phone", dm, dmSeqs[1]); err != nil {
		t.Fatal(err)
	}
	before, err := svc1.Conversations(ctx, "bob") // also: the grain is done with its snapshot
	if err != nil {
		t.Fatal(err)
	}
	crash(svc1, dying)

	svc2 := start(t, cfg)
	page, err := svc2.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.FirstUserSeq <= 1 || len(page.Entries) != 3 || page.LastUserSeq != before.UserSeq {
		t.Fatalf("sync from 0 with $maxCount 3: first %d, %d entries, last %d; want a gap, 3 entries, %d",
			page.FirstUserSeq, len(page.Entries), page.LastUserSeq, before.UserSeq)
	}
	list, err := svc2.Conversations(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Conversations) != 2 {
		t.Fatalf("bob's list has %d conversations, want 2: %v", len(list.Conversations), list)
	}
	if d := summaryOf(t, list, dm); d.Unread != 4 || d.LastReadSeq != dmSeqs[1] {
		t.Fatalf("dm: unread %d, read %d; want 4, %d", d.Unread, d.LastReadSeq, dmSeqs[1])
	}
	if g := summaryOf(t, list, group); g.Unread != 1 {
		t.Fatalf("group: unread %d, want 1", g.Unread)
	}
	h, err := svc2.History(ctx, "bob", dm, actors.HistoryQuery{After: dmSeqs[1], Limit: 10})
	if err != nil || len(h.Messages) != 4 {
		t.Fatalf("history after the read marker: %v %v, want 4 messages", h, err)
	}
	if _, err := svc2.MarkRead(ctx, "bob", "phone", group, r.Seq); err != nil {
		t.Fatalf("mark read: %v", err)
	}
}

// TestExpiredUncoveredInboxGoesOn: a user grain that died before any
// snapshot covered its entries, which then all expired, finds its
// timeline's end again and keeps its user seqs gapless from there.
func TestExpiredUncoveredInboxGoesOn(t *testing.T) {
	clock := newTestClock()
	store, err := events.OpenInMemory(events.Options{Now: clock.now, ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := actors.Config{Store: store, Now: clock.now, SyncRetention: 24 * time.Hour}
	ctx := tctx(t)
	dying := &dyingStore{Store: store}
	dcfg := cfg
	dcfg.Store = dying
	svc1, err := actors.Start(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := svc1.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 4 {
		r, err := svc1.Send(ctx, actors.SendRequest{Conversation: dm, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	if err := svc1.EnsureFanout(ctx, dm, last); err != nil {
		t.Fatal(err)
	}
	crash(svc1, dying) // bob's 5 entries: no snapshot covers them

	clock.advance(48 * time.Hour)
	svc2 := start(t, cfg)
	r, err := svc2.Send(ctx, actors.SendRequest{Conversation: dm, Sender: "ann", ClientMsgID: "later", Body: []byte("later")})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc2.EnsureFanout(ctx, dm, r.Seq); err != nil {
		t.Fatalf("fanout to an inbox whose entries expired uncovered: %v", err)
	}
	// The timeline goes on at user seq 6. (The conversation, whose fanout
	// checkpoint died with the process too, delivers its events again, and
	// the user grain, which lost them, takes them again: the list is whole.)
	page, err := svc2.Sync(ctx, "bob", 0, 100)
	if err != nil || page.FirstUserSeq != 6 || len(page.Entries) == 0 {
		t.Fatalf("bob's timeline: %v %v, want entries from 6 on", page, err)
	}
	for i, e := range page.Entries {
		if e.UserSeq != 6+uint64(i) {
			t.Fatalf("entry %d has user seq %d: a gap", i, e.UserSeq)
		}
	}
	newest, err := events.Decode(page.Entries[len(page.Entries)-1].Type, page.Entries[len(page.Entries)-1].Data)
	if p, ok := newest.(*eventspb.MessagePointer); err != nil || !ok || p.Seq != r.Seq {
		t.Fatalf("bob's newest entry %v %v, want the pointer to %d", newest, err, r.Seq)
	}
	list, err := svc2.Conversations(ctx, "bob")
	if err != nil || len(list.Conversations) != 1 {
		t.Fatalf("bob's list %v %v, want the direct conversation", list, err)
	}
}
