package actors_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

// TestSendToUserThroughChecks: a first message to a user that a check
// rejects writes nothing (no conv stream, nothing in either inbox); the
// next one, accepted, creates the conversation with its message, once;
// a system message from the app backend keeps its flag through the checks.
func TestSendToUserThroughChecks(t *testing.T) {
	store := newStore(t)
	svc := start(t, actors.Config{Store: store, Extensions: actors.Extensions{Checks: []actors.Check{{
		Name: "words",
		Func: func(_ context.Context, d *actors.Draft) error {
			if bytes.Contains(d.Body, []byte("spam")) {
				return actors.Reject("profanity", "%q is not allowed", "spam")
			}
			d.Body = bytes.ToUpper(d.Body)
			return nil
		},
	}}}})
	ctx := tctx(t)
	dm := actors.DirectID("ann", "bob")
	_, err := svc.Send(ctx, actors.SendRequest{ToUser: "bob", Sender: "ann", ClientMsgID: "m1", Body: []byte("buy spam")})
	if !errors.Is(err, &actors.Failure{Code: actors.Code_REJECTED}) {
		t.Fatalf("rejected first message: %v", err)
	}
	if _, err := store.ReadStream(ctx, events.ConversationStream(dm), events.ReadStreamOptions{Limit: 10}); !errors.Is(err, events.ErrStreamNotFound) {
		t.Fatalf("after a rejected first message, %s: %v", events.ConversationStream(dm), err)
	}
	for _, u := range []string{"ann", "bob"} {
		if list, err := svc.Conversations(ctx, u); err != nil || len(list.Conversations) != 0 {
			t.Fatalf("%s's list after a rejected first message: %v, %v", u, list, err)
		}
	}

	r, err := svc.Send(ctx, actors.SendRequest{ToUser: "bob", Sender: "ann", ClientMsgID: "m2", Body: []byte("hi")})
	if err != nil || r.Conversation != dm || r.Seq != 2 || r.Duplicate {
		t.Fatalf("first accepted message: %+v, %v", r, err)
	}
	again, err := svc.Send(ctx, actors.SendRequest{ToUser: "bob", Sender: "ann", ClientMsgID: "m2", Body: []byte("hi")})
	if err != nil || again.Seq != 2 || !again.Duplicate {
		t.Fatalf("retried first message: %+v, %v", again, err)
	}
	reply, err := svc.Send(ctx, actors.SendRequest{ToUser: "ann", Sender: "bob", ClientMsgID: "m1", Body: []byte("hello")})
	if err != nil || reply.Conversation != dm || reply.Seq != 3 {
		t.Fatalf("reply from the other side: %+v, %v", reply, err)
	}
	sys, err := svc.Send(ctx, actors.SendRequest{Conversation: dm, Sender: "notice-bot", System: true, ClientMsgID: "s1", Body: []byte("note")})
	if err != nil || sys.Seq != 4 {
		t.Fatalf("system message through the checks: %+v, %v", sys, err)
	}
	if n := checkGapless(t, store, dm); n != 4 {
		t.Fatalf("%s holds %d events, want the creation and 3 messages", dm, n)
	}
	msgs := history(t, svc, "bob", dm)
	if len(msgs) != 3 || string(msgs[0].Message.Body) != "HI" || msgs[2].Message.Sender != "notice-bot" {
		t.Fatalf("history: %v", msgs)
	}
	fannedOut(t, svc, dm, 4)
	if line := listLine(t, svc, "bob", dm); line.LatestMessageSeq != 4 {
		t.Fatalf("bob's line: %v", line)
	}
}
