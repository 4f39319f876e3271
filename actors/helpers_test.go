package actors_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// inboxEntry is one decoded sync-timeline entry.
type inboxEntry struct {
	userSeq uint64
	conv    string
	seq     uint64 // the conversation seq it stems from (0 for read markers)
	msg     proto.Message
}

// readInbox reads a user's whole sync timeline through the service, and
// checks that user seqs are gapless from 1.
func readInbox(t testing.TB, svc *actors.Service, user string) []inboxEntry {
	t.Helper()
	var out []inboxEntry
	after := uint64(0)
	for {
		page, err := svc.Sync(tctx(t), user, after, 500)
		if err != nil {
			t.Fatalf("sync %s: %v", user, err)
		}
		for _, e := range page.Entries {
			if e.UserSeq != after+1 {
				t.Fatalf("%s: user seq %d after %d: gap", user, e.UserSeq, after)
			}
			m, err := events.Decode(e.Type, e.Data)
			if err != nil {
				t.Fatal(err)
			}
			ie := inboxEntry{userSeq: e.UserSeq, msg: m}
			switch v := m.(type) {
			case *eventspb.MessagePointer:
				ie.conv, ie.seq = v.ConversationId, v.Seq
			case *eventspb.MembershipChanged:
				ie.conv, ie.seq = v.ConversationId, v.Seq
			case *eventspb.RecallNotice:
				ie.conv, ie.seq = v.ConversationId, v.Seq
			case *eventspb.EditNotice:
				ie.conv, ie.seq = v.ConversationId, v.Seq
			case *eventspb.ReadMarkerMoved:
				ie.conv = v.ConversationId
			}
			out = append(out, ie)
			after = e.UserSeq
		}
		if len(page.Entries) == 0 || after >= page.LastUserSeq {
			return out
		}
	}
}

// checkNoDuplicates fails if a (conversation, seq) appears twice in an inbox.
func checkNoDuplicates(t testing.TB, user string, entries []inboxEntry) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range entries {
		if e.seq == 0 {
			continue
		}
		k := fmt.Sprintf("%s/%d", e.conv, e.seq)
		if seen[k] {
			t.Fatalf("%s's inbox holds %s twice", user, k)
		}
		seen[k] = true
	}
}

// pointers returns the message seqs of conv in an inbox, in order.
func pointers(entries []inboxEntry, conv string) []uint64 {
	var out []uint64
	for _, e := range entries {
		if p, ok := e.msg.(*eventspb.MessagePointer); ok && p.ConversationId == conv {
			out = append(out, p.Seq)
		}
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPassivated polls until no grain of the given kinds is active on svc:
// with a short PassivateAfter, idle grains stop by themselves, and the next
// call rebuilds them from their streams.
func waitPassivated(t testing.TB, svc *actors.Service, kinds ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("grains of %v to passivate", kinds), func() bool {
		for _, k := range kinds {
			if svc.ActiveGrains(k) != 0 {
				return false
			}
		}
		return true
	})
}
