package actors

import (
	"testing"

	"github.com/imsync/imsync/events/eventspb"
)

// TestMarkReadRule: the marker a read answers with is the one that results
// (an older read leaves a further marker in place), and no marker passes
// the conversation's last seq.
func TestMarkReadRule(t *testing.T) {
	s := newUserState("ann")
	evolveUser(s, 1, &eventspb.MembershipChanged{ConversationId: "g1", Seq: 1, User: "ann", Added: true})
	evolveUser(s, 2, &eventspb.ReadMarkerMoved{ConversationId: "g1", ReadSeq: 30})
	cases := []struct {
		name    string
		seq     uint64
		convID  string
		last    uint64 // the conversation's last seq, as its grain tells
		code    Code   // CODE_UNSPECIFIED: accepted
		moves   bool
		result  uint64
		checked bool // the target check alone refuses it
	}{
		{"older than the marker", 10, "g1", 40, 0, false, 30, false},
		{"the marker itself", 30, "g1", 40, 0, false, 30, false},
		{"forward", 35, "g1", 40, 0, true, 35, false},
		{"up to the last seq", 40, "g1", 40, 0, true, 40, false},
		{"past the last seq", 41, "g1", 40, Code_INVALID, false, 0, true},
		{"not a member", 1, "g9", 5, Code_NOT_FOUND, false, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := decideReadTarget(&eventspb.ConversationInfo{ConversationId: tc.convID, LastSeq: tc.last}, tc.seq)
			if (f != nil) != tc.checked {
				t.Fatalf("target check: %v", f)
			}
			if f != nil {
				if f.Code != tc.code {
					t.Fatalf("code %v, want %v", f.Code, tc.code)
				}
				return
			}
			ev, marker, f := decideMarkRead(s, &MarkRead{ConversationId: tc.convID, Seq: tc.seq})
			if f.GetCode() != tc.code {
				t.Fatalf("failure %v, want %v", f, tc.code)
			}
			if (ev != nil) != tc.moves || marker != tc.result {
				t.Fatalf("event %v, marker %d; want moves=%v marker %d", ev, marker, tc.moves, tc.result)
			}
		})
	}
}

// TestCreateTakenID: whoever is not the creator of an existing group gets
// the same answer as for an id reserved for direct conversations, whether
// or not they are a member; the creator's retry stays idempotent.
func TestCreateTakenID(t *testing.T) {
	lim := testLimits()
	taken := group(t) // g1, created by ann with bob and cat
	direct := conv(t, DirectID("ann", "bob"), &CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: "ann", Members: []string{"bob"}})
	create := func(creator string) *CreateConversation {
		return &CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: creator, Name: "x"}
	}
	for _, tc := range []struct {
		name  string
		state *convState
		cmd   *CreateConversation
	}{
		{"a stranger", taken, create("eve")},
		{"a member", taken, create("bob")},
		{"a group over a direct conversation", direct, create("ann")},
	} {
		_, _, f := decideConv(tc.state, tc.cmd, t0, lim)
		if f.GetCode() != Code_CONFLICT || f.GetMessage() != idNotAvailable(tc.state.id).GetMessage() {
			t.Errorf("%s: %v, want %v", tc.name, f, idNotAvailable(tc.state.id))
		}
	}
	evs, w, f := decideConv(taken, create("ann"), t0, lim)
	if f != nil || len(evs) != 0 || !w.Duplicate || w.Seq != taken.lastSeq {
		t.Fatalf("the creator's retry: %v %v %+v", f, evs, w)
	}
}
