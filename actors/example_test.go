package actors_test

import (
	"context"
	"fmt"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

func Example() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	svc, err := actors.Start(actors.Config{Store: store})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	res, _ := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m-1", Body: []byte("hi bob")})
	retry, _ := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m-1", Body: []byte("hi bob")})
	fmt.Println("sent at seq", res.Seq, "retry:", retry.Seq, retry.Duplicate)

	svc.EnsureFanout(ctx, conv, res.Seq) // fanout follows the ack; wait for it here
	page, _ := svc.Sync(ctx, "bob", 0, 100)
	for _, e := range page.Entries {
		fmt.Println(e.UserSeq, e.Type)
	}
	list, _ := svc.Conversations(ctx, "bob")
	fmt.Println(list.Conversations[0].ConversationId, "unread:", list.Conversations[0].Unread)
	// Output:
	// sent at seq 2 retry: 2 true
	// 1 MembershipChanged
	// 2 MessagePointer
	// dm-ann~bob unread: 1
}
