package actors_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// WordFilter is a check that refuses messages with a blocked word
// (REJECTED, reason "blocked-word") and masks the milder ones.
func WordFilter(blocked, masked []string) actors.Check {
	return actors.Check{
		Name:    "word-filter",
		Timeout: 50 * time.Millisecond, // pure CPU: a generous bound
		Func: func(_ context.Context, d *actors.Draft) error {
			for _, w := range blocked {
				if len(findFold(d.Body, w)) > 0 {
					return actors.Reject("blocked-word", "the message contains a blocked word")
				}
			}
			for _, w := range masked {
				for _, at := range findFold(d.Body, w) {
					copy(d.Body[at:at+len(w)], bytes.Repeat([]byte("*"), len(w)))
				}
			}
			return nil
		},
	}
}

// findFold returns where word occurs in body, ignoring ASCII case.
func findFold(body []byte, word string) []int {
	var at []int
	for i := 0; i+len(word) <= len(body); i++ {
		if bytes.EqualFold(body[i:i+len(word)], []byte(word)) {
			at = append(at, i)
		}
	}
	return at
}

func Example_wordFilter() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	svc, err := actors.Start(actors.Config{Store: store, Extensions: actors.Extensions{
		Checks: []actors.Check{WordFilter([]string{"casino"}, []string{"darn"})},
	}})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	_, err = svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "1", Body: []byte("Best CASINO deals")})
	var refused *actors.Failure
	if errors.As(err, &refused) {
		fmt.Println(refused.Code, refused.Reason)
	}
	svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "2", Body: []byte("Darn, missed the bus")})
	page, _ := svc.History(ctx, "bob", conv, actors.HistoryQuery{Limit: 10})
	for _, m := range page.Messages {
		fmt.Printf("%d %s\n", m.Seq, m.Message.Body)
	}
	// Output:
	// REJECTED blocked-word
	// 2 ****, missed the bus
}

// EchoBot is a reactor: the user "echo" answers every text message sent to
// a conversation it is a member of. Its client message id is derived from
// the message answered, so that an event delivered twice (after a restart)
// is still answered once.
var EchoBot = actors.Reactor{
	Name: "echo-bot",
	React: func(ctx context.Context, svc *actors.Service, e actors.Committed) error {
		m, ok := e.Event.(*eventspb.MessageSent)
		if !ok || m.Sender == "echo" || m.Kind != "text" {
			return nil
		}
		_, err := svc.Send(ctx, actors.SendRequest{
			Conversation: e.Conversation, Sender: "echo", Device: "bot",
			ClientMsgID: fmt.Sprintf("echo-%d", e.Seq), ReplyTo: e.Seq,
			Body: append([]byte("echo: "), m.Body...),
		})
		if errors.Is(err, actors.ErrNotFound) || errors.Is(err, actors.ErrRejected) || errors.Is(err, actors.ErrTooLarge) {
			return nil // not a member there, or nothing it may say: skip
		}
		return err // anything else: the event is delivered again
	},
}

func Example_echoBot() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	svc, err := actors.Start(actors.Config{Store: store, Extensions: actors.Extensions{
		Reactors: []actors.Reactor{EchoBot},
	}})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	conv, _ := svc.OpenDirect(ctx, "ann", "echo")
	svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "1", Body: []byte("ping")})
	// The answer comes after the commit, from the reactor: poll for it.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		page, _ := svc.History(ctx, "ann", conv, actors.HistoryQuery{Limit: 10})
		if len(page.Messages) == 2 {
			for _, m := range page.Messages {
				fmt.Printf("%d %s: %s\n", m.Seq, m.Message.Sender, m.Message.Body)
			}
			break
		}
	}
	// Output:
	// 3 echo: echo: ping
	// 2 ann: ping
}

// Reaction is a custom message kind: a short reply to a message that
// neither counts as unread nor moves the conversation up the list, and
// pushes no device.
var Reaction = actors.MessageKind{
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

func Example_reactions() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	svc, err := actors.Start(actors.Config{Store: store, Extensions: actors.Extensions{
		Kinds: []actors.MessageKind{Reaction},
	}})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	hi, _ := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "1", Body: []byte("lunch?")})
	r, _ := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: "2", Kind: "reaction", Body: []byte("👍"), ReplyTo: hi.Seq})
	_, err = svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: "3", Kind: "reaction", Body: []byte("👍")})
	fmt.Println("reaction to nothing:", errors.Is(err, actors.ErrInvalid))

	svc.EnsureFanout(ctx, conv, r.Seq)
	list, _ := svc.Conversations(ctx, "ann")
	line := list.Conversations[0]
	fmt.Println("ann: unread", line.Unread, "latest", line.LatestMessageSeq)
	page, _ := svc.History(ctx, "ann", conv, actors.HistoryQuery{Limit: 10})
	for _, m := range page.Messages {
		fmt.Printf("%d %s %s %s (reply to %d)\n", m.Seq, m.Message.Sender, m.Message.Kind, m.Message.Body, m.Message.ReplyTo)
	}
	// Output:
	// reaction to nothing: true
	// ann: unread 0 latest 2
	// 3 bob reaction 👍 (reply to 2)
	// 2 ann text lunch? (reply to 0)
}
