package actors

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// toUser is ann's send to bob that may open their direct conversation.
func toUser(cid, body string) *SendMessage {
	m := send("ann", cid, body)
	m.ToUser = "bob"
	return m
}

// TestDecideSendToUser: the first message to a user decides the direct
// conversation's creation and the message together. Whatever the rules
// refuse (in the message or in the creation) yields no event at all and
// leaves the state as it was; an accepted one yields the creation and the
// message, and a retry with the same client id gets the message's seq.
func TestDecideSendToUser(t *testing.T) {
	dm := DirectID("ann", "bob")
	ext, err := Extensions{Kinds: []MessageKind{{Name: "poll", Validate: func(d Draft) error {
		if !strings.HasPrefix(string(d.Body), "?") {
			return errors.New("a poll asks a question")
		}
		return nil
	}}}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	lim := testLimits()
	lim.ext = ext
	fresh := func(*testing.T) *convState { return newConvState(dm) }
	opened := func(t *testing.T) *convState {
		return conv(t, dm, &CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "bob", Members: []string{"ann"}})
	}
	with := func(m *SendMessage, change func(*SendMessage)) *SendMessage {
		change(m)
		return m
	}
	cases := []struct {
		name  string
		state func(*testing.T) *convState
		cmd   *SendMessage
		code  Code     // CODE_UNSPECIFIED: accepted
		types []string // the events' types, when accepted
		seq   uint64
		dup   bool
	}{
		{"first message", fresh, toUser("c1", "hi"), 0, []string{"ConversationCreated", "MessageSent"}, 2, false},
		{"to an open conversation", opened, toUser("c1", "hi"), 0, []string{"MessageSent"}, 2, false},
		{"first message of a custom kind", fresh, with(toUser("c1", "?lunch"), func(m *SendMessage) { m.Kind = "poll" }), 0, []string{"ConversationCreated", "MessageSent"}, 2, false},
		{"mention of the other user", fresh, with(toUser("c1", "@bob"), func(m *SendMessage) { m.Mentions = []string{"bob"} }), 0, []string{"ConversationCreated", "MessageSent"}, 2, false},

		{"body too large", fresh, toUser("c1", strings.Repeat("x", 33)), Code_TOO_LARGE, nil, 0, false},
		{"empty body", fresh, toUser("c1", ""), Code_INVALID, nil, 0, false},
		{"kind too long", fresh, with(toUser("c1", "hi"), func(m *SendMessage) { m.Kind = strings.Repeat("k", 200) }), Code_INVALID, nil, 0, false},
		{"reply to nothing", fresh, with(toUser("c1", "hi"), func(m *SendMessage) { m.ReplyTo = 42 }), Code_INVALID, nil, 0, false},
		{"mention of a stranger", fresh, with(toUser("c1", "@eve"), func(m *SendMessage) { m.Mentions = []string{"eve"} }), Code_INVALID, nil, 0, false},
		{"too much metadata", fresh, with(toUser("c1", "hi"), func(m *SendMessage) { m.Metadata = map[string]string{"k": strings.Repeat("v", MaxMetadataSize)} }), Code_TOO_LARGE, nil, 0, false},
		{"kind's rules refuse", fresh, with(toUser("c1", "lunch"), func(m *SendMessage) { m.Kind = "poll" }), Code_INVALID, nil, 0, false},
		{"to oneself", func(*testing.T) *convState { return newConvState(DirectID("ann", "ann")) }, with(toUser("c1", "hi"), func(m *SendMessage) { m.ToUser = "ann" }), Code_INVALID, nil, 0, false},
		{"bad user id", fresh, with(toUser("c1", "hi"), func(m *SendMessage) { m.ToUser = "b/b" }), Code_INVALID, nil, 0, false},
		{"under another conversation's id", func(*testing.T) *convState { return newConvState(DirectID("ann", "cat")) }, toUser("c1", "hi"), Code_INVALID, nil, 0, false},
		{"refused in an open conversation", opened, toUser("c1", strings.Repeat("x", 33)), Code_TOO_LARGE, nil, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.state(t)
			before := proto.Clone(s.snapshot())
			beforeSeq := s.lastSeq
			evs, w, f := decideConv(s, tc.cmd, t0, lim)
			if !proto.Equal(before, s.snapshot()) || s.lastSeq != beforeSeq {
				t.Fatal("decide changed the state")
			}
			if tc.code != Code_CODE_UNSPECIFIED {
				if f == nil || f.Code != tc.code {
					t.Fatalf("got %v, want %s", f, tc.code)
				}
				if len(evs) != 0 || w != nil {
					t.Fatalf("a refusal produced events %v, reply %v", evs, w)
				}
				return
			}
			if f != nil {
				t.Fatalf("refused: %v", f)
			}
			var types []string
			for _, e := range evs {
				types = append(types, string(e.ProtoReflect().Descriptor().Name()))
			}
			if strings.Join(types, ",") != strings.Join(tc.types, ",") || w.Seq != tc.seq || w.Duplicate != tc.dup || w.ConversationId != dm {
				t.Fatalf("got %v, %+v; want %v, seq %d, duplicate %v", types, w, tc.types, tc.seq, tc.dup)
			}
			// Evolved, the events make the conversation of both with the
			// message at the answered seq; the retry is a duplicate.
			for _, e := range evs {
				evolveConv(s, s.lastSeq+1, e, lim)
			}
			if !s.isMember("ann") || !s.isMember("bob") || s.kind != eventspb.ConversationKind_DIRECT || s.latestSeq != w.Seq {
				t.Fatalf("after the events: members %v, kind %v, latest %d", s.members, s.kind, s.latestSeq)
			}
			again, w2, f := decideConv(s, tc.cmd, t0, lim)
			if f != nil || len(again) != 0 || !w2.Duplicate || w2.Seq != w.Seq {
				t.Fatalf("retry: %v, %+v, %v", again, w2, f)
			}
		})
	}
}

// TestDecideSendToUserAfterRefusal: a refused first message leaves the
// conversation free to be created by the next one, which creates it once.
func TestDecideSendToUserAfterRefusal(t *testing.T) {
	s := newConvState(DirectID("ann", "bob"))
	if evs, _, f := decideConv(s, toUser("c1", strings.Repeat("x", 33)), t0, testLimits()); f == nil || len(evs) != 0 {
		t.Fatalf("oversized first message: %v, %v", evs, f)
	}
	w := apply(t, s, toUser("c1", "hi"), t0)
	if w.Seq != 2 || s.lastSeq != 2 {
		t.Fatalf("first accepted message: %+v, lastSeq %d", w, s.lastSeq)
	}
	if w := apply(t, s, toUser("c2", "again"), t0); w.Seq != 3 || s.lastSeq != 3 {
		t.Fatalf("second message: %+v, lastSeq %d", w, s.lastSeq)
	}
}
