package transport_test

import (
	"fmt"
	"testing"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// TestGroupCreationChargedByMembers: creating a group takes one token from
// the connection's rate limit per member, so a connection cannot create
// large groups at its plain request rate.
func TestGroupCreationChargedByMembers(t *testing.T) {
	// A slow refill, so that even a slow machine runs this faster than it.
	ts := startServer(t, transport.Config{RequestsPerSecond: 0.5, RequestBurst: 10})
	c := ts.dial(t, "ann", "phone", 0)
	var members []string
	for i := range 9 {
		members = append(members, fmt.Sprint("member-", i))
	}
	if _, err := c.CreateGroup(ctx(t), "charged", "charged", members); err != nil {
		t.Fatal(err) // 1 + 9 members: the whole burst of 10
	}
	_, err := c.Send(ctx(t), client.Message{Conversation: "charged", ClientMsgID: "1", Text: "x"})
	if client.CodeOf(err) != wire.CodeRateLimited {
		t.Fatalf("send right after creating a 10-member group: %v, want rate limited", err)
	}
}
