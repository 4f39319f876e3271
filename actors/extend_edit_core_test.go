package actors

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// TestKindValidatesEdits: an edit keeps its message's kind, and the kind's
// Validate holds for the new body — seeing the kind, the message replied
// to and the seq edited — also in a conversation rebuilt from a snapshot.
// Ordinary messages are not validated by a kind.
func TestKindValidatesEdits(t *testing.T) {
	var seen []Draft
	ext, err := Extensions{Kinds: []MessageKind{{Name: "reaction", NotUnread: true, Validate: func(d Draft) error {
		seen = append(seen, d)
		if d.ReplyTo() == 0 {
			return errors.New("needs a reply-to")
		}
		if len(d.Body) > 8 {
			return errors.New("a reaction is at most 8 bytes")
		}
		return nil
	}}}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	lim := testLimits()
	lim.ext = ext
	s := group(t)
	do := func(s *convState, cmd proto.Message) *Failure {
		evs, _, f := decideConv(s, cmd, t0.Add(time.Minute), lim)
		for _, e := range evs {
			evolveConv(s, s.lastSeq+1, e, lim)
		}
		return f
	}
	if f := do(s, send("ann", "1", "hi")); f != nil { // seq 2
		t.Fatal(f)
	}
	r := send("bob", "2", "+1")
	r.Kind, r.ReplyTo = "reaction", 2
	if f := do(s, r); f != nil { // seq 3
		t.Fatal(f)
	}
	restored, err := convStateFromSnapshot(s.id, s.lastSeq, roundTrip(t, s.snapshot(), &ConvSnapshot{}))
	if err != nil {
		t.Fatal(err)
	}
	sameConv(t, s, restored)
	for name, st := range map[string]*convState{"live": s, "from a snapshot": restored} {
		seen = nil
		if f := do(st, &EditMessage{Actor: "bob", Seq: 3, Body: []byte("a long reaction")}); f == nil || f.Code != Code_INVALID {
			t.Fatalf("%s: a reaction edited beyond its kind's limit: %v, want INVALID", name, f)
		}
		if f := do(st, &EditMessage{Actor: "bob", Seq: 3, Body: []byte("<3")}); f != nil {
			t.Fatalf("%s: a valid edit of a reaction: %v", name, f)
		}
		if len(seen) != 2 || seen[1].Kind != "reaction" || seen[1].ReplyTo() != 2 || seen[1].Edits() != 3 || seen[1].Sender() != "bob" || string(seen[1].Body) != "<3" {
			t.Fatalf("%s: Validate saw %+v", name, seen)
		}
		seen = nil
		if f := do(st, &EditMessage{Actor: "ann", Seq: 2, Body: []byte("a text may be long")}); f != nil || len(seen) != 0 {
			t.Fatalf("%s: editing a text: %v, validated %d times", name, f, len(seen))
		}
	}
}
