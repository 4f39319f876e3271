package transport_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/client"
)

// reactionKind is the reactions example of docs/extending.md: it names
// the message it reacts to, is short, and neither counts as unread nor
// bumps the conversation.
var reactionKind = actors.MessageKind{
	Name: "reaction",
	Validate: func(d actors.Draft) error {
		if d.ReplyTo() == 0 {
			return errors.New("a reaction names the message it reacts to (ReplyTo)")
		}
		if len(d.Body) > 32 {
			return errors.New("a reaction is at most 32 bytes")
		}
		return nil
	},
	NotUnread: true,
	NoBump:    true,
	NoPush:    true,
}

// TestDeviceSendsKindAndMetadata: a device sends a message's kind and
// metadata over the wire. A reaction sent by bob's device does not count
// as unread for ann nor becomes her latest message, while bob's next text
// does; the kind's validation and the metadata limits hold over the wire
// as in the service, and what they refuse leaves no trace.
func TestDeviceSendsKindAndMetadata(t *testing.T) {
	ts := startExtendedServer(t, actors.Extensions{Kinds: []actors.MessageKind{reactionKind}})
	c := ctx(t)
	ann := ts.dial(t, "ann", "phone", 0)
	bob := ts.dial(t, "bob", "phone", 0)
	conv, err := ann.OpenDirect(c, "bob")
	if err != nil {
		t.Fatal(err)
	}
	lunch, err := ann.Send(c, client.Message{Conversation: conv, ClientMsgID: "1", Text: "lunch?", Metadata: map[string]string{"lang": "en"}})
	if err != nil {
		t.Fatal(err)
	}
	react, err := bob.Send(c, client.Message{Conversation: conv, ClientMsgID: "r", Kind: "reaction", Text: "👍",
		ReplyTo: lunch.Seq, Metadata: map[string]string{"emoji": "thumbs-up"}})
	if err != nil {
		t.Fatal(err)
	}

	// Refused over the wire as by the service, with nothing stored.
	for _, m := range []client.Message{
		{Conversation: conv, ClientMsgID: "x1", Kind: "reaction", Text: "👍"},                                              // names no message
		{Conversation: conv, ClientMsgID: "x2", Text: "hi", Metadata: map[string]string{"": "v"}},                         // empty key
		{Conversation: conv, ClientMsgID: "x3", Text: "hi", Metadata: map[string]string{"k": strings.Repeat("v", 4<<10)}}, // 4 KiB + 1
		{Conversation: conv, ClientMsgID: "x4", Text: "hi", Metadata: manyKeys(actors.MaxMetadataKeys + 1)},               // 33 entries
		{Conversation: conv, ClientMsgID: "x5", Kind: "reaction", Text: strings.Repeat("+", 33), ReplyTo: lunch.Seq},      // too long a reaction
	} {
		want := uint32(client.CodeTooLarge)
		if m.Kind == "reaction" || m.Metadata[""] != "" {
			want = client.CodeInvalid
		}
		if _, err := bob.Send(c, m); client.CodeOf(err) != want {
			t.Fatalf("send %s: %v (code %d), want code %d", m.ClientMsgID, err, client.CodeOf(err), want)
		}
	}
	if _, err := bob.Send(c, client.Message{Conversation: conv, ClientMsgID: "ok", Text: "at most", Metadata: manyKeys(actors.MaxMetadataKeys)}); err != nil {
		t.Fatalf("32 entries: %v", err)
	}
	text, err := bob.Send(c, client.Message{Conversation: conv, ClientMsgID: "2", Text: "yes!"})
	if err != nil {
		t.Fatal(err)
	}
	if text.Seq != react.Seq+2 {
		t.Fatalf("bob's text at seq %d after the reaction at %d and one message: refused sends left a trace", text.Seq, react.Seq)
	}

	// ann's list line: two unread (bob's two texts), not three; latest
	// message bob's text. Polled: the list follows the sends.
	var line *eventspb.ConversationSummary
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		list, err := ann.Conversations(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range list.Conversations {
			if l.ConversationId == conv {
				line = l
			}
		}
		if line != nil && line.LatestMessageSeq == text.Seq {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("ann's list line never showed bob's text: %v", line)
		}
	}
	if line.Unread != 2 {
		t.Fatalf("ann's unread %d, want 2: the reaction counted", line.Unread)
	}

	// History: the kind and both devices' metadata, as sent.
	h, err := ann.History(c, conv, client.HistoryQuery{FromStart: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*eventspb.MessageSent{}
	for _, m := range h.Messages {
		got[m.Seq] = m.Message
	}
	if m := got[lunch.Seq]; m.GetMetadata()["lang"] != "en" || m.GetKind() != "text" {
		t.Fatalf("ann's message: %v", m)
	}
	if m := got[react.Seq]; m.GetKind() != "reaction" || !m.GetNotUnread() || m.GetMetadata()["emoji"] != "thumbs-up" || m.GetReplyTo() != lunch.Seq {
		t.Fatalf("bob's reaction: %v", m)
	}
}

func manyKeys(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = "v"
	}
	return m
}
