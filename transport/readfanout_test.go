package transport_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// A member of a read-fanout group (above 500 members: no sync entry per
// message) that is online is told over QUIC that the group changed, with
// the group's newest seq.
func TestReadFanoutGroupNotifiesOnlineDevice(t *testing.T) {
	// A burst above the group's size: creating it leaves no rate-limit debt.
	ts := startServer(t, transport.Config{RequestBurst: 1000})
	ann := ts.dial(t, "ann", "phone", 0)
	bob := ts.dial(t, "bob", "phone", 0)
	members := []string{"bob"}
	for i := range 599 {
		members = append(members, fmt.Sprintf("m%03d", i))
	}
	conv, err := ann.CreateGroup(ctx(t), "", "big", members)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ann.Conversation(ctx(t), conv)
	if err != nil || !info.ReadFanout {
		t.Fatalf("group of 600: %v %v, want read-fanout", info, err)
	}
	// Bob's device registers its interest asynchronously after the group
	// is fanned out: send until a notice arrives, each one at most once.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no notice of the read-fanout group reached the online device")
		}
		sent, err := ann.Send(ctx(t), client.Message{Conversation: conv, ClientMsgID: fmt.Sprint("m-", i), Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if waitChange(bob, conv, sent.Seq, time.Second) {
			return
		}
	}
}

func waitChange(c *client.Client, conv string, seq uint64, within time.Duration) bool {
	timeout := time.After(within)
	for {
		select {
		case ch := <-c.Changes():
			if ch.Conversation == conv && ch.Seq >= seq {
				return true
			}
		case <-timeout:
			return false
		}
	}
}
