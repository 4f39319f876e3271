package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// A history checker for crash tests: a recorder of every operation a
// client started and of the server's answer when it acknowledged one, and
// a check that reads the store afterwards and holds it against them.
//
// The rule of use: an operation whose outcome is unknown (the server died
// under it) is retried, with the same ids, until it is acknowledged. Every
// operation is then acknowledged, so everything the store holds must stem
// from an acknowledged operation, and every acknowledged operation must be
// in the store exactly once.

type opKind int

const (
	opSend opKind = iota
	opRecall
	opRead
	opMember
)

func (k opKind) String() string { return [...]string{"send", "recall", "read", "member"}[k] }

// op is one operation of a user's device.
type op struct {
	kind   opKind
	user   string
	conv   string // the conversation (a direct one's id too, by actors.DirectID)
	to     string // send: the direct peer, when sent with To
	cid    string // send: the client message id
	seq    uint64 // recall: the message recalled; read: the seq asked for
	member string // member: who is added or removed
	add    bool   // member: add (or remove)

	acked   bool
	retried bool // the first try's outcome was unknown
	began   time.Time
	ackedAt time.Time
	answer  uint64 // send: seq; read: the resulting marker; recall, member: the seq answered
	dup     bool   // send: answered as a duplicate
}

func (o *op) String() string {
	return fmt.Sprintf("%s by %s in %s (cid %q seq %d member %q add %v)", o.kind, o.user, o.conv, o.cid, o.seq, o.member, o.add)
}

// do runs o on c and records the answer if there is one.
func (o *op) do(ctx context.Context, h *history, c *client.Client) error {
	var answer uint64
	var dup bool
	var err error
	switch o.kind {
	case opSend:
		m := client.Message{Conversation: o.conv, ClientMsgID: o.cid, Text: o.cid}
		if o.to != "" {
			m = client.Message{To: o.to, ClientMsgID: o.cid, Text: o.cid}
		}
		var r *wire.Sent
		if r, err = c.Send(ctx, m); err == nil {
			answer, dup = r.GetSeq(), r.GetDuplicate()
			if r.GetConversation() != o.conv {
				return fmt.Errorf("%v landed in %s", o, r.GetConversation())
			}
		}
	case opRecall:
		answer, err = c.Recall(ctx, o.conv, o.seq)
	case opRead:
		answer, err = c.MarkRead(ctx, o.conv, o.seq)
	case opMember:
		if o.add {
			answer, err = c.AddMember(ctx, o.conv, o.member)
		} else {
			answer, err = c.RemoveMember(ctx, o.conv, o.member)
		}
	}
	if err != nil {
		return err
	}
	h.ack(o, answer, dup)
	return nil
}

// refused says whether err is the server refusing an operation (a bug
// here: the workload only does what the rules allow), rather than the
// server or the connection going away.
func refused(err error) bool {
	code := client.CodeOf(err)
	return code != 0 && code != client.CodeUnavailable && code < 100
}

// history is the recorder.
type history struct {
	mu  sync.Mutex
	ops []*op
}

func (h *history) begin(o *op) *op {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.began = time.Now()
	h.ops = append(h.ops, o)
	return o
}

func (h *history) ack(o *op, answer uint64, dup bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.acked, o.answer, o.dup, o.ackedAt = true, answer, dup, time.Now()
}

// across returns how many operations of the users in who were begun
// before at and acknowledged after it, and the longest of them.
func (h *history) across(at time.Time, who func(user string) bool) (n int, longest time.Duration, which *op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.ops {
		if o.acked && o.began.Before(at) && o.ackedAt.After(at) && who(o.user) {
			n++
			if d := o.ackedAt.Sub(o.began); d > longest {
				longest, which = d, o
			}
		}
	}
	return n, longest, which
}

// pending returns the operations not acknowledged yet, and marks them
// retried.
func (h *history) pending() []*op {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*op
	for _, o := range h.ops {
		if !o.acked {
			o.retried = true
			out = append(out, o)
		}
	}
	return out
}

// snapshot returns the operations so far (their fields are read under the
// lock, so callers use it only once the workers have stopped).
func (h *history) snapshot() []*op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// ackedCount is how many operations have been acknowledged.
func (h *history) ackedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, o := range h.ops {
		if o.acked {
			n++
		}
	}
	return n
}

// lastSeq is the highest seq acknowledged in conv so far (0: none known).
func (h *history) lastSeq(conv string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n uint64
	for _, o := range h.ops {
		if o.acked && o.conv == conv && o.kind != opRead {
			n = max(n, o.answer)
		}
	}
	return n
}

// recallable returns the latest acknowledged message of user that no
// recall has been started for yet.
func (h *history) recallable(user string) *op {
	h.mu.Lock()
	defer h.mu.Unlock()
	recalled := map[string]bool{}
	for _, o := range h.ops {
		if o.kind == opRecall {
			recalled[fmt.Sprint(o.conv, "/", o.seq)] = true
		}
	}
	for i := len(h.ops) - 1; i >= 0; i-- {
		o := h.ops[i]
		if o.kind == opSend && o.user == user && o.acked && !recalled[fmt.Sprint(o.conv, "/", o.answer)] {
			return o
		}
	}
	return nil
}

// device is one device of a user and every sync entry it applied, in order.
type device struct {
	user, name string
	mu         sync.Mutex
	applied    []client.Entry
}

func (d *device) last() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.applied) == 0 {
		return 0
	}
	return d.applied[len(d.applied)-1].UserSeq
}

// consume applies c's entries until c is closed. A device's timeline is
// gapless from 1, whatever connections it took.
func (d *device) consume(t *testing.T, c *client.Client) {
	for e := range c.Entries() {
		d.mu.Lock()
		if want := uint64(len(d.applied)) + 1; e.UserSeq != want {
			t.Errorf("%s/%s applied user seq %d, want %d", d.user, d.name, e.UserSeq, want)
		}
		d.applied = append(d.applied, e)
		d.mu.Unlock()
	}
}

// ---- the check ----

// convLog is a conversation stream read from the store: events[i] is seq i+1.
type convLog struct {
	id     string
	events []proto.Message
}

// inboxKey names an inbox entry that stems from a conversation event.
type inboxKey struct {
	typ string
	seq uint64
}

// expectedInboxes derives, from the conversation alone, which inbox
// entries each user must have from it, in order: their own joining at
// creation; everyone's joining and leaving while they are members (and
// their own leaving); every message and recall while they are members.
func (l *convLog) expectedInboxes() map[string][]inboxKey {
	out := map[string][]inboxKey{}
	members := map[string]bool{}
	all := func(typ string, seq uint64) {
		for u := range members {
			out[u] = append(out[u], inboxKey{typ, seq})
		}
	}
	for i, ev := range l.events {
		seq := uint64(i) + 1
		switch e := ev.(type) {
		case *eventspb.ConversationCreated:
			for _, u := range e.Members {
				members[u] = true
				out[u] = append(out[u], inboxKey{"MembershipChanged", seq})
			}
		case *eventspb.MemberAdded:
			members[e.User] = true
			all("MembershipChanged", seq)
		case *eventspb.MemberRemoved:
			all("MembershipChanged", seq)
			delete(members, e.User)
		case *eventspb.MessageSent:
			all("MessagePointer", seq)
		case *eventspb.MessageRecalled:
			all("RecallNotice", seq)
		}
	}
	return out
}

// memberAtEnd says whether user is a member after the last event, and the
// seq of their latest joining.
func (l *convLog) memberAtEnd(user string) (bool, uint64) {
	in, joined := false, uint64(0)
	for i, ev := range l.events {
		seq := uint64(i) + 1
		switch e := ev.(type) {
		case *eventspb.ConversationCreated:
			if slices.Contains(e.Members, user) {
				in, joined = true, seq
			}
		case *eventspb.MemberAdded:
			if e.User == user {
				in, joined = true, seq
			}
		case *eventspb.MemberRemoved:
			if e.User == user {
				in = false
			}
		}
	}
	return in, joined
}

// unreadByRule is docs/actors.md's rule as written: messages from others,
// not recalled, after the read marker, after the member joined, and after
// the member's own latest message.
func (l *convLog) unreadByRule(user string, read uint64) uint64 {
	_, joined := l.memberAtEnd(user)
	recalled := map[uint64]bool{}
	var own uint64
	for i, ev := range l.events {
		switch e := ev.(type) {
		case *eventspb.MessageRecalled:
			recalled[e.Seq] = true
		case *eventspb.MessageSent:
			if e.Sender == user {
				own = uint64(i) + 1
			}
		}
	}
	var n uint64
	for i, ev := range l.events {
		seq := uint64(i) + 1
		m, ok := ev.(*eventspb.MessageSent)
		if ok && m.Sender != user && !recalled[seq] && seq > read && seq > joined && seq > own {
			n++
		}
	}
	return n
}

// ownLatest is the seq of user's latest message in the conversation.
func (l *convLog) ownLatest(user string) uint64 {
	var own uint64
	for i, ev := range l.events {
		if m, ok := ev.(*eventspb.MessageSent); ok && m.Sender == user {
			own = uint64(i) + 1
		}
	}
	return own
}

func readStream(t *testing.T, store events.Store, stream string) []events.RecordedEvent {
	t.Helper()
	var out []events.RecordedEvent
	for {
		page, err := store.ReadStream(context.Background(), stream, events.ReadStreamOptions{From: events.Revision(len(out)), Limit: 1000})
		if errors.Is(err, events.ErrStreamNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range page {
			if uint64(e.Revision) != uint64(len(out)+i) {
				t.Fatalf("%s: revision %d at position %d: gap", stream, e.Revision, len(out)+i)
			}
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out
		}
	}
}

func decodeAll(t *testing.T, recs []events.RecordedEvent) []proto.Message {
	t.Helper()
	out := make([]proto.Message, len(recs))
	for i, r := range recs {
		m, err := events.Decode(r.Type, r.Data)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		out[i] = m
	}
	return out
}

// checkConversations reads every conversation the history touched from the
// store (the server stopped) and checks the acknowledged operations
// against it. It returns the logs for the checks that follow.
func (h *history) checkConversations(t *testing.T, store events.Store) map[string]*convLog {
	t.Helper()
	ops := h.snapshot()
	logs := map[string]*convLog{}
	for _, o := range ops {
		if !o.acked {
			t.Fatalf("%v was never acknowledged", o)
		}
		if logs[o.conv] == nil {
			logs[o.conv] = &convLog{id: o.conv, events: decodeAll(t, readStream(t, store, events.ConversationStream(o.conv)))}
		}
	}
	type msgKey struct{ conv, sender, cid string }
	stored := map[msgKey]uint64{}
	recalls := map[string]int{} // conv/seq → MessageRecalled events
	for _, l := range logs {
		for i, ev := range l.events {
			seq := uint64(i) + 1
			switch e := ev.(type) {
			case *eventspb.MessageSent:
				k := msgKey{l.id, e.Sender, e.ClientMsgId}
				if prev, dup := stored[k]; dup {
					t.Fatalf("%v stored twice: at %d and %d", k, prev, seq)
				}
				stored[k] = seq
			case *eventspb.MessageRecalled:
				recalls[fmt.Sprint(l.id, "/", e.Seq)]++
			}
		}
	}
	sends, acks := 0, map[msgKey]bool{}
	recalled := map[string]bool{}
	memberOps := map[string][]*op{} // conv/member → acknowledged changes, in order
	for _, o := range ops {
		l := logs[o.conv]
		switch o.kind {
		case opSend:
			k := msgKey{o.conv, o.user, o.cid}
			if got, ok := stored[k]; !ok || got != o.answer {
				t.Fatalf("%v acknowledged at seq %d, stored at %d (%v)", o, o.answer, got, ok)
			}
			if !acks[k] {
				sends++
				acks[k] = true
			}
		case opRecall:
			k := fmt.Sprint(o.conv, "/", o.seq)
			if recalls[k] != 1 {
				t.Fatalf("%v acknowledged; the stream recalls it %d times", o, recalls[k])
			}
			recalled[k] = true
			if !o.retried {
				if e, ok := l.events[o.answer-1].(*eventspb.MessageRecalled); !ok || e.Seq != o.seq {
					t.Fatalf("%v answered seq %d, which holds %T %v", o, o.answer, l.events[o.answer-1], l.events[o.answer-1])
				}
			}
		case opMember:
			k := o.conv + "/" + o.member
			memberOps[k] = append(memberOps[k], o)
			if !o.retried {
				var got proto.Message = l.events[o.answer-1]
				if a, ok := got.(*eventspb.MemberAdded); o.add && (!ok || a.User != o.member) {
					t.Fatalf("%v answered seq %d, which holds %T %v", o, o.answer, got, got)
				}
				if r, ok := got.(*eventspb.MemberRemoved); !o.add && (!ok || r.User != o.member) {
					t.Fatalf("%v answered seq %d, which holds %T %v", o, o.answer, got, got)
				}
			}
		case opRead:
			if o.answer < o.seq || o.answer > uint64(len(l.events)) {
				t.Fatalf("%v answered marker %d (conversation ends at %d)", o, o.answer, len(l.events))
			}
		}
	}
	// Nothing stored that no one was told about.
	if len(stored) != sends {
		t.Fatalf("%d messages stored, %d sends acknowledged", len(stored), sends)
	}
	for k, n := range recalls {
		if !recalled[k] {
			t.Fatalf("message %s recalled %d times without an acknowledged recall", k, n)
		}
	}
	// Membership changes happen in the order acknowledged: adding and
	// removing alternate, and the last acknowledged one holds.
	for k, mops := range memberOps {
		conv, user, _ := strings.Cut(k, "/")
		var changes []bool
		for _, ev := range logs[conv].events {
			switch e := ev.(type) {
			case *eventspb.MemberAdded:
				if e.User == user {
					changes = append(changes, true)
				}
			case *eventspb.MemberRemoved:
				if e.User == user {
					changes = append(changes, false)
				}
			}
		}
		for i := 1; i < len(changes); i++ {
			if changes[i] == changes[i-1] {
				t.Fatalf("%s: membership changes %v do not alternate", k, changes)
			}
		}
		if in, _ := logs[conv].memberAtEnd(user); in != mops[len(mops)-1].add {
			t.Fatalf("%s: member at the end %v; the last acknowledged change said %v", k, in, mops[len(mops)-1].add)
		}
	}
	return logs
}

// expectedInbox merges what each conversation owes user into a set of
// (conversation, type, seq) and the order within each conversation.
func expectedInbox(logs map[string]*convLog, user string) map[string][]inboxKey {
	out := map[string][]inboxKey{}
	for id, l := range logs {
		if keys := l.expectedInboxes()[user]; len(keys) > 0 {
			out[id] = keys
		}
	}
	return out
}

// inboxKeys sorts a timeline's entries by conversation (read markers apart).
func inboxKeys(t *testing.T, msgs []proto.Message) map[string][]inboxKey {
	t.Helper()
	out := map[string][]inboxKey{}
	for _, m := range msgs {
		switch e := m.(type) {
		case *eventspb.MessagePointer:
			out[e.ConversationId] = append(out[e.ConversationId], inboxKey{"MessagePointer", e.Seq})
		case *eventspb.MembershipChanged:
			out[e.ConversationId] = append(out[e.ConversationId], inboxKey{"MembershipChanged", e.Seq})
		case *eventspb.RecallNotice:
			out[e.ConversationId] = append(out[e.ConversationId], inboxKey{"RecallNotice", e.Seq})
		case *eventspb.ReadMarkerMoved:
		default:
			t.Fatalf("unexpected inbox entry %T", m)
		}
	}
	return out
}

// checkInbox holds a user's stored sync timeline against what the
// conversations owe them (each entry once, in order, nothing else), and
// each of their devices against the timeline (each applied exactly it).
func checkInbox(t *testing.T, store events.Store, logs map[string]*convLog, user string, devices []*device) {
	t.Helper()
	recs := readStream(t, store, events.InboxStream(user)) // gapless user seqs
	msgs := decodeAll(t, recs)
	got, want := inboxKeys(t, msgs), expectedInbox(logs, user)
	for conv := range logs {
		if !slices.Equal(got[conv], want[conv]) {
			t.Fatalf("%s's timeline from %s:\n got %v\nwant %v", user, conv, got[conv], want[conv])
		}
	}
	for _, d := range devices {
		if len(d.applied) != len(recs) {
			t.Fatalf("%s/%s applied %d entries; the timeline holds %d", d.user, d.name, len(d.applied), len(recs))
		}
		for i, e := range d.applied {
			if e.UserSeq != uint64(i)+1 || e.Type != recs[i].Type || !proto.Equal(e.Message, msgs[i]) {
				t.Fatalf("%s/%s's entry %d: %d %s %v; stored: %s %v", d.user, d.name, i, e.UserSeq, e.Type, e.Message, recs[i].Type, msgs[i])
			}
		}
	}
}

// checkRecallsReached: every recall reached every device of every user who
// was a member when it happened, offline devices included.
func checkRecallsReached(t *testing.T, logs map[string]*convLog, devices []*device) int {
	t.Helper()
	n := 0
	for id, l := range logs {
		owed := l.expectedInboxes()
		for _, d := range devices {
			have := map[uint64]bool{}
			for _, e := range d.applied {
				if r, ok := e.Message.(*eventspb.RecallNotice); ok && r.ConversationId == id {
					have[r.Seq] = true
				}
			}
			for _, k := range owed[d.user] {
				if k.typ == "RecallNotice" {
					if !have[k.seq] {
						t.Fatalf("the recall at %s/%d did not reach %s/%s", id, k.seq, d.user, d.name)
					}
					n++
				}
			}
		}
	}
	return n
}

// checkList holds a user's conversation list against the logs: exactly
// the conversations they are a member of, unread counts by the documented
// rule from the acknowledged read markers, and the read markers.
func (h *history) checkList(t *testing.T, logs map[string]*convLog, user string, list *eventspb.ConversationList) {
	t.Helper()
	readTo := map[string]uint64{}
	for _, o := range h.snapshot() {
		if o.kind == opRead && o.user == user {
			readTo[o.conv] = max(readTo[o.conv], o.answer)
		}
	}
	var listed, want []string
	for _, c := range list.Conversations {
		listed = append(listed, c.ConversationId)
		l := logs[c.ConversationId]
		if l == nil {
			t.Fatalf("%s's list names %s, which the history never touched", user, c.ConversationId)
		}
		read := readTo[c.ConversationId]
		if w := l.unreadByRule(user, read); c.Unread != w {
			t.Fatalf("%s's unread in %s: %d, want %d (read to %d)", user, c.ConversationId, c.Unread, w, read)
		}
		if w := max(read, l.ownLatest(user)); c.LastReadSeq != w {
			t.Fatalf("%s's read marker in %s: %d, want %d", user, c.ConversationId, c.LastReadSeq, w)
		}
		if c.LastSeq != uint64(len(l.events)) {
			t.Fatalf("%s's line for %s ends at %d; the stream at %d", user, c.ConversationId, c.LastSeq, len(l.events))
		}
	}
	for id, l := range logs {
		if in, _ := l.memberAtEnd(user); in {
			want = append(want, id)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("%s's list: %v, want %v", user, listed, want)
	}
}

// directID is the id of a direct conversation, as the server makes it.
func directID(a, b string) string { return actors.DirectID(a, b) }

// withTimeout runs f with a context of d.
func withTimeout(d time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return f(ctx)
}
