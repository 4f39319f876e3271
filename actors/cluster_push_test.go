//go:build cluster

package actors_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// threeMembers starts three members of one cluster over one store and
// waits until each sees the others.
func threeMembers(t *testing.T, passivateAfter time.Duration) []*actors.Service {
	t.Helper()
	return startMembers(t, 3, actors.Config{ClusterName: "pushes", HeartbeatExpiration: 2 * time.Second, PassivateAfter: passivateAfter})
}

// startMembers starts n members of one cluster configured as cfg, over
// cfg's store (a new one if nil), and waits until each sees the others.
func startMembers(t *testing.T, n int, cfg actors.Config) []*actors.Service {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = newStore(t)
	}
	agent := test.NewInMemAgent()
	var members []*actors.Service
	for range n {
		c := cfg
		c.Provider = test.NewTestProvider(agent)
		members = append(members, start(t, c))
	}
	eventually(t, fmt.Sprintf("%d members", n), func() bool {
		for _, m := range members {
			if m.Members() != n {
				return false
			}
		}
		return true
	})
	return members
}

// TestClusterPushAcrossMembers: a connection attached on member A gets the
// pushes of its device grain placed on member B for a message sent through
// member C; when B dies, the device grain re-activates elsewhere, learns
// of the connection again, and the pushes go on without the connection
// attaching again.
func TestClusterPushAcrossMembers(t *testing.T) {
	members := threeMembers(t, 0)
	a, b, c := members[0], members[1], members[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A device whose grain lives on B, and whose user's grain does not
	// live on A either: nothing of the path is in A's process but the
	// connection.
	dev := ""
	for i := range 200 {
		d := fmt.Sprintf("d%d", i)
		if a.Host(actors.KindDevice, "ann/"+d) == b.Address() {
			dev = d
			break
		}
	}
	if dev == "" {
		t.Fatal("no device grain placed on the second member in 200 tries")
	}
	att, pushes := device(t, a, "ann", dev)
	defer att.Detach(ctx)
	conv, err := c.OpenDirect(ctx, "bob", "ann")
	if err != nil {
		t.Fatal(err)
	}
	send := func(cid string) {
		t.Helper()
		r, err := c.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: cid, Body: []byte(cid)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.EnsureFanout(ctx, conv, r.Seq); err != nil {
			t.Fatal(err)
		}
		page, err := c.Sync(ctx, "ann", 0, 500)
		if err != nil {
			t.Fatal(err)
		}
		p := waitPush(t, pushes, page.LastUserSeq)
		if p.User != "ann" || p.Device != dev {
			t.Fatalf("push for %s/%s on ann/%s's connection", p.User, p.Device, dev)
		}
	}
	send("before")
	if h := a.Host(actors.KindDevice, "ann/"+dev); h != b.Address() {
		t.Fatalf("device grain moved to %s before the loss", h)
	}

	b.Crash()
	eventually(t, "two members", func() bool { return a.Members() == 2 && c.Members() == 2 })
	// Once the survivors placed the device grain again, it knows the
	// connection (announced again by A) and reports the device online.
	eventually(t, "the device online again after the loss", func() bool {
		st, err := c.Device(ctx, "ann", dev)
		return err == nil && st.Online
	})
	if h := a.Host(actors.KindDevice, "ann/"+dev); h == b.Address() || h == "" {
		t.Fatalf("device grain still placed on the lost member (%q)", h)
	}
	send("after")
}

// TestClusterDeviceLostWithItsMember: a device whose connection and grain
// were both on a member that died is offline for its user grain once the
// grain re-activates elsewhere, so the user grain passivates instead of
// holding the device for online for ever.
func TestClusterDeviceLostWithItsMember(t *testing.T) {
	members := threeMembers(t, 500*time.Millisecond)
	a, b, c := members[0], members[1], members[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user, dev := "", ""
	for i := 0; i < 200 && dev == ""; i++ {
		u := fmt.Sprintf("u%d", i)
		if a.Host(actors.KindUser, u) != a.Address() {
			continue
		}
		for j := range 50 {
			if d := fmt.Sprintf("d%d", j); a.Host(actors.KindDevice, u+"/"+d) == b.Address() {
				user, dev = u, d
				break
			}
		}
	}
	if dev == "" {
		t.Fatal("no user on the first member with a device grain on the second")
	}
	device(t, b, user, dev) // online: the user grain stays while it is
	b.Crash()
	eventually(t, "two members", func() bool { return a.Members() == 2 && c.Members() == 2 })
	// A message for the user: the user grain notifies the device, whose
	// grain re-activates on a survivor without connections.
	conv, err := c.OpenDirect(ctx, "zed", user)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "zed", ClientMsgID: "m1", Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureFanout(ctx, conv, r.Seq); err != nil {
		t.Fatal(err)
	}
	waitPassivated(t, a, actors.KindUser)
}

// TestClusterFencing: two activations of the same grains at once (two
// members that do not know each other, over one store: what a membership
// change does for a moment). The journal's exact expected revision makes
// the one that is behind fail its append and rebuild, so no message is
// stored twice or lost, every acknowledged seq is the message's, and every
// member's sync timeline is gapless with each message once.
func TestClusterFencing(t *testing.T) {
	store := newStore(t)
	// No shared provider: each member is a cluster of its own, and both
	// activate every grain they are asked for.
	x := start(t, actors.Config{Store: store, ClusterName: "left"})
	y := start(t, actors.Config{Store: store, ClusterName: "right"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := x.CreateGroup(ctx, "split", "ann", "split", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	// Both sides have the grain active before the contest begins.
	for _, s := range []*actors.Service{x, y} {
		if _, err := s.Conversation(ctx, "ann", g); err != nil {
			t.Fatal(err)
		}
	}
	type ack struct {
		cid string
		seq uint64
	}
	var mu sync.Mutex
	var acks []ack
	senders := []string{"ann", "bob", "cat"}
	var wg sync.WaitGroup
	failures := 0
	for i, u := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 30 {
				cid := fmt.Sprintf("%s-%d", u, n)
				// Alternate sides, and retry on the other side, as a
				// client of a load balancer would.
				for try := 0; ; try++ {
					via := []*actors.Service{x, y}[(i+n+try)%2]
					r, err := via.Send(ctx, actors.SendRequest{Conversation: g, Sender: u, ClientMsgID: cid, Body: []byte(cid)})
					if err == nil {
						mu.Lock()
						acks = append(acks, ack{cid, r.Seq})
						mu.Unlock()
						break
					}
					mu.Lock()
					failures++
					mu.Unlock()
					if ctx.Err() != nil {
						t.Errorf("%s never acknowledged: %v", cid, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Each message once, at the seq acknowledged; seqs gapless after the
	// creation's.
	seqs := map[uint64]string{}
	for _, a := range acks {
		if prev, dup := seqs[a.seq]; dup {
			t.Fatalf("seq %d acknowledged for %s and %s", a.seq, prev, a.cid)
		}
		seqs[a.seq] = a.cid
	}
	var want []uint64
	for s := range seqs {
		want = append(want, s)
	}
	slices.Sort(want)
	for i := 1; i < len(want); i++ {
		if want[i] != want[i-1]+1 {
			t.Fatalf("acknowledged seqs have a gap: %d after %d", want[i], want[i-1])
		}
	}
	// Retries through either side recognise every message. A side that is
	// behind fails the first such retry cleanly (UNAVAILABLE: its append
	// met the other side's events) and rebuilds; the client's next try
	// finds the message.
	stale := 0
	for _, a := range acks {
		for _, s := range []*actors.Service{x, y} {
			sender := a.cid[:3]
			r, err := s.Send(ctx, actors.SendRequest{Conversation: g, Sender: sender, ClientMsgID: a.cid, Body: []byte(a.cid)})
			if errors.Is(err, actors.ErrUnavailable) {
				stale++
				r, err = s.Send(ctx, actors.SendRequest{Conversation: g, Sender: sender, ClientMsgID: a.cid, Body: []byte(a.cid)})
			}
			if err != nil || !r.Duplicate || r.Seq != a.seq {
				t.Fatalf("retry of %s (seq %d): %+v %v", a.cid, a.seq, r, err)
			}
		}
	}
	if stale > 2 {
		t.Fatalf("%d retries failed: a side that is behind must rebuild after its first failed append", stale)
	}
	// The timelines, fanned out by both activations, hold each message
	// once and in order, without gaps (readInbox fails on a gap).
	last := want[len(want)-1]
	for _, s := range []*actors.Service{x, y} {
		if err := s.EnsureFanout(ctx, g, last); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range senders {
		// From the store: either activation of the user grain may be the
		// one behind.
		var got []uint64
		eventually(t, u+"'s timeline complete", func() bool {
			got = storedPointers(t, store, u, g)
			return len(got) >= len(want)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("%s's timeline holds %v of %s, want %v", u, got, g, want)
		}
	}
	t.Logf("%d messages through two activations at once; %d attempts failed and were retried; %d stale answers to retries", len(acks), failures, stale)
}

// storedPointers reads the user's sync timeline from the store: the seqs
// of conv's messages it points to, in order.
func storedPointers(t *testing.T, store events.Store, user, conv string) []uint64 {
	t.Helper()
	var out []uint64
	from := events.Revision(0)
	for {
		page, err := store.ReadStream(tctx(t), events.InboxStream(user), events.ReadStreamOptions{From: from, Limit: 500})
		if errors.Is(err, events.ErrStreamNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		for _, e := range page {
			m, err := events.Decode(e.Type, e.Data)
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := m.(*eventspb.MessagePointer); ok && p.ConversationId == conv {
				out = append(out, p.Seq)
			}
			from = e.Revision + 1
		}
	}
}

// BenchmarkClusterPush: one send and the push it causes, from the send
// call until the connection has the push: the connection on member A, the
// device grain on member B, the send through member C; against the same on
// one member. go test -tags cluster -run '^$' -bench ClusterPush ./actors/
func BenchmarkClusterPush(b *testing.B) {
	b.Run("one member", func(b *testing.B) {
		s := start(b, actors.Config{Store: newStore(b)})
		benchPush(b, s, s, "ann", "d0")
	})
	b.Run("three members", func(b *testing.B) {
		store := newStore(b)
		agent := test.NewInMemAgent()
		var members []*actors.Service
		for range 3 {
			members = append(members, start(b, actors.Config{Store: store, ClusterName: "bench", Provider: test.NewTestProvider(agent)}))
		}
		eventually(b, "three members", func() bool {
			for _, m := range members {
				if m.Members() != 3 {
					return false
				}
			}
			return true
		})
		a, grainOn, c := members[0], members[1], members[2]
		for i := range 200 {
			if d := fmt.Sprintf("d%d", i); a.Host(actors.KindDevice, "ann/"+d) == grainOn.Address() {
				benchPush(b, a, c, "ann", d)
				return
			}
		}
		b.Fatal("no device grain on the second member")
	})
}

func benchPush(b *testing.B, conn, via *actors.Service, user, dev string) {
	ctx := context.Background()
	ch := make(chan *actors.Push, 1000)
	att, err := conn.AttachDevice(ctx, user, dev, pushSink(ch))
	if err != nil {
		b.Fatal(err)
	}
	defer att.Detach(ctx)
	conv, err := via.OpenDirect(ctx, "bob", user)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := via.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: fmt.Sprint(i), Body: []byte("x")}); err != nil {
			b.Fatal(err)
		}
		for p := range ch {
			if e := p.GetEntry(); e != nil && e.Type == "MessagePointer" {
				break
			}
		}
	}
}

// TestClusterGrainServesOnlyWhereOwned: an activation on a member that does
// not own the grain (as a member with a late view can cause) does not
// answer from the state it loaded: it hands the request on to the owner's
// activation and stops.
func TestClusterGrainServesOnlyWhereOwned(t *testing.T) {
	members := threeMembers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := members[0].CreateGroup(ctx, "owned", "ann", "owned", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	owner := members[0].Host(actors.KindConversation, g)
	var stray *actors.Service
	for _, m := range members {
		if m.Address() != owner {
			stray = m
			break
		}
	}
	pid := stray.ActivateHere(actors.KindConversation, g)
	if pid == nil {
		t.Fatal("no activation on the member that does not own the grain")
	}
	// Writes through the owner after the stray loaded.
	var last uint64
	for i := range 3 {
		r, err := members[0].Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	res, err := stray.AskPID(pid, actors.GetConversationMsg("ann"))
	if err != nil {
		t.Fatal(err)
	}
	info, ok := res.(*eventspb.ConversationInfo)
	if !ok || info.LastSeq != last {
		t.Fatalf("the stray activation answered %v (last seq %d), want the owner's last seq %d", res, info.GetLastSeq(), last)
	}
	eventually(t, "the stray activation to stop", func() bool { return stray.ActiveGrains(actors.KindConversation) == 0 })
}
