package actors_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
)

// recordingSink records, in order, the pushes and closes its connection
// actor hands it.
type recordingSink chan string

func (s recordingSink) Push(p *actors.Push) {
	s <- fmt.Sprintf("push %s/%s %d", p.User, p.Device, p.UserSeq)
}

func (s recordingSink) CloseConnection(code uint32, reason string) {
	s <- fmt.Sprintf("close %d %s", code, reason)
}

// TestConnectionIgnoresAnotherDevicesMessages: a connection actor reached
// through a stale PID (a grain of another device, after a member restarted
// at the same address and reused actor ids) neither closes its connection
// nor pushes to it.
func TestConnectionIgnoresAnotherDevicesMessages(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	sink := make(recordingSink, 10)
	att, err := svc.AttachDevice(ctx, "ann", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Detach(ctx)
	att.SendToConnection(&actors.Push{User: "bob", Device: "phone", UserSeq: 7})
	att.SendToConnection(&actors.CloseConnections{Code: 109, Reason: "stale", User: "bob", Device: "phone"})
	att.SendToConnection(&actors.CloseConnections{Code: 109, Reason: "stale", User: "ann", Device: "tablet"})
	// The actor handles its messages in order: once these arrive, the
	// others have been dealt with.
	att.SendToConnection(&actors.Push{User: "ann", Device: "phone", UserSeq: 8})
	att.SendToConnection(&actors.CloseConnections{Code: 109, Reason: "bye", User: "ann", Device: "phone"})
	for _, want := range []string{"push ann/phone 8", "close 109 bye"} {
		select {
		case got := <-sink:
			if got != want {
				t.Fatalf("the connection got %q, want %q (only its own device's messages)", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the connection never got %q", want)
		}
	}
}
