package actors

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testLimits() Limits {
	l := DefaultLimits()
	l.MaxGroupSize = 5
	l.MaxBodySize = 32
	l.ReadFanoutThreshold = 3
	l.InlineMaxSize = 8
	l.MaxMentions = 2
	return l
}

// conv builds a conversation state by running commands through decide and
// evolve, failing on any refusal.
func conv(t *testing.T, id string, cmds ...proto.Message) *convState {
	t.Helper()
	s := newConvState(id)
	for _, c := range cmds {
		apply(t, s, c, t0)
	}
	return s
}

func apply(t *testing.T, s *convState, cmd proto.Message, now time.Time) *Written {
	t.Helper()
	evs, w, f := decideConv(s, cmd, now, testLimits())
	if f != nil {
		t.Fatalf("%T refused: %v", cmd, f)
	}
	for i, e := range evs {
		evolveConv(s, s.lastSeq+1, e, testLimits())
		_ = i
	}
	return w
}

func group(t *testing.T) *convState {
	return conv(t, "g1", &CreateConversation{Kind: eventspb.ConversationKind_GROUP, Name: "team", Creator: "ann", Members: []string{"bob", "cat"}})
}

func send(sender, cid, body string) *SendMessage {
	return &SendMessage{Sender: sender, Device: "phone", ClientMsgId: cid, Body: []byte(body)}
}

func TestDecideConversation(t *testing.T) {
	direct := func(t *testing.T) *convState {
		return conv(t, DirectID("ann", "bob"), &CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "ann", Members: []string{"bob"}})
	}
	withMsg := func(t *testing.T) *convState {
		s := group(t)
		apply(t, s, send("bob", "c1", "hello"), t0) // seq 2
		return s
	}
	edited := func(t *testing.T) *convState {
		s := withMsg(t)
		apply(t, s, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!")}, t0) // seq 3
		return s
	}
	editedThenSent := func(t *testing.T) *convState {
		s := edited(t)
		apply(t, s, send("ann", "c9", "later"), t0) // seq 4
		return s
	}
	recalledThenSent := func(t *testing.T) *convState {
		s := withMsg(t)
		apply(t, s, &RecallMessage{Actor: "bob", Seq: 2}, t0) // seq 3
		apply(t, s, send("ann", "c9", "later"), t0)           // seq 4
		return s
	}
	cases := []struct {
		name   string
		state  func(*testing.T) *convState
		cmd    proto.Message
		at     time.Duration // after t0
		code   Code          // CODE_UNSPECIFIED: accepted
		events int
		seq    uint64
		dup    bool
	}{
		{"create group", func(*testing.T) *convState { return newConvState("g1") },
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "ann", Members: []string{"bob"}}, 0, 0, 1, 1, false},
		{"retried create group", group,
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "ann", Members: []string{"bob"}}, 0, 0, 0, 1, true},
		{"someone else's group id", group,
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "eve"}, 0, Code_CONFLICT, 0, 0, false},
		{"group too large", func(*testing.T) *convState { return newConvState("g2") },
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "a", Members: []string{"b", "c", "d", "e", "f"}}, 0, Code_TOO_LARGE, 0, 0, false},
		{"group name too long", func(*testing.T) *convState { return newConvState("g2") },
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "a", Name: strings.Repeat("n", 300)}, 0, Code_INVALID, 0, 0, false},
		{"bad member id", func(*testing.T) *convState { return newConvState("g2") },
			&CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "a", Members: []string{"b/c"}}, 0, Code_INVALID, 0, 0, false},
		{"direct needs two", func(*testing.T) *convState { return newConvState(DirectID("ann", "ann")) },
			&CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "ann", Members: []string{"ann"}}, 0, Code_INVALID, 0, 0, false},
		{"direct under a wrong id", func(*testing.T) *convState { return newConvState("x") },
			&CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "ann", Members: []string{"bob"}}, 0, Code_INVALID, 0, 0, false},
		{"direct opened by the other side", direct,
			&CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "bob", Members: []string{"ann"}}, 0, 0, 0, 1, true},
		{"direct cannot grow", direct, &ChangeMember{Actor: "ann", User: "cat", Add: true}, 0, Code_INVALID, 0, 0, false},
		{"member sends", group, send("bob", "c1", "hi"), 0, 0, 1, 2, false},
		{"non-member sends", group, send("eve", "c1", "hi"), 0, Code_NOT_FOUND, 0, 0, false},
		{"send to unknown conversation", func(*testing.T) *convState { return newConvState("nope") }, send("ann", "c1", "hi"), 0, Code_NOT_FOUND, 0, 0, false},
		{"duplicate client id", withMsg, send("bob", "c1", "hello again"), 0, 0, 0, 2, true},
		{"same client id, other sender", withMsg, send("ann", "c1", "mine"), 0, 0, 1, 3, false},
		{"body too large", group, send("bob", "c2", strings.Repeat("x", 33)), 0, Code_TOO_LARGE, 0, 0, false},
		{"empty body", group, send("bob", "c2", ""), 0, Code_INVALID, 0, 0, false},
		{"reply to a message", withMsg, &SendMessage{Sender: "ann", Body: []byte("re"), ReplyTo: 2}, 0, 0, 1, 3, false},
		{"reply to a non-message", withMsg, &SendMessage{Sender: "ann", Body: []byte("re"), ReplyTo: 1}, 0, Code_INVALID, 0, 0, false},
		{"mention a stranger", group, &SendMessage{Sender: "ann", Body: []byte("@eve"), Mentions: []string{"eve"}}, 0, Code_INVALID, 0, 0, false},
		{"mention twice", group, &SendMessage{Sender: "ann", Body: []byte("@bob"), Mentions: []string{"bob", "bob"}}, 0, Code_INVALID, 0, 0, false},
		{"too many mentions", group, &SendMessage{Sender: "ann", Body: []byte("@all"), Mentions: []string{"ann", "bob", "cat"}}, 0, Code_TOO_LARGE, 0, 0, false},
		{"mentions within the limit", group, &SendMessage{Sender: "ann", Body: []byte("@bob"), Mentions: []string{"bob", "cat"}}, 0, 0, 1, 2, false},
		{"sender recalls", withMsg, &RecallMessage{Actor: "bob", Seq: 2}, time.Minute, 0, 1, 3, false},
		{"admin recalls", withMsg, &RecallMessage{Actor: "ann", Seq: 2}, time.Minute, 0, 1, 3, false},
		{"other member recalls", withMsg, &RecallMessage{Actor: "cat", Seq: 2}, time.Minute, Code_FORBIDDEN, 0, 0, false},
		{"stranger recalls", withMsg, &RecallMessage{Actor: "eve", Seq: 2}, time.Minute, Code_NOT_FOUND, 0, 0, false},
		{"recall too late", withMsg, &RecallMessage{Actor: "bob", Seq: 2}, 3 * time.Minute, Code_EXPIRED, 0, 0, false},
		{"recall a non-message", withMsg, &RecallMessage{Actor: "bob", Seq: 1}, 0, Code_INVALID, 0, 0, false},
		{"sender edits", withMsg, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!")}, 10 * time.Minute, 0, 1, 3, false},
		{"retried edit", edited, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!")}, time.Minute, 0, 0, 3, true},
		{"retried edit answers the edit's seq", editedThenSent, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!")}, time.Minute, 0, 0, 3, true},
		{"retried edit after the window", editedThenSent, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!")}, time.Hour, 0, 0, 3, true},
		{"stranger repeats an edit", editedThenSent, &EditMessage{Actor: "eve", Seq: 2, Body: []byte("hello!")}, time.Minute, Code_NOT_FOUND, 0, 0, false},
		{"other member repeats an edit", editedThenSent, &EditMessage{Actor: "cat", Seq: 2, Body: []byte("hello!")}, time.Minute, Code_FORBIDDEN, 0, 0, false},
		{"edit too large", withMsg, &EditMessage{Actor: "bob", Seq: 2, Body: []byte(strings.Repeat("x", 33))}, time.Minute, Code_TOO_LARGE, 0, 0, false},
		{"empty edit", withMsg, &EditMessage{Actor: "bob", Seq: 2}, time.Minute, Code_INVALID, 0, 0, false},
		{"retried recall answers the recall's seq", recalledThenSent, &RecallMessage{Actor: "bob", Seq: 2}, time.Minute, 0, 0, 3, true},
		{"retried recall after the window", recalledThenSent, &RecallMessage{Actor: "bob", Seq: 2}, time.Hour, 0, 0, 3, true},
		{"stranger repeats a recall", recalledThenSent, &RecallMessage{Actor: "eve", Seq: 2}, time.Minute, Code_NOT_FOUND, 0, 0, false},
		{"edit of an edit", edited, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("hello!!")}, time.Minute, 0, 1, 4, false},
		{"edit too late", withMsg, &EditMessage{Actor: "bob", Seq: 2, Body: []byte("x")}, 16 * time.Minute, Code_EXPIRED, 0, 0, false},
		{"other member edits", withMsg, &EditMessage{Actor: "cat", Seq: 2, Body: []byte("x")}, 0, Code_FORBIDDEN, 0, 0, false},
		{"admin adds", group, &ChangeMember{Actor: "ann", User: "dan", Add: true}, 0, 0, 1, 2, false},
		{"member adds", group, &ChangeMember{Actor: "bob", User: "dan", Add: true}, 0, Code_FORBIDDEN, 0, 0, false},
		{"member leaves", group, &ChangeMember{Actor: "bob", User: "bob"}, 0, 0, 1, 2, false},
		{"member removes another", group, &ChangeMember{Actor: "bob", User: "cat"}, 0, Code_FORBIDDEN, 0, 0, false},
		{"add an existing member", group, &ChangeMember{Actor: "ann", User: "bob", Add: true}, 0, 0, 0, 1, true},
		{"remove a non-member", group, &ChangeMember{Actor: "ann", User: "zed"}, 0, 0, 0, 1, true},
		{"stranger adds", group, &ChangeMember{Actor: "eve", User: "eve", Add: true}, 0, Code_NOT_FOUND, 0, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.state(t)
			before := s.lastSeq
			evs, w, f := decideConv(s, tc.cmd, t0.Add(tc.at), testLimits())
			if tc.code != Code_CODE_UNSPECIFIED {
				if f == nil || f.Code != tc.code {
					t.Fatalf("got %v, want %s", f, tc.code)
				}
				if len(evs) != 0 || s.lastSeq != before {
					t.Fatal("a refusal produced events")
				}
				return
			}
			if f != nil {
				t.Fatalf("refused: %v", f)
			}
			if len(evs) != tc.events || w.Seq != tc.seq || w.Duplicate != tc.dup {
				t.Fatalf("got %d events, %+v; want %d events, seq %d, duplicate %v", len(evs), w, tc.events, tc.seq, tc.dup)
			}
		})
	}
}

func TestEvolveConversation(t *testing.T) {
	s := group(t)
	apply(t, s, send("bob", "1", "a"), t0)                // 2
	apply(t, s, send("cat", "2", "b"), t0)                // 3
	apply(t, s, send("ann", "3", "c"), t0)                // 4
	apply(t, s, &RecallMessage{Actor: "cat", Seq: 3}, t0) // 5
	if s.lastSeq != 5 || s.latestSeq != 4 {
		t.Fatalf("lastSeq %d latestSeq %d", s.lastSeq, s.latestSeq)
	}
	// ann sent the latest message: nothing is unread for her.
	if n := s.unreadAfter("ann", 1); n != 0 {
		t.Fatalf("ann's unread %d, want 0", n)
	}
	// bob: ann's 4 counts, cat's 3 was recalled, his own 2 ends the count.
	if n := s.unreadAfter("bob", 0); n != 1 {
		t.Fatalf("bob's unread %d, want 1", n)
	}
	// dan joins after everything: nothing unread for him.
	apply(t, s, &ChangeMember{Actor: "ann", User: "dan", Add: true}, t0)
	if n := s.unreadAfter("dan", 0); n != 0 {
		t.Fatalf("new member's unread %d, want 0", n)
	}
	if !s.readFanout(testLimits()) {
		t.Fatal("4 members over a threshold of 3: read-fanout expected")
	}
	// Recalled twice is a duplicate, not a second event.
	evs, w, f := decideConv(s, &RecallMessage{Actor: "cat", Seq: 3}, t0, testLimits())
	if f != nil || len(evs) != 0 || !w.Duplicate {
		t.Fatalf("second recall: %v %v %+v", f, evs, w)
	}
}

// TestWindowBookkeepingBounded: the recall/edit bookkeeping keeps only the
// messages of the longest window, however long the conversation.
func TestWindowBookkeepingBounded(t *testing.T) {
	s := group(t)
	for i := range 200 {
		apply(t, s, send("bob", fmt.Sprint(i), "x"), t0.Add(time.Duration(i)*time.Minute))
	}
	if len(s.recent) > 16 || len(s.order) != len(s.recent) {
		t.Fatalf("%d messages in the 15-minute window's bookkeeping (order %d)", len(s.recent), len(s.order))
	}
	last := s.lastSeq
	if _, _, f := decideConv(s, &EditMessage{Actor: "bob", Seq: last, Body: []byte("y")}, t0.Add(200*time.Minute), testLimits()); f != nil {
		t.Fatalf("editing the latest message: %v", f)
	}
	if _, _, f := decideConv(s, &EditMessage{Actor: "bob", Seq: last - 100, Body: []byte("y")}, t0.Add(200*time.Minute), testLimits()); f == nil || f.Code != Code_EXPIRED {
		t.Fatalf("editing a message of long ago: %v", f)
	}
}

func TestRecipients(t *testing.T) {
	lim := testLimits()
	s := group(t)
	msg := &eventspb.MessageSent{Sender: "bob", Body: []byte("short")}
	evolveConv(s, 2, msg, lim)
	got := recipients(s, 2, msg, lim)
	if len(got) != 3 {
		t.Fatalf("%d recipients, want the 3 members", len(got))
	}
	var p eventspb.MessagePointer
	if err := proto.Unmarshal(got["cat"].Data, &p); err != nil || p.Seq != 2 || p.Message == nil || p.Sender != "bob" {
		t.Fatalf("pointer %+v %v", &p, err)
	}
	long := &eventspb.MessageSent{Sender: "bob", Body: []byte("longer than eight")}
	evolveConv(s, 3, long, lim)
	proto.Unmarshal(recipients(s, 3, long, lim)["cat"].Data, &p)
	if p.Message != nil {
		t.Fatal("a body above InlineMaxSize was inlined")
	}
	left := &eventspb.MemberRemoved{User: "cat", By: "cat"}
	evolveConv(s, 4, left, lim)
	if got := recipients(s, 4, left, lim); len(got) != 3 || got["cat"] == nil {
		t.Fatalf("removal goes to the remaining members and the one removed: %v", got)
	}
	for _, u := range []string{"dan", "eve"} {
		add := &eventspb.MemberAdded{User: u, By: "ann"}
		evolveConv(s, s.lastSeq+1, add, lim)
		if u == "eve" {
			// The change that makes the group large goes to everyone:
			// every member learns that it is read-fanout now.
			got := recipients(s, s.lastSeq, add, lim)
			var m eventspb.MembershipChanged
			if len(got) != 4 || proto.Unmarshal(got["bob"].Data, &m) != nil || !m.ReadFanout {
				t.Fatalf("the addition that makes the group large goes to %d inboxes (bob told %v), want all 4", len(got), &m)
			}
		}
	}
	big := &eventspb.MessageSent{Sender: "bob", Body: []byte("x")}
	evolveConv(s, s.lastSeq+1, big, lim)
	if got := recipients(s, s.lastSeq, big, lim); len(got) != 0 {
		t.Fatalf("read-fanout group fanned a message out to %d inboxes", len(got))
	}
	// In a read-fanout group a membership change goes to the member it
	// concerns only: telling everyone would cost members² entries.
	joins := &eventspb.MemberAdded{User: "fay", By: "ann"}
	evolveConv(s, s.lastSeq+1, joins, lim)
	if got := recipients(s, s.lastSeq, joins, lim); len(got) != 1 || got["fay"] == nil {
		t.Fatalf("an addition to a read-fanout group goes to %d inboxes, want the new member's only", len(got))
	}
	leaves := &eventspb.MemberRemoved{User: "dan", By: "dan"}
	evolveConv(s, s.lastSeq+1, leaves, lim)
	if got := recipients(s, s.lastSeq, leaves, lim); len(got) != 1 || got["dan"] == nil {
		t.Fatalf("a removal from a read-fanout group goes to %d inboxes, want the removed member's only", len(got))
	}
}

func TestUserCore(t *testing.T) {
	s := newUserState("ann")
	entry := func(m proto.Message) { evolveUser(s, s.userSeq+1, m) }
	entry(&eventspb.MembershipChanged{ConversationId: "g1", Seq: 1, User: "ann", Added: true, Kind: eventspb.ConversationKind_GROUP, Name: "team"})
	entry(&eventspb.MessagePointer{ConversationId: "g1", Seq: 2, Sender: "bob"})
	entry(&eventspb.MessagePointer{ConversationId: "g1", Seq: 3, Sender: "cat"})
	entry(&eventspb.MessagePointer{ConversationId: "g1", Seq: 4, Sender: "bob"})
	c := s.convs["g1"]
	if len(c.unread) != 3 || c.lastConvSeq != 4 {
		t.Fatalf("unread %v last %d", c.unread, c.lastConvSeq)
	}
	entry(&eventspb.RecallNotice{ConversationId: "g1", Seq: 5, RecalledSeq: 3})
	if len(c.unread) != 2 {
		t.Fatalf("recall did not clear the unread message: %v", c.unread)
	}
	entry(&eventspb.ReadMarkerMoved{ConversationId: "g1", ReadSeq: 2})
	if len(c.unread) != 1 || c.lastRead != 2 {
		t.Fatalf("after reading to 2: unread %v lastRead %d", c.unread, c.lastRead)
	}
	entry(&eventspb.MessagePointer{ConversationId: "g1", Seq: 6, Sender: "ann"})
	if len(c.unread) != 0 || c.lastRead != 6 {
		t.Fatalf("own message reads up to it: unread %v lastRead %d", c.unread, c.lastRead)
	}

	// Deliver keeps only what is new.
	d := &Deliver{ConversationId: "g1", Items: []*InboxItem{{ConvSeq: 5}, {ConvSeq: 6}, {ConvSeq: 7}, {ConvSeq: 8}}}
	if got := decideDeliver(s, d); len(got) != 2 || got[0].ConvSeq != 7 {
		t.Fatalf("deliver kept %v", got)
	}

	// Read markers move forward only, and only in one's own conversations.
	cases := []struct {
		m      *MarkRead
		moves  bool
		failed bool
	}{
		{&MarkRead{ConversationId: "g1", Seq: 5}, false, false},
		{&MarkRead{ConversationId: "g1", Seq: 6}, false, false},
		{&MarkRead{ConversationId: "g1", Seq: 7}, true, false},
		{&MarkRead{ConversationId: "g9", Seq: 1}, false, true},
	}
	for _, tc := range cases {
		ev, _, f := decideMarkRead(s, tc.m)
		if (f != nil) != tc.failed || (ev != nil) != tc.moves {
			t.Errorf("%v: event %v failure %v", tc.m, ev, f)
		}
	}
	entry(&eventspb.MembershipChanged{ConversationId: "g1", Seq: 9, User: "ann", Added: false})
	if _, _, f := decideMarkRead(s, &MarkRead{ConversationId: "g1", Seq: 9}); f == nil || f.Code != Code_NOT_FOUND {
		t.Fatalf("former member marks read: %v", f)
	}
}

func TestDeviceCore(t *testing.T) {
	s := &deviceState{}
	for _, tc := range []struct {
		ack, userSeq uint64
		moves, fails bool
	}{
		{3, 5, true, false},
		{2, 5, false, false},
		{6, 5, false, true},
	} {
		ev, f := decideAck(s, &AckDevice{UserSeq: tc.ack}, tc.userSeq)
		if (ev != nil) != tc.moves || (f != nil) != tc.fails {
			t.Fatalf("ack %d of %d: %v %v", tc.ack, tc.userSeq, ev, f)
		}
		if ev != nil {
			evolveDevice(s, ev)
		}
	}
	if s.acked != 3 {
		t.Fatalf("acked %d", s.acked)
	}
}

func TestFailureIs(t *testing.T) {
	var err error = fail(Code_NOT_FOUND, "conversation x")
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrForbidden) {
		t.Fatal("errors.Is does not compare codes")
	}
	if ValidateID("user", "a/b") == nil || ValidateID("user", "") == nil || ValidateID("user", "ann.b_c-d@x") != nil {
		t.Fatal("ValidateID")
	}
	if DirectID("bob", "ann") != DirectID("ann", "bob") {
		t.Fatal("DirectID depends on the order")
	}
}

// "." and ".." are refused as ids: as parts of URL paths (/v1/users/../...)
// they are cleaned away, so such a user could never be addressed.
func TestValidateIDRefusesDotNames(t *testing.T) {
	for _, id := range []string{".", ".."} {
		for _, what := range []string{"user", "device", "conversation"} {
			if err := ValidateID(what, id); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), what+" id") {
				t.Errorf("ValidateID(%q, %q) = %v, want an invalid %s id", what, id, err, what)
			}
		}
		if err := validateConvID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("conversation %q: %v", id, err)
		}
		if err := validateConvID(DirectID(id, "ann")); !errors.Is(err, ErrInvalid) {
			t.Errorf("direct conversation with %q: %v", id, err)
		}
	}
	for _, id := range []string{"...", ".a", "a..b", "a."} {
		if err := ValidateID("user", id); err != nil {
			t.Errorf("ValidateID(user, %q) = %v, want valid", id, err)
		}
	}
}
