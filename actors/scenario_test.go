package actors_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
)

// pushSink records pushes.
type pushSink chan *actors.Push

func (ch pushSink) Push(p *actors.Push) { ch <- p }

// device is a stand-in for a connection: it records pushes.
func device(t *testing.T, svc *actors.Service, user, dev string) (*actors.Attachment, chan *actors.Push) {
	t.Helper()
	ch := make(chan *actors.Push, 1000)
	a, err := svc.AttachDevice(tctx(t), user, dev, pushSink(ch))
	if err != nil || !a.State.Online {
		t.Fatalf("attach %s/%s: %v %v", user, dev, a, err)
	}
	return a, ch
}

func waitPush(t *testing.T, ch chan *actors.Push, userSeq uint64) *actors.Push {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-ch:
			if p.UserSeq >= userSeq {
				return p
			}
		case <-deadline:
			t.Fatalf("no push up to user seq %d", userSeq)
		}
	}
}

func TestGroupLifecycle(t *testing.T) {
	// The grains read the clock from their own goroutines.
	var now atomic.Int64
	now.Store(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	svc := start(t, actors.Config{Store: newStore(t), Now: clock, PassivateAfter: 300 * time.Millisecond})
	ctx := tctx(t)

	_, bobPhone := device(t, svc, "bob", "phone")
	_, bobLaptop := device(t, svc, "bob", "laptop")

	g, err := svc.CreateGroup(ctx, "", "ann", "team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	waitPush(t, bobPhone, 1) // bob joined
	s1, _ := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", ClientMsgID: "a1", Body: []byte("hello")})
	p := waitPush(t, bobPhone, 2)
	if p.Entry == nil || p.Entry.UserSeq != 2 {
		t.Fatalf("small entry not inlined in the push: %v", p)
	}
	waitPush(t, bobLaptop, 2)

	// Membership: cat joins and sees only what comes after.
	if _, err := svc.AddMember(ctx, "ann", g, "cat"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddMember(ctx, "bob", g, "dan"); !errors.Is(err, actors.ErrForbidden) {
		t.Fatalf("a plain member adds: %v", err)
	}
	s2, _ := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "bob", ClientMsgID: "b1", Body: []byte("hi cat")})

	// Recall and edit, within their windows; not by others.
	if _, err := svc.Recall(ctx, "cat", g, s1.Seq); !errors.Is(err, actors.ErrForbidden) {
		t.Fatalf("cat recalls ann's message: %v", err)
	}
	if _, err := svc.Edit(ctx, "bob", g, s2.Seq, []byte("hi, cat!")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Recall(ctx, "ann", g, s1.Seq); err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureFanout(ctx, g, s2.Seq+2); err != nil {
		t.Fatal(err)
	}

	h, err := svc.History(ctx, "cat", g, actors.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Messages) != 2 || h.Messages[0].Seq != s2.Seq || string(h.Messages[0].Message.Body) != "hi, cat!" || !h.Messages[0].Edited {
		t.Fatalf("history newest first with the edit: %v", h.Messages)
	}
	if !h.Messages[1].Recalled || h.Messages[1].Message.Body != nil {
		t.Fatalf("recalled message still shows its body: %v", h.Messages[1])
	}
	older, err := svc.History(ctx, "cat", g, actors.HistoryQuery{Before: s2.Seq, Limit: 10})
	if err != nil || len(older.Messages) != 1 || older.Messages[0].Seq != s1.Seq {
		t.Fatalf("history before %d: %v %v", s2.Seq, older, err)
	}
	newer, err := svc.History(ctx, "cat", g, actors.HistoryQuery{After: s1.Seq, Limit: 10})
	if err != nil || len(newer.Messages) != 1 || newer.Messages[0].Seq != s2.Seq {
		t.Fatalf("history after %d: %v %v", s1.Seq, newer, err)
	}

	// Read markers: bob reads on his phone; his laptop learns it from the timeline.
	list, _ := svc.Conversations(ctx, "bob")
	if list.Conversations[0].Unread != 0 { // ann's only message was recalled; his own do not count
		t.Fatalf("bob's unread %d", list.Conversations[0].Unread)
	}
	cat, _ := svc.Conversations(ctx, "cat")
	if len(cat.Conversations) != 1 || cat.Conversations[0].Unread != 1 {
		t.Fatalf("cat's list: %v", cat)
	}
	if m, err := svc.MarkRead(ctx, "cat", "tab", g, s2.Seq); err != nil || m != s2.Seq {
		t.Fatalf("read to %d: marker %d, %v", s2.Seq, m, err)
	}
	if _, err := svc.MarkRead(ctx, "cat", "tab", g, 999); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("read marker beyond the end: %v", err)
	}
	// An older read leaves the marker where it is, and says where that is.
	if m, err := svc.MarkRead(ctx, "cat", "tab", g, s1.Seq); err != nil || m != s2.Seq {
		t.Fatalf("read to %d after %d: marker %d, %v", s1.Seq, s2.Seq, m, err)
	}
	cat, _ = svc.Conversations(ctx, "cat")
	if cat.Conversations[0].Unread != 0 || cat.Conversations[0].LastReadSeq != s2.Seq {
		t.Fatalf("after reading: %v", cat.Conversations[0])
	}
	entries := readInbox(t, svc, "cat")
	if _, ok := entries[len(entries)-1].msg.(*eventspb.ReadMarkerMoved); !ok {
		t.Fatalf("the read marker is not in cat's sync timeline: %T", entries[len(entries)-1].msg)
	}

	// Device acks only move forward and never past the timeline.
	bobSeq := readInbox(t, svc, "bob")[len(readInbox(t, svc, "bob"))-1].userSeq
	if st, err := svc.AckDevice(ctx, "bob", "phone", bobSeq); err != nil || st.AckedUserSeq != bobSeq {
		t.Fatalf("ack: %v %v", st, err)
	}
	if st, _ := svc.AckDevice(ctx, "bob", "phone", 1); st.AckedUserSeq != bobSeq {
		t.Fatalf("an older ack moved the device back to %d", st.AckedUserSeq)
	}
	if _, err := svc.AckDevice(ctx, "bob", "phone", bobSeq+5); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("ack beyond the timeline: %v", err)
	}

	// Leaving: cat's list drops the group; she can no longer read it.
	if _, err := svc.RemoveMember(ctx, "cat", g, "cat"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.History(ctx, "cat", g, actors.HistoryQuery{Limit: 10}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("former member reads history: %v", err)
	}
	eventually(t, "cat's list without the group", func() bool {
		l, err := svc.Conversations(ctx, "cat")
		return err == nil && len(l.Conversations) == 0
	})

	// The recall window closes.
	s3, _ := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "bob", ClientMsgID: "b2", Body: []byte("late")})
	now.Add(int64(3 * time.Minute))
	if _, err := svc.Recall(ctx, "bob", g, s3.Seq); !errors.Is(err, actors.ErrExpired) {
		t.Fatalf("recall after the window: %v", err)
	}

	// After the conversation passivates, everything is rebuilt from its stream.
	waitPassivated(t, svc, actors.KindConversation)
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", ClientMsgID: "a1", Body: []byte("hello")})
	if err != nil || !r.Duplicate || r.Seq != s1.Seq {
		t.Fatalf("retry of an old send after passivation: %+v %v", r, err)
	}
	info, err := svc.Conversation(ctx, "bob", g)
	if err != nil || !slices.Equal(info.Members, []string{"ann", "bob"}) || info.LastSeq != s3.Seq {
		t.Fatalf("conversation after passivation: %v %v", info, err)
	}
}

func TestReadFanoutGroup(t *testing.T) {
	lim := actors.DefaultLimits()
	lim.ReadFanoutThreshold = 3
	svc := start(t, actors.Config{Store: newStore(t), Limits: lim})
	ctx := tctx(t)
	g, err := svc.CreateGroup(ctx, "big", "ann", "big", []string{"bob", "cat", "dan"})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 5 {
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	if err := svc.EnsureFanout(ctx, g, last); err != nil {
		t.Fatal(err)
	}
	entries := readInbox(t, svc, "bob")
	if len(entries) != 1 || len(pointers(entries, g)) != 0 {
		t.Fatalf("read-fanout group wrote %d entries to bob's inbox (want only joining)", len(entries))
	}
	list, err := svc.Conversations(ctx, "bob")
	if err != nil || len(list.Conversations) != 1 {
		t.Fatal(list, err)
	}
	c := list.Conversations[0]
	if !c.ReadFanout || c.Unread != 5 || c.LastSeq != last || c.LatestMessageSeq != last {
		t.Fatalf("bob's line for the big group: %v", c)
	}
	if _, err := svc.MarkRead(ctx, "bob", "phone", g, last-2); err != nil {
		t.Fatal(err)
	}
	list, _ = svc.Conversations(ctx, "bob")
	if list.Conversations[0].Unread != 2 {
		t.Fatalf("unread after reading to %d: %d", last-2, list.Conversations[0].Unread)
	}
	h, err := svc.History(ctx, "bob", g, actors.HistoryQuery{After: 0, Limit: 100})
	if err != nil || len(h.Messages) != 5 {
		t.Fatalf("members pull the timeline: %v %v", h, err)
	}
}

// TestAuthorization: a stranger learns nothing beyond "not found", whether
// the conversation exists or not.
func TestAuthorization(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	g, _ := svc.CreateGroup(ctx, "secret", "ann", "secret", []string{"bob"})
	svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", Body: []byte("plans")})
	for _, conv := range []string{g, "no-such-group"} {
		var msgs []string
		_, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "eve", Body: []byte("hi")})
		msgs = append(msgs, check(t, "send", err))
		_, err = svc.History(ctx, "eve", conv, actors.HistoryQuery{Limit: 10})
		msgs = append(msgs, check(t, "history", err))
		_, err = svc.Conversation(ctx, "eve", conv)
		msgs = append(msgs, check(t, "info", err))
		_, err = svc.AddMember(ctx, "eve", conv, "eve")
		msgs = append(msgs, check(t, "join", err))
		_, err = svc.Recall(ctx, "eve", conv, 2)
		msgs = append(msgs, check(t, "recall", err))
		_, err = svc.MarkRead(ctx, "eve", "d", conv, 1)
		msgs = append(msgs, check(t, "mark read", err))
		for _, m := range msgs {
			if m != fmt.Sprintf("NOT_FOUND: conversation %q not found", conv) {
				t.Fatalf("stranger told %q about %s", m, conv)
			}
		}
	}
	// Creating a group under a taken id tells a stranger what any refused
	// id tells: the same error, only the id differs.
	_, taken := svc.CreateGroup(ctx, g, "eve", "mine now", nil)
	_, reserved := svc.CreateGroup(ctx, "dm-eve~zed", "eve", "mine now", nil)
	if !errors.Is(taken, actors.ErrConflict) || !errors.Is(reserved, actors.ErrConflict) ||
		strings.ReplaceAll(taken.Error(), g, "ID") != strings.ReplaceAll(reserved.Error(), "dm-eve~zed", "ID") {
		t.Fatalf("taking over a group id: %v; a reserved id: %v", taken, reserved)
	}
	if _, err := svc.CreateGroup(ctx, g, "ann", "secret", []string{"bob"}); err != nil {
		t.Fatalf("the creator's retry: %v", err)
	}
	if entries := readInbox(t, svc, "eve"); len(entries) != 0 {
		t.Fatalf("eve's inbox has %d entries", len(entries))
	}
	// Bad ids are refused before any grain is touched.
	for _, bad := range []string{"", "a/b", "x y"} {
		if _, err := svc.Send(ctx, actors.SendRequest{Conversation: bad, Sender: "ann", Body: []byte("x")}); !errors.Is(err, actors.ErrInvalid) {
			t.Fatalf("conversation id %q: %v", bad, err)
		}
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", Body: make([]byte, 20000)}); !errors.Is(err, actors.ErrTooLarge) {
		t.Fatalf("oversize body: %v", err)
	}
}

func check(t *testing.T, what string, err error) string {
	t.Helper()
	if !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("%s by a stranger: %v", what, err)
	}
	return err.Error()
}
