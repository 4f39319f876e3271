package actors_test

import (
	"testing"

	"github.com/imsync/imsync/actors"
)

// Two connections of one device both get the pushes; detaching one leaves
// the other receiving, and the device online.
func TestDeviceConnectionsEachGetPushes(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	first, ch1 := device(t, svc, "bob", "phone")
	second, ch2 := device(t, svc, "bob", "phone")

	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	p1 := waitPush(t, ch1, 2) // 1: bob joined the direct conversation, 2: the message
	p2 := waitPush(t, ch2, 2)
	if p1.Entry == nil || p2.Entry == nil || p1.Entry.UserSeq != 2 || p2.Entry.UserSeq != 2 {
		t.Fatalf("pushes without the entry: %v / %v", p1, p2)
	}

	// The newer connection goes; the older one keeps receiving.
	if err := second.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := svc.Device(ctx, "bob", "phone"); err != nil || !st.Online {
		t.Fatalf("device offline with one connection left: %v %v", st, err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m2", Body: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	waitPush(t, ch1, 3)

	// Then the older one: the device is offline.
	if err := first.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "device offline", func() bool {
		st, err := svc.Device(ctx, "bob", "phone")
		return err == nil && !st.Online
	})
	if err := first.Detach(ctx); err != nil {
		t.Fatalf("a second Detach: %v", err)
	}
	// A new connection attaches after all that and gets pushes again: the
	// user grain took the newest presence, not a stale "offline".
	_, ch3 := device(t, svc, "bob", "phone")
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m3", Body: []byte("three")}); err != nil {
		t.Fatal(err)
	}
	waitPush(t, ch3, 4)
}

// A connection actor that stops without detaching is forgotten: the
// device goes offline when it was the last one.
func TestDeviceForgetsStoppedConnection(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	a, _ := device(t, svc, "bob", "phone")
	a.Drop()
	eventually(t, "device offline", func() bool {
		st, err := svc.Device(ctx, "bob", "phone")
		return err == nil && !st.Online
	})
}
