package transport_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/transporttest"
)

// startExtendedServer is startServer with extensions configured in the service.
func startExtendedServer(t *testing.T, ext actors.Extensions) *testServer {
	t.Helper()
	return listen(t, transport.Config{Service: transporttest.Service(t, actors.Config{Extensions: ext})})
}

// TestExtensionsOverTheWire: a check's refusal reaches the sender's client
// as code 8 REJECTED with the check's reason, a rewrite reaches the other
// member's device, and a fail-closed check that panics answers code 9.
func TestExtensionsOverTheWire(t *testing.T) {
	ts := startExtendedServer(t, actors.Extensions{
		Checks: []actors.Check{{
			Name: "words",
			Func: func(_ context.Context, d *actors.Draft) error {
				if bytes.Contains(d.Body, []byte("casino")) {
					return actors.Reject("blocked-word", "the message contains a blocked word")
				}
				if bytes.Contains(d.Body, []byte("crash")) {
					panic("a bug in the check")
				}
				d.Body = bytes.ReplaceAll(d.Body, []byte("darn"), []byte("****"))
				return nil
			},
		}},
		Kinds: []actors.MessageKind{{Name: "reaction", NotUnread: true, NoBump: true}},
	})
	c := ctx(t)
	ann := ts.dial(t, "ann", "phone", 0)
	bob := ts.dial(t, "bob", "phone", 0)
	conv, err := ann.OpenDirect(c, "bob")
	if err != nil {
		t.Fatal(err)
	}

	_, err = ann.Send(c, client.Message{Conversation: conv, ClientMsgID: "1", Text: "cheap casino"})
	if client.CodeOf(err) != client.CodeRejected || client.ReasonOf(err) != "blocked-word" {
		t.Fatalf("refused send: %v (code %d, reason %q), want code %d, reason blocked-word", err, client.CodeOf(err), client.ReasonOf(err), client.CodeRejected)
	}
	_, err = ann.Send(c, client.Message{Conversation: conv, ClientMsgID: "2", Text: "crash it"})
	if client.CodeOf(err) != client.CodeCheckFailed || client.ReasonOf(err) != "words" {
		t.Fatalf("failing check: %v, want code %d naming the check", err, client.CodeCheckFailed)
	}

	sent, err := ann.Send(c, client.Message{Conversation: conv, ClientMsgID: "3", Text: "darn rain"})
	if err != nil {
		t.Fatal(err)
	}
	e := next(t, bob, pointerTo(conv, sent.Seq))
	if body := e.Message.(*eventspb.MessagePointer).GetMessage().GetBody(); string(body) != "**** rain" {
		t.Fatalf("bob's device got %q, want the rewritten text", body)
	}
	if sent.Seq != 2 {
		t.Fatalf("the first stored message is at seq %d: refused ones left a trace", sent.Seq)
	}

	// A reaction: in history, neither unread nor the latest message.
	r, err := bob.Send(c, client.Message{Conversation: conv, ClientMsgID: "r", Kind: "reaction", Text: "+1", ReplyTo: sent.Seq})
	if err != nil {
		t.Fatal(err)
	}
	e = next(t, ann, pointerTo(conv, r.Seq))
	if p := e.Message.(*eventspb.MessagePointer); !p.NotUnread || !p.NoBump || p.GetMessage().GetKind() != "reaction" {
		t.Fatalf("ann's device got %v", p)
	}
	info, err := ann.Conversation(c, conv)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetLatestMessageSeq() != sent.Seq {
		t.Fatalf("latest message %d after a reaction, want %d", info.GetLatestMessageSeq(), sent.Seq)
	}
}
