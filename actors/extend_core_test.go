package actors

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// TestKindRulesInCores: a kind that neither counts as unread nor bumps is
// decided with its flags, skipped by both cores' unread counts and latest
// message, kept across a conversation snapshot; its Validate refuses, and a
// panicking Validate refuses without harm.
func TestKindRulesInCores(t *testing.T) {
	ext, err := Extensions{Kinds: []MessageKind{
		{Name: "reaction", NotUnread: true, NoBump: true, NoPush: true, Validate: func(d Draft) error {
			if d.ReplyTo() == 0 {
				return errors.New("needs a reply-to")
			}
			return nil
		}},
		{Name: "broken", Validate: func(Draft) error { panic("bug") }},
	}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	lim := testLimits()
	lim.ext = ext
	s := group(t)
	do := func(cmd proto.Message, at time.Time) (*eventspb.MessageSent, *Failure) {
		evs, _, f := decideConv(s, cmd, at, lim)
		if f != nil {
			return nil, f
		}
		for _, e := range evs {
			evolveConv(s, s.lastSeq+1, e, lim)
		}
		return evs[0].(*eventspb.MessageSent), nil
	}
	text, _ := do(send("ann", "1", "hi"), t0) // seq 2
	r := send("bob", "2", "+1")
	r.Kind = "reaction"
	if _, f := do(r, t0); f == nil || f.Code != Code_INVALID {
		t.Fatalf("reaction without reply-to: %v", f)
	}
	r.ReplyTo = 2
	ev, f := do(r, t0.Add(time.Minute)) // seq 3
	if f != nil || !ev.NotUnread || !ev.NoBump || !ev.NoPush {
		t.Fatalf("reaction: %v %v", ev, f)
	}
	b := send("ann", "3", "x")
	b.Kind = "broken"
	if _, f := do(b, t0); f == nil || f.Code != Code_INVALID {
		t.Fatalf("panicking validation: %v", f)
	}
	b.Kind, b.Metadata = "", map[string]string{"": "v"}
	if _, f := do(b, t0); f == nil || f.Code != Code_INVALID {
		t.Fatalf("empty metadata key: %v", f)
	}

	check := func(s *convState) {
		t.Helper()
		if s.latestSeq != 2 || s.lastActivity != text.AtUnixMs {
			t.Fatalf("latest %d activity %d: bumped by the reaction", s.latestSeq, s.lastActivity)
		}
		if n := s.unreadAfter("cat", 0); n != 1 {
			t.Fatalf("cat's unread %d, want 1", n)
		}
		if n := s.unreadAfter("ann", 0); n != 0 {
			t.Fatalf("ann's unread %d, want 0 (her message, bob's reaction)", n)
		}
	}
	check(s)
	restored, err := convStateFromSnapshot(s.id, s.lastSeq, s.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	check(restored)

	// The user core: the pointer carries the rules.
	u := newUserState("cat")
	evolveUser(u, 1, &eventspb.MembershipChanged{ConversationId: "g1", Seq: 1, User: "cat", Added: true})
	evolveUser(u, 2, &eventspb.MessagePointer{ConversationId: "g1", Seq: 2, Sender: "ann", Message: text})
	evolveUser(u, 3, &eventspb.MessagePointer{ConversationId: "g1", Seq: 3, Sender: "bob", Message: ev, NotUnread: true, NoBump: true})
	line := u.convs["g1"].summary()
	if line.Unread != 1 || line.LatestMessageSeq != 2 || line.LastSeq != 3 {
		t.Fatalf("cat's line: %v", line)
	}
	if pushes([]proto.Message{&eventspb.MessagePointer{NoPush: true}}) || !pushes([]proto.Message{&eventspb.MessagePointer{NoPush: true}, &eventspb.ReadMarkerMoved{}}) {
		t.Fatal("pushes")
	}
}
