package transport_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// TestRefusedSendToUserCreatesNothing: over the wire, a first message to
// a user that the rules refuse gets its error and creates nothing: no
// direct conversation, nothing in either user's list or sync timeline.
// The first accepted one creates the conversation with its message; its
// retry gets the same seq.
func TestRefusedSendToUserCreatesNothing(t *testing.T) {
	ts := startServer(t, transport.Config{})
	amy := ts.dial(t, "amy", "phone", 0)
	zed := ts.dial(t, "zed", "phone", 0)
	dm := actors.DirectID("amy", "zed")
	for name, m := range map[string]client.Message{
		"body too large": {To: "zed", Text: strings.Repeat("x", 17<<10), ClientMsgID: "a"},
		"kind too long":  {To: "zed", Text: "x", Kind: strings.Repeat("k", 200), ClientMsgID: "b"},
		"reply to none":  {To: "zed", Text: "x", ReplyTo: 42, ClientMsgID: "c"},
		"to oneself":     {To: "amy", Text: "x", ClientMsgID: "d"},
	} {
		var we *wire.Error
		if _, err := amy.Send(ctx(t), m); !errors.As(err, &we) {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := amy.Conversation(ctx(t), dm); !errors.As(err, &we) || we.Code != uint32(actors.Code_NOT_FOUND) {
			t.Fatalf("after a refused send (%s), %s: %v", name, dm, err)
		}
		for _, c := range []*client.Client{amy, zed} {
			l, err := c.Conversations(ctx(t))
			if err != nil || len(l.Conversations) != 0 || l.UserSeq != 0 {
				t.Fatalf("after a refused send (%s) a list holds %v (%v)", name, l, err)
			}
		}
	}
	first, err := amy.Send(ctx(t), client.Message{To: "zed", Text: "hi", ClientMsgID: "e"})
	if err != nil || first.Conversation != dm || first.Seq != 2 || first.Duplicate {
		t.Fatalf("first accepted send: %v, %v", first, err)
	}
	again, err := amy.Send(ctx(t), client.Message{To: "zed", Text: "hi", ClientMsgID: "e"})
	if err != nil || again.Conversation != dm || again.Seq != 2 || !again.Duplicate {
		t.Fatalf("retried send: %v, %v", again, err)
	}
	// zed learns of the conversation and its message from his timeline.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l, err := zed.Conversations(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Conversations) == 1 && l.Conversations[0].ConversationId == dm && l.Conversations[0].LatestMessageSeq == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zed's list: %v", l)
		}
	}
}
