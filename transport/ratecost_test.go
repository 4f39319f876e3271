package transport_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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

// A creation that costs more than the burst passes on a full bucket and
// leaves the rest as debt: the connection waits for all of it.
func TestLargeGroupCreationLeavesDebt(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano()) // tokens are minted on the real clock
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, transport.Config{RequestsPerSecond: 10, RequestBurst: 10, Now: clock})
	c := ts.dial(t, "ann", "phone", 0)
	var members []string
	for i := range 29 {
		members = append(members, fmt.Sprint("m-", i))
	}
	if _, err := c.CreateGroup(ctx(t), "debt", "debt", members); err != nil {
		t.Fatal(err) // costs 30: a burst of 10 and 20 of debt
	}
	send := func(id string) error {
		_, err := c.Send(ctx(t), client.Message{Conversation: "debt", ClientMsgID: id, Text: "x"})
		return err
	}
	now.Add(int64(2500 * time.Millisecond)) // 25 tokens refilled: the debt of 20 plus 5
	// The client's own syncs of its timeline may take one or two of
	// the five (it runs in the background, refused while the debt lasts).
	// Without the debt the bucket would be full again: 10 sends.
	sent := 0
	for ; sent < 10; sent++ {
		err := send(fmt.Sprint("a", sent))
		if client.CodeOf(err) == wire.CodeRateLimited {
			break
		}
		if err != nil {
			t.Fatalf("send %d once the debt is paid: %v", sent, err)
		}
	}
	if sent < 3 || sent > 5 {
		t.Fatalf("%d sends passed once the debt was paid, want 5 (fewer if the client synced): the debt was not charged", sent)
	}
}
