package actors_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
)

// TestRandomHistories drives the service with random interleavings of
// sends (some retried), membership changes, recalls, read markers and device
// syncs, across several users and devices, while grains passivate and the
// whole process restarts (store closed and reopened) at random points.
// Afterwards it checks every guarantee against what was acknowledged.
func TestRandomHistories(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IMSYNC_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with IMSYNC_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	h := newHarness(t)
	users := []string{"ann", "bob", "cat", "dan", "eve"}
	devices := []string{"phone", "laptop"}
	ctx := tctx(t)

	convs := []string{}
	g1, err := h.svc.CreateGroup(ctx, "g1", "ann", "small", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := h.svc.CreateGroup(ctx, "g2", "bob", "grows", []string{"ann", "cat", "dan"})
	if err != nil {
		t.Fatal(err)
	}
	d1, err := h.svc.OpenDirect(ctx, "ann", "eve")
	if err != nil {
		t.Fatal(err)
	}
	convs = append(convs, g1, g2, d1)
	admins := map[string]string{g1: "ann", g2: "bob"}

	type sent struct {
		conv, sender, cid string
		seq               uint64
	}
	var acked []sent
	bySend := map[string]uint64{}                 // conv/sender/cid → seq
	originals := map[string]int{}                 // conv/sender/cid → answers that were not duplicates
	readTo := map[string]uint64{}                 // user/conv → highest read marker answered
	local := map[string]uint64{}                  // user/device → user seq the device has applied
	applied := map[string][]*eventspb.SyncEntry{} // user/device → the entries it applied, in order

	members := func(conv string) []string {
		info, err := h.svc.Conversation(tctx(t), admins[conv]+"", conv)
		if conv == d1 {
			info, err = h.svc.Conversation(tctx(t), "ann", conv)
		}
		if err != nil {
			t.Fatalf("members of %s: %v", conv, err)
		}
		return info.Members
	}

	const ops = 240
	for op := 0; op < ops; op++ {
		ctx := tctx(t)
		switch r := rng.IntN(100); {
		case r < 45: // a burst of concurrent sends, some of them retries
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range 1 + rng.IntN(4) {
				conv := convs[rng.IntN(len(convs))]
				ms := members(conv)
				sender := ms[rng.IntN(len(ms))]
				cid := fmt.Sprintf("c%d", rng.IntN(1000))
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := h.svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: sender, Device: "phone", ClientMsgID: cid, Body: []byte(cid)})
					if err != nil {
						t.Errorf("send: %v", err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					// A retry may even race its original (same burst): every
					// answer must name the same seq, and exactly one of all
					// answers may say "not a duplicate" (checked at the end).
					k := conv + "/" + sender + "/" + cid
					if !res.Duplicate {
						originals[k]++
					}
					if prev, ok := bySend[k]; ok {
						if prev != res.Seq {
							t.Errorf("retry of %s got seq %d, first answer %d", k, res.Seq, prev)
						}
						return
					}
					bySend[k] = res.Seq
					acked = append(acked, sent{conv, sender, cid, res.Seq})
				}()
			}
			wg.Wait()
		case r < 55: // membership
			conv := []string{g1, g2}[rng.IntN(2)]
			user := users[rng.IntN(len(users))]
			if user == admins[conv] {
				continue
			}
			var err error
			if slices.Contains(members(conv), user) {
				_, err = h.svc.RemoveMember(ctx, admins[conv], conv, user)
			} else {
				_, err = h.svc.AddMember(ctx, admins[conv], conv, user)
			}
			if err != nil {
				t.Fatal(err)
			}
		case r < 62: // recall one of one's recent messages
			if len(acked) == 0 {
				continue
			}
			s := acked[len(acked)-1-rng.IntN(min(len(acked), 5))]
			_, err := h.svc.Recall(ctx, s.sender, s.conv, s.seq)
			if err != nil && !errors.Is(err, actors.ErrNotFound) { // the sender may have left
				t.Fatalf("recall: %v", err)
			}
		case r < 75: // read markers
			conv := convs[rng.IntN(len(convs))]
			ms := members(conv)
			user := ms[rng.IntN(len(ms))]
			info, err := h.svc.Conversation(ctx, user, conv)
			if err != nil {
				t.Fatal(err)
			}
			seq := uint64(rng.IntN(int(info.LastSeq) + 1))
			marker, err := h.svc.MarkRead(ctx, user, "phone", conv, seq)
			if err != nil {
				t.Fatal(err)
			}
			// The answer is the marker that results: never behind the
			// request, nor behind a marker answered before.
			k := user + "/" + conv
			if marker < seq || marker < readTo[k] || marker > info.LastSeq {
				t.Fatalf("%s read to %d: marker %d (before: %d, last seq %d)", k, seq, marker, readTo[k], info.LastSeq)
			}
			readTo[k] = marker
		case r < 90: // a device syncs a little and acks
			user, dev := users[rng.IntN(len(users))], devices[rng.IntN(2)]
			k := user + "/" + dev
			page, err := h.svc.Sync(ctx, user, local[k], 1+rng.IntN(5))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				if e.UserSeq != local[k]+1 {
					t.Fatalf("%s pulled %d after %d", k, e.UserSeq, local[k])
				}
				local[k] = e.UserSeq
				applied[k] = append(applied[k], e)
			}
			if _, err := h.svc.AckDevice(ctx, user, dev, local[k]); err != nil {
				t.Fatal(err)
			}
		case r < 97: // every grain passivates; the next calls rebuild them
			waitPassivated(t, h.svc, actors.KindConversation, actors.KindUser, actors.KindDevice)
		default: // restart the process
			h.restart()
		}
	}

	for k := range bySend {
		if originals[k] != 1 {
			t.Fatalf("%s: %d answers said it was stored anew, want exactly 1", k, originals[k])
		}
	}

	// Let every fanout finish, then check.
	ctx = tctx(t)
	for _, conv := range convs {
		info, err := h.svc.Conversation(ctx, members(conv)[0], conv)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.svc.EnsureFanout(ctx, conv, info.LastSeq); err != nil {
			t.Fatal(err)
		}
	}
	h.restart() // and everything must still hold after one more restart

	// 1. Each conversation's seqs are gapless 1..N; each acked send is
	// there exactly once, at its seq.
	model := map[string]*convModel{}
	for _, conv := range convs {
		model[conv] = replayConv(t, h.store, conv)
	}
	for _, s := range acked {
		m := model[s.conv]
		msg, ok := m.msgs[s.seq]
		if !ok || msg.sender != s.sender || msg.cid != s.cid {
			t.Fatalf("acked %s/%s/%s at %d: stored %+v", s.conv, s.sender, s.cid, s.seq, msg)
		}
	}
	for conv, m := range model {
		seen := map[string]bool{}
		for _, msg := range m.msgs {
			k := msg.sender + "/" + msg.cid
			if seen[k] {
				t.Fatalf("%s stores %s twice", conv, k)
			}
			seen[k] = true
		}
	}

	for _, user := range users {
		entries := readInbox(t, h.svc, user) // checks user seqs are gapless
		checkNoDuplicates(t, user, entries)
		// 2. Write-fanout: each message of the user's conversations, once,
		// in order; nothing from before joining or after leaving.
		for _, conv := range convs {
			want := model[conv].deliveredTo(user)
			if got := pointers(entries, conv); !slices.Equal(got, want) {
				t.Fatalf("%s's pointers for %s: %v, want %v", user, conv, got, want)
			}
		}
		// 3. The list holds exactly the user's conversations, and their
		// unread counts and read markers follow the documented rule.
		list, err := h.svc.Conversations(tctx(t), user)
		if err != nil {
			t.Fatal(err)
		}
		var listed, want []string
		for _, c := range list.Conversations {
			listed = append(listed, c.ConversationId)
		}
		for _, conv := range convs {
			if _, ok := model[conv].joined[user]; ok {
				want = append(want, conv)
			}
		}
		slices.Sort(listed)
		slices.Sort(want)
		if !slices.Equal(listed, want) {
			t.Fatalf("%s's list: %v, want %v", user, listed, want)
		}
		for _, c := range list.Conversations {
			m, read := model[c.ConversationId], readTo[user+"/"+c.ConversationId]
			if want := m.unreadByRule(user, read); c.Unread != want {
				t.Fatalf("%s's unread in %s: %d, want %d (read to %d)", user, c.ConversationId, c.Unread, want, read)
			}
			if want := max(read, m.ownDelivered(user)); c.LastReadSeq != want {
				t.Fatalf("%s's read marker in %s: %d, want %d", user, c.ConversationId, c.LastReadSeq, want)
			}
		}
		// 4. All devices converge: each one, syncing on from where it
		// stopped, has applied exactly the user's inbox stream as stored.
		stored := readStoredInbox(t, h.store, user)
		for _, dev := range devices {
			k := user + "/" + dev
			for {
				page, err := h.svc.Sync(tctx(t), user, local[k], 3)
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Entries) == 0 {
					break
				}
				for _, e := range page.Entries {
					if e.UserSeq != local[k]+1 {
						t.Fatalf("%s: gap at %d", k, e.UserSeq)
					}
					local[k] = e.UserSeq
					applied[k] = append(applied[k], e)
				}
			}
			got := applied[k]
			if len(got) != len(stored) {
				t.Fatalf("%s applied %d entries; the inbox stream holds %d", k, len(got), len(stored))
			}
			for i, e := range got {
				r := stored[i]
				if e.UserSeq != uint64(r.Revision)+1 || e.Type != r.Type || !bytes.Equal(e.Data, r.Data) {
					t.Fatalf("%s's entry %d: user seq %d %s; stored: revision %d %s", k, i, e.UserSeq, e.Type, r.Revision, r.Type)
				}
			}
			st, err := h.svc.AckDevice(tctx(t), user, dev, local[k])
			if err != nil || st.AckedUserSeq != uint64(len(stored)) {
				t.Fatalf("%s acked %v, %v; timeline has %d", k, st, err, len(stored))
			}
		}
		if len(entries) != len(stored) {
			t.Fatalf("%s: a full sync gives %d entries, the stream holds %d", user, len(entries), len(stored))
		}
	}
	t.Logf("%d sends acknowledged, %d restarts", len(acked), h.restarts)
}

// harness owns durable store data and the service over it, and restarts
// both (the store's client, on the EventStoreDB backend).
type harness struct {
	t        *testing.T
	data     *teststore.Durable
	store    events.Store
	svc      *actors.Service
	restarts int
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, data: teststore.NewDurable(t, filepath.Join(t.TempDir(), "store"))}
	h.open()
	t.Cleanup(func() {
		h.svc.Close()
		h.store.Close()
	})
	return h
}

func (h *harness) open() {
	var err error
	h.store = h.data.Open()
	lim := actors.DefaultLimits()
	lim.ReadFanoutThreshold = 4 // g2 crosses it as members come and go
	h.svc, err = actors.Start(actors.Config{Store: h.store, Limits: lim, PassivateAfter: 100 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) restart() {
	h.svc.Close()
	h.store.Close()
	h.open()
	h.restarts++
}

// convModel is what the stored conversation says should have happened.
type convModel struct {
	msgs      map[uint64]modelMsg
	order     []uint64
	delivered map[string][]uint64 // user → message seqs fanned out by write
	joined    map[string]uint64
	recalled  map[uint64]bool
}

type modelMsg struct {
	sender, cid string
}

// replayConv reads conv-<id> straight from the store, checks its seqs are
// gapless from 1, and derives who should have received what.
func replayConv(t *testing.T, store events.Store, conv string) *convModel {
	t.Helper()
	m := &convModel{msgs: map[uint64]modelMsg{}, delivered: map[string][]uint64{}, joined: map[string]uint64{}, recalled: map[uint64]bool{}}
	members := map[string]bool{}
	page, err := store.ReadStream(tctx(t), events.ConversationStream(conv), events.ReadStreamOptions{Limit: events.MaxReadLimit})
	if err != nil {
		t.Fatal(err)
	}
	var group, large bool
	for i, e := range page {
		seq := uint64(i) + 1
		if uint64(e.Revision)+1 != seq {
			t.Fatalf("%s: event %d has seq %d: gap", conv, i, e.Revision+1)
		}
		ev, err := events.Decode(e.Type, e.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch v := ev.(type) {
		case *eventspb.ConversationCreated:
			group = v.Kind == eventspb.ConversationKind_GROUP
			for _, u := range v.Members {
				members[u], m.joined[u] = true, seq
			}
			large = group && len(members) > 4
		case *eventspb.MemberAdded:
			members[v.User], m.joined[v.User] = true, seq
			large = large || (group && len(members) > 4)
		case *eventspb.MemberRemoved:
			delete(members, v.User)
			delete(m.joined, v.User)
		case *eventspb.MessageSent:
			m.msgs[seq] = modelMsg{v.Sender, v.ClientMsgId}
			m.order = append(m.order, seq)
			if !large {
				for u := range members {
					m.delivered[u] = append(m.delivered[u], seq)
				}
			}
		case *eventspb.MessageRecalled:
			m.recalled[v.Seq] = true
		}
	}
	return m
}

func (m *convModel) deliveredTo(user string) []uint64 { return m.delivered[user] }

// unreadByRule is the rule of docs/actors.md, read as written: "messages
// from others, not recalled, after the read marker, after the member
// joined, and after the member's own latest message". Each clause is a
// separate filter over every message of the stream.
func (m *convModel) unreadByRule(user string, read uint64) uint64 {
	joined, ok := m.joined[user]
	if !ok {
		return 0
	}
	var ownLatest uint64
	for seq, msg := range m.msgs {
		if msg.sender == user {
			ownLatest = max(ownLatest, seq)
		}
	}
	var n uint64
	for seq, msg := range m.msgs {
		fromOthers := msg.sender != user
		notRecalled := !m.recalled[seq]
		afterRead := seq > read
		afterJoining := seq > joined
		afterOwn := seq > ownLatest
		if fromOthers && notRecalled && afterRead && afterJoining && afterOwn {
			n++
		}
	}
	return n
}

// ownDelivered is the seq of the user's latest own message that reached
// their inbox (write-fanout): a device that sees it has read what came
// before, so the read marker moves there.
func (m *convModel) ownDelivered(user string) uint64 {
	var seq uint64
	for _, s := range m.delivered[user] {
		if m.msgs[s].sender == user {
			seq = max(seq, s)
		}
	}
	return seq
}

// readStoredInbox reads inbox-<user> straight from the store.
func readStoredInbox(t *testing.T, store events.Store, user string) []events.RecordedEvent {
	t.Helper()
	var out []events.RecordedEvent
	for {
		page, err := store.ReadStream(tctx(t), events.InboxStream(user), events.ReadStreamOptions{From: events.Revision(len(out)), Limit: 500})
		if errors.Is(err, events.ErrStreamNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < 500 {
			return out
		}
	}
}
