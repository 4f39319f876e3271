package actors_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
)

func memberIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%06d", prefix, i)
	}
	return out
}

// waitConvPush waits for a push that says conv changed up to at least seq.
func waitConvPush(t *testing.T, ch chan *actors.Push, conv string, seq uint64, within time.Duration) *actors.Push {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-ch:
			if p.ConversationId == conv && p.ConvSeq >= seq {
				return p
			}
		case <-deadline:
			return nil
		}
	}
}

// sendUntilNotified sends messages to a read-fanout group until the device
// is notified of one (a watch is registered asynchronously after a device
// attaches or its user joins); it returns the notifying push.
func sendUntilNotified(t *testing.T, svc *actors.Service, conv, sender string, ch chan *actors.Push) *actors.Push {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		r, err := svc.Send(tctx(t), actors.SendRequest{Conversation: conv, Sender: sender, ClientMsgID: fmt.Sprint("probe-", i), Body: []byte("probe")})
		if err != nil {
			t.Fatal(err)
		}
		if p := waitConvPush(t, ch, conv, r.Seq, time.Second); p != nil {
			return p
		}
	}
	t.Fatalf("no push for %s within the deadline", conv)
	return nil
}

// TestReadFanoutNotifiesOnlineMembers: in a 600-member (read-fanout)
// group, members with an online device are pushed a notice carrying the
// group's newest seq — both one online before the group was created and
// one that came online after — while no inbox entry is written per message.
func TestReadFanoutNotifiesOnlineMembers(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t), ReadFanoutNotifyInterval: 20 * time.Millisecond})
	ctx := tctx(t)
	members := memberIDs("u", 600)
	_, early := device(t, svc, members[1], "phone")
	conv, err := svc.CreateGroup(ctx, "big", members[0], "big", members[1:])
	if err != nil {
		t.Fatal(err)
	}
	info, err := svc.Conversation(ctx, members[0], conv)
	if err != nil || !info.ReadFanout || len(info.Members) != 600 {
		t.Fatalf("group: %v %v, want a read-fanout group of 600", info, err)
	}
	if err := svc.EnsureFanout(ctx, conv, info.LastSeq); err != nil {
		t.Fatal(err)
	}
	lateConn, late := device(t, svc, members[2], "laptop")

	p := sendUntilNotified(t, svc, conv, members[0], early)
	if p.User != members[1] || p.Device != "phone" || p.Entry != nil {
		t.Fatalf("push to the early device: %v", p)
	}
	sendUntilNotified(t, svc, conv, members[0], late)

	// The notices added nothing to the members' sync timelines.
	for _, u := range members[1:3] {
		if entries := readInbox(t, svc, u); len(entries) != 1 {
			t.Fatalf("%s's inbox has %d entries, want only the membership", u, len(entries))
		}
	}
	// A device that left is not notified any more.
	if err := lateConn.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: members[0], ClientMsgID: "after-detach", Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if waitConvPush(t, early, conv, r.Seq, 10*time.Second) == nil {
		t.Fatal("the early device missed the last send")
	}
	if p := waitConvPush(t, late, conv, r.Seq, 200*time.Millisecond); p != nil {
		t.Fatalf("a detached device was pushed %v", p)
	}
}

// TestReadFanoutNoticesCoalesce: a burst of sends to a read-fanout group
// reaches an online device as at most one notice per notify interval (plus
// the one that opens the burst), the last carrying the newest seq.
func TestReadFanoutNoticesCoalesce(t *testing.T) {
	const interval = 300 * time.Millisecond
	svc := start(t, actors.Config{Store: newStore(t), ReadFanoutNotifyInterval: interval})
	ctx := tctx(t)
	members := memberIDs("c", 501)
	_, ch := device(t, svc, members[1], "phone")
	conv, err := svc.CreateGroup(ctx, "burst", members[0], "burst", members[1:])
	if err != nil {
		t.Fatal(err)
	}
	sendUntilNotified(t, svc, conv, members[0], ch)

	const sends = 40
	began := time.Now()
	var last uint64
	for i := range sends {
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: members[0], ClientMsgID: fmt.Sprint("burst-", i), Body: []byte("b")})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	took := time.Since(began)
	notices := 0
	for {
		p := waitConvPush(t, ch, conv, 0, 10*time.Second)
		if p == nil {
			t.Fatalf("no notice of seq %d; %d notices before", last, notices)
		}
		notices++
		if p.ConvSeq == last {
			break
		}
		if p.ConvSeq > last {
			t.Fatalf("notice of seq %d beyond the newest %d", p.ConvSeq, last)
		}
	}
	bound := int(took/interval) + 2 // one opening the burst, one per interval after it
	t.Logf("%d sends in %s: %d notices (bound %d)", sends, took, notices, bound)
	if bound >= sends {
		t.Skipf("%d sends took %s: too slow to tell coalescing from none", sends, took)
	}
	if notices > bound {
		t.Fatalf("%d sends in %s gave %d notices, want at most %d", sends, took, notices, bound)
	}
}

// TestHundredThousandMemberGroup: a group of 100,000 members (the member
// cap) is created, fanned out to every member, sent to; a member's unread
// count and an online member's notice follow.
func TestHundredThousandMemberGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("100k members: skipped with -short")
	}
	svc := start(t, actors.Config{Store: newStore(t), ReadFanoutNotifyInterval: 20 * time.Millisecond})
	// generous: on the EventStoreDB backend of a busy machine the fanout to
	// 100,000 inboxes takes minutes
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	members := memberIDs("m", actors.DefaultLimits().MaxGroupSize)
	_, ch := device(t, svc, members[1], "phone")
	began := time.Now()
	conv, err := svc.CreateGroup(ctx, "huge", members[0], "huge", members[1:])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("created in %s", time.Since(began))
	info, err := svc.Conversation(ctx, members[0], conv)
	if err != nil || !info.ReadFanout || info.MemberCount != uint64(len(members)) {
		t.Fatalf("group: %d members, read fanout %v, %v", info.GetMemberCount(), info.GetReadFanout(), err)
	}
	// Members come in pages of 1,000 in id order (memberIDs are sorted).
	if !slices.Equal(info.Members, members[:actors.MaxMembersLimit]) || !info.MoreMembers || !slices.Equal(info.Admins, members[:1]) {
		t.Fatalf("first member page: %d members from %q, more %v, admins %v", len(info.Members), info.Members[0], info.MoreMembers, info.Admins)
	}
	last, err := svc.ConversationMembers(ctx, members[0], conv, members[len(members)-3], 0)
	if err != nil || !slices.Equal(last.Members, members[len(members)-2:]) || last.MoreMembers {
		t.Fatalf("last member page: %v more %v, %v", last.GetMembers(), last.GetMoreMembers(), err)
	}
	if err := svc.EnsureFanout(ctx, conv, info.LastSeq); err != nil {
		t.Fatal(err)
	}
	t.Logf("created and fanned out to %d members in %s (%d events)", len(members), time.Since(began), info.LastSeq)
	for _, u := range []string{members[1], members[len(members)-1]} {
		if entries := readInbox(t, svc, u); len(entries) != 1 {
			t.Fatalf("%s's inbox has %d entries, want the membership", u, len(entries))
		}
	}

	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: members[0], ClientMsgID: "hello", Body: []byte("hello, all")})
	if err != nil {
		t.Fatal(err)
	}
	reader := members[len(members)-1]
	list, err := svc.Conversations(ctx, reader)
	if err != nil {
		t.Fatal(err)
	}
	if s := summaryOf(t, list, conv); s.Unread != 1 || s.LatestMessageSeq != r.Seq {
		t.Fatalf("%s's line: unread %d, latest %d; want 1, %d", reader, s.Unread, s.LatestMessageSeq, r.Seq)
	}
	if waitConvPush(t, ch, conv, r.Seq, 10*time.Second) == nil {
		sendUntilNotified(t, svc, conv, members[0], ch)
	}
	if _, err := svc.AddMember(ctx, members[0], conv, "one-too-many"); err == nil {
		t.Fatal("a member beyond the cap was added")
	}
	t.Logf("whole test: %s", time.Since(began))
}
