//go:build cluster

package actors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
)

// closerSink records the closes its device grain asks for.
type closerSink chan string

func (closerSink) Push(*actors.Push) {}

func (c closerSink) CloseConnection(code uint32, reason string) {
	c <- fmt.Sprintf("%d %s", code, reason)
}

// TestClusterDisconnectReachesEveryConnection: DisconnectDevice through
// one member reaches the device's connections on the two others (its
// grain on a third), and no other device's.
func TestClusterDisconnectReachesEveryConnection(t *testing.T) {
	members := threeMembers(t, 0)
	a, b, c := members[0], members[1], members[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := ""
	for i := range 200 {
		if d := fmt.Sprintf("d%d", i); a.Host(actors.KindDevice, "ann/"+d) == b.Address() {
			dev = d
			break
		}
	}
	if dev == "" {
		t.Fatal("no device grain placed on the second member in 200 tries")
	}
	onA, onC, other := make(closerSink, 1), make(closerSink, 1), make(closerSink, 1)
	for _, x := range []struct {
		svc  *actors.Service
		dev  string
		sink closerSink
	}{{a, dev, onA}, {c, dev, onC}, {a, "other", other}} {
		att, err := x.svc.AttachDevice(ctx, "ann", x.dev, x.sink)
		if err != nil {
			t.Fatal(err)
		}
		defer att.Detach(ctx)
	}
	n, err := c.DisconnectDevice(ctx, "ann", dev, 109, "bye")
	if err != nil || n != 2 {
		t.Fatalf("disconnect: %d connections, %v; want 2", n, err)
	}
	for name, s := range map[string]closerSink{"on A": onA, "on C": onC} {
		select {
		case got := <-s:
			if got != "109 bye" {
				t.Fatalf("connection %s closed with %q", name, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %s not asked to close", name)
		}
	}
	// The closes went out together: a stray one would have arrived by
	// now, or within a second.
	select {
	case got := <-other:
		t.Fatalf("another device's connection was closed: %q", got)
	case <-time.After(time.Second):
	}
	if _, err := c.DisconnectDevice(ctx, "ann", "bad/id", 109, "bye"); err == nil {
		t.Fatal("a bad device id was accepted")
	}
}
