//go:build cluster

// Multi-member tests: several cluster members in one process trip the race
// detector inside protoactor-go's remote (grpclog.SetLoggerV2 against the
// other member's gRPC server), so they build only with -tags cluster and
// run without -race: go test -tags cluster -run Cluster ./actors/

package actors_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
)

func TestClusterGrainsMoveWithoutLoss(t *testing.T) {
	t.Run("member leaves", func(t *testing.T) { testMemberLoss(t, func(s *actors.Service) { s.Close() }) })
	t.Run("member crashes", func(t *testing.T) { testMemberLoss(t, (*actors.Service).Crash) })
}

func testMemberLoss(t *testing.T, lose func(*actors.Service)) {
	members := startMembers(t, 3, actors.Config{ClusterName: "multi", HeartbeatExpiration: 2 * time.Second})
	// Members leave and grains move: on a loaded machine that takes longer
	// than the other tests' 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	users := []string{"ann", "bob", "cat"}
	var convs []string
	for i := range 12 {
		g, err := members[i%3].CreateGroup(ctx, fmt.Sprintf("team%d", i), "ann", "team", []string{"bob", "cat"})
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, g)
	}
	hosts := map[string]bool{}
	for _, c := range convs {
		hosts[members[0].Host(actors.KindConversation, c)] = true
	}
	if len(hosts) < 2 {
		t.Fatalf("12 conversations all on %v: placement does not spread", hosts)
	}

	// Every member reaches every grain, wherever it lives.
	want := map[string][]uint64{}
	send := func(round int) {
		for i, c := range convs {
			via := members[(i+round)%len(members)]
			r, err := via.Send(ctx, actors.SendRequest{Conversation: c, Sender: users[round%3], ClientMsgID: fmt.Sprint(round), Body: []byte("x")})
			if err != nil {
				t.Fatalf("send via %s: %v", via.Address(), err)
			}
			if r.Duplicate {
				t.Fatalf("round %d to %s reported as duplicate", round, c)
			}
			want[c] = append(want[c], r.Seq)
		}
	}
	send(0)
	send(1)

	// Lose a member hosting some of the grains; they re-activate elsewhere
	// from the store.
	lost := members[1]
	var moved []string
	for _, c := range convs {
		if members[0].Host(actors.KindConversation, c) == lost.Address() {
			moved = append(moved, c)
		}
	}
	lose(lost)
	members = slices.Delete(members, 1, 2)
	eventually(t, "two members", func() bool { return members[0].Members() == 2 && members[1].Members() == 2 })
	time.Sleep(200 * time.Millisecond)
	for _, c := range moved {
		if h := members[0].Host(actors.KindConversation, c); h == lost.Address() || h == "" {
			t.Fatalf("%s still placed on the lost member (%q)", c, h)
		}
	}
	// Retries of sends acknowledged before the loss are recognised...
	for _, c := range convs {
		r, err := members[0].Send(ctx, actors.SendRequest{Conversation: c, Sender: users[1], ClientMsgID: "1", Body: []byte("x")})
		if err != nil || !r.Duplicate || r.Seq != want[c][1] {
			t.Fatalf("retry on %s after the loss: %+v %v", c, r, err)
		}
	}
	// ...and new sends continue the timelines without a gap.
	send(2)
	for _, c := range convs {
		if err := members[0].EnsureFanout(ctx, c, want[c][2]); err != nil {
			t.Fatal(err)
		}
		if want[c][2] != want[c][1]+1 {
			t.Fatalf("%s: seq %d after %d", c, want[c][2], want[c][1])
		}
	}
	for _, u := range users {
		entries := readInbox(t, members[0], u)
		checkNoDuplicates(t, u, entries)
		for _, c := range convs {
			if got := pointers(entries, c); !slices.Equal(got, want[c]) {
				t.Fatalf("%s's pointers for %s: %v, want %v", u, c, got, want[c])
			}
		}
	}
	t.Logf("%d of %d conversations moved off the lost member", len(moved), len(convs))
}

// TestClusterRequestFailsOverWhenItsMemberLeaves: a request waiting on a
// grain whose member dies goes again to the grain's new owner as soon as
// the member leaves the topology (it does not wait out its attempt's
// timeout), and what it wrote is stored once.
func TestClusterRequestFailsOverWhenItsMemberLeaves(t *testing.T) {
	// The first check holds the send on the member that is then killed.
	release := make(chan struct{})
	var checked atomic.Int32
	hold := actors.Check{Name: "hold", Timeout: 2 * time.Second, Func: func(ctx context.Context, _ *actors.Draft) error {
		if checked.Add(1) == 1 {
			select {
			case <-release:
			case <-ctx.Done():
				// (The killed member's goroutines live on in this process:
				// its send must not be decided.)
				return ctx.Err()
			}
		}
		return nil
	}}
	members := startMembers(t, 3, actors.Config{ClusterName: "failover", Extensions: actors.Extensions{Checks: []actors.Check{hold}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	via, doomed := members[0], members[2]
	conv := ""
	for i := 0; conv == ""; i++ {
		if id := fmt.Sprintf("room%d", i); via.Host(actors.KindConversation, id) == doomed.Address() {
			conv = id
		}
	}
	if _, err := via.CreateGroup(ctx, conv, "ann", conv, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   actors.SendResult
		err error
	}
	sent := make(chan result, 1)
	go func() {
		r, err := via.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("hi")})
		sent <- result{r, err}
	}()
	defer close(release)
	eventually(t, "the send held on its member", func() bool { return checked.Load() == 1 })
	killed := time.Now()
	doomed.Crash()
	res := <-sent
	t.Logf("the send was answered %v after its member died", time.Since(killed).Round(time.Millisecond))
	if res.err != nil {
		t.Fatalf("send while its conversation's member died: %v", res.err)
	}
	if via.RequestsFailedOver() == 0 {
		t.Fatal("the send waited out its attempt's timeout: nothing failed over when the member left")
	}
	h, err := via.History(ctx, "ann", conv, actors.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Messages) != 1 || h.Messages[0].Seq != res.r.Seq {
		t.Fatalf("history after the failover: %v, want one message at %d", h.Messages, res.r.Seq)
	}
}
