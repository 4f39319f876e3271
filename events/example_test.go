package events_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

func Example() {
	store, err := events.OpenInMemory(events.Options{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	conv := events.ConversationStream("c1")

	// The first message creates the stream.
	hello := events.EventData{ID: uuid.New(), Type: "MessageSent", Data: []byte("hello")}
	res, _ := store.AppendToStream(ctx, conv, events.NoStream, hello)
	fmt.Println("hello at revision", res.NextExpected)

	// A retry after a lost ack is recognised: same result, no duplicate.
	again, _ := store.AppendToStream(ctx, conv, events.NoStream, hello)
	fmt.Println("retry at revision", again.NextExpected)

	// A writer that missed an append is refused and told where the stream is.
	store.AppendToStream(ctx, conv, events.Exactly(0), events.EventData{Type: "MessageSent", Data: []byte("hi")})
	_, err = store.AppendToStream(ctx, conv, events.Exactly(0), events.EventData{Type: "MessageSent", Data: []byte("late")})
	var wrong *events.WrongExpectedRevisionError
	if errors.As(err, &wrong) {
		fmt.Println("stream is at", wrong.Actual)
	}

	page, _ := store.ReadStream(ctx, conv, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 10})
	for _, e := range page {
		fmt.Println(e.Revision, string(e.Data))
	}
	// Output:
	// hello at revision 0
	// retry at revision 0
	// stream is at 1
	// 1 hi
	// 0 hello
}

func ExampleStore_SubscribeToAll() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	ctx := context.Background()
	store.AppendToStream(ctx, "conv-a", events.Any, events.EventData{Type: "MessageSent", Data: []byte("one")})
	store.AppendToStream(ctx, "inbox-u", events.Any, events.EventData{Type: "Pointer", Data: []byte("skip")})

	sub, _ := store.SubscribeToAll(ctx, events.SubscribeAllOptions{Filter: events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}})
	defer sub.Close()
	e, _ := sub.Recv(ctx) // history first...
	fmt.Println(e.Stream, string(e.Data))
	store.AppendToStream(ctx, "conv-a", events.Any, events.EventData{Type: "MessageSent", Data: []byte("two")})
	e, _ = sub.Recv(ctx) // ...then live, with no gap between
	fmt.Println(e.Stream, string(e.Data))
	// Output:
	// conv-a one
	// conv-a two
}
