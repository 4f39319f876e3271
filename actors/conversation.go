package actors

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// convState is the state of one conversation, rebuilt by evolveConv from
// its stream conv-<id>. A conversation's seq of an event is its stream
// revision + 1: gapless from 1.
type convState struct {
	id           string
	kind         eventspb.ConversationKind
	name         string
	creator      string
	members      map[string]bool   // member → admin
	joined       map[string]uint64 // member → seq of their (latest) joining
	lastSeq      uint64
	latestSeq    uint64 // seq of the latest message
	latest       *eventspb.MessageSent
	lastActivity int64  // unix ms of the latest event
	large        bool   // read-fanout since members first exceeded the threshold
	largeSince   uint64 // the seq at which it became large

	msgs     []msgRef            // every message, by seq: "is it a message", unread counts
	recent   map[uint64]*msgInfo // messages still inside the recall/edit window
	order    []uint64            // seqs of recent, oldest first
	recalled map[uint64]uint64   // recalled message → seq of its recall (0: from an older snapshot)
	edited   map[uint64]edition  // edited message → its latest edit

	clientIDs   map[string]uint64 // sender\x00client id → seq (dedup)
	clientOrder []string          // FIFO bounding clientIDs
}

type msgRef struct {
	seq       uint64
	sender    string
	uncounted bool // its kind does not count as unread
}

// edition is the latest edit of a message.
type edition struct {
	body []byte
	seq  uint64 // of the edit (0: from an older snapshot)
}

type msgInfo struct {
	sender  string
	at      int64
	kind    string // for the kind's validation of an edit
	replyTo uint64
}

func newConvState(id string) *convState {
	return &convState{
		id:        id,
		members:   map[string]bool{},
		joined:    map[string]uint64{},
		recent:    map[uint64]*msgInfo{},
		recalled:  map[uint64]uint64{},
		edited:    map[uint64]edition{},
		clientIDs: map[string]uint64{},
	}
}

func (s *convState) exists() bool { return s.lastSeq > 0 }

func (s *convState) isMember(u string) bool { _, ok := s.members[u]; return ok }

// readFanout says whether messages are fanned out by reading: a group
// becomes large when its members first exceed the threshold and stays so,
// so that unread counts of a conversation always come from one place (the
// inbox while small, the conversation once large).
func (s *convState) readFanout(Limits) bool { return s.large }

func (s *convState) checkLarge(lim Limits, seq uint64) {
	if !s.large && s.kind == eventspb.ConversationKind_GROUP && len(s.members) > lim.ReadFanoutThreshold {
		s.large, s.largeSince = true, seq
	}
}

func (s *convState) message(seq uint64) (msgRef, bool) {
	i := sort.Search(len(s.msgs), func(i int) bool { return s.msgs[i].seq >= seq })
	if i < len(s.msgs) && s.msgs[i].seq == seq {
		return s.msgs[i], true
	}
	return msgRef{}, false
}

// unreadAfter counts a member's unread messages: those from others, not
// recalled, after their read marker, after they joined and after their own
// latest message (sending implies having read what came before) — the
// same rule the user core applies to the inbox of write-fanout groups.
func (s *convState) unreadAfter(user string, after uint64) uint64 {
	after = max(after, s.joined[user])
	var n uint64
	for i := len(s.msgs) - 1; i >= 0 && s.msgs[i].seq > after; i-- {
		m := s.msgs[i]
		if m.uncounted {
			continue // neither unread nor a sign of having read
		}
		if m.sender == user {
			break
		}
		if _, recalled := s.recalled[m.seq]; !recalled {
			n++
		}
	}
	return n
}

func clientKey(sender, id string) string { return sender + "\x00" + id }

// decideConv checks a command against the state and returns the events that
// carry it out (possibly none, for an idempotent repeat) and the reply to
// give once they are durable. It does no I/O and reads no clock but now.
func decideConv(s *convState, cmd proto.Message, now time.Time, lim Limits) ([]proto.Message, *Written, *Failure) {
	at := now.UnixMilli()
	written := func(evs ...proto.Message) ([]proto.Message, *Written, *Failure) {
		return evs, &Written{Seq: s.lastSeq + uint64(len(evs)), ConversationId: s.id}, nil
	}
	duplicate := func(seq uint64) ([]proto.Message, *Written, *Failure) {
		return nil, &Written{Seq: seq, Duplicate: true, ConversationId: s.id}, nil
	}
	switch c := cmd.(type) {
	case *CreateConversation:
		return decideCreate(s, c, at, lim)

	case *ChangeMember:
		if !s.exists() || !s.isMember(c.Actor) {
			return nil, nil, notFound(s.id)
		}
		if err := ValidateID("user", c.User); err != nil {
			return nil, nil, err.(*Failure)
		}
		if s.kind == eventspb.ConversationKind_DIRECT {
			return nil, nil, fail(Code_INVALID, "the members of a direct conversation cannot change")
		}
		self := c.User == c.Actor
		if !(s.members[c.Actor] || (self && !c.Add)) {
			return nil, nil, fail(Code_FORBIDDEN, "only a group admin adds or removes others")
		}
		if c.Add {
			if s.isMember(c.User) {
				return duplicate(s.lastSeq)
			}
			if len(s.members) >= lim.MaxGroupSize {
				return nil, nil, fail(Code_TOO_LARGE, "group has the maximum of %d members", lim.MaxGroupSize)
			}
			return written(&eventspb.MemberAdded{User: c.User, By: c.Actor, AtUnixMs: at})
		}
		if !s.isMember(c.User) {
			return duplicate(s.lastSeq)
		}
		return written(&eventspb.MemberRemoved{User: c.User, By: c.Actor, AtUnixMs: at})

	case *SendMessage:
		if c.ToUser != "" {
			return decideSendDirect(s, c, at, lim)
		}
		return decideSend(s, c, at, lim)

	case *RecallMessage:
		if f := s.checkAuthorOrAdmin(c.Actor, c.Seq, "recalled"); f != nil {
			return nil, nil, f
		}
		if seq, ok := s.recalled[c.Seq]; ok {
			// A retry, even after the window: the same answer as the recall.
			return duplicate(s.seqOr(seq))
		}
		if _, f := s.checkWindow(c.Seq, lim.RecallWindow, at, "recalled"); f != nil {
			return nil, nil, f
		}
		return written(&eventspb.MessageRecalled{Seq: c.Seq, By: c.Actor, AtUnixMs: at})

	case *EditMessage:
		if f := s.checkAuthorOrAdmin(c.Actor, c.Seq, "edited"); f != nil {
			return nil, nil, f
		}
		if _, ok := s.recalled[c.Seq]; ok {
			return nil, nil, fail(Code_INVALID, "message %d was recalled", c.Seq)
		}
		if len(c.Body) == 0 {
			return nil, nil, fail(Code_INVALID, "edited body is empty")
		}
		if len(c.Body) > lim.MaxBodySize {
			return nil, nil, fail(Code_TOO_LARGE, "edited body of %d bytes is over the limit of %d", len(c.Body), lim.MaxBodySize)
		}
		if cur, ok := s.edited[c.Seq]; ok && bytes.Equal(cur.body, c.Body) {
			// The message already reads so: a retry, even after the window,
			// gets the same answer as the edit and changes nothing.
			return duplicate(s.seqOr(cur.seq))
		}
		info, f := s.checkWindow(c.Seq, lim.EditWindow, at, "edited")
		if f != nil {
			return nil, nil, f
		}
		// The edited message keeps its kind, so the kind's rules hold for
		// its new body too.
		if rules, custom := lim.ext.kind(info.kind); custom {
			d := Draft{Kind: info.kind, Body: c.Body, conv: s.id, sender: c.Actor, edits: c.Seq, replyTo: info.replyTo}
			if f := validateKind(rules, d); f != nil {
				return nil, nil, f
			}
		}
		return written(&eventspb.MessageEdited{Seq: c.Seq, By: c.Actor, Body: c.Body, AtUnixMs: at})
	}
	return nil, nil, fail(Code_INVALID, "unknown command %T", cmd)
}

// decideSend decides a message to an existing conversation.
func decideSend(s *convState, c *SendMessage, at int64, lim Limits) ([]proto.Message, *Written, *Failure) {
	if !s.exists() || (!c.System && !s.isMember(c.Sender)) {
		return nil, nil, notFound(s.id)
	}
	if c.ClientMsgId != "" {
		if seq, ok := s.clientIDs[clientKey(c.Sender, c.ClientMsgId)]; ok {
			return nil, &Written{Seq: seq, Duplicate: true, ConversationId: s.id}, nil
		}
	}
	if len(c.Body) > lim.MaxBodySize {
		return nil, nil, fail(Code_TOO_LARGE, "message body of %d bytes exceeds %d", len(c.Body), lim.MaxBodySize)
	}
	if len(c.Body) == 0 {
		return nil, nil, fail(Code_INVALID, "empty message body")
	}
	if len(c.ClientMsgId) > maxIDLen || len(c.Kind) > maxIDLen || len(c.Device) > maxIDLen {
		return nil, nil, fail(Code_INVALID, "client message id, kind or device longer than %d bytes", maxIDLen)
	}
	if c.ReplyTo != 0 {
		if _, ok := s.message(c.ReplyTo); !ok {
			return nil, nil, fail(Code_INVALID, "reply to %d: no such message", c.ReplyTo)
		}
	}
	if len(c.Mentions) > lim.MaxMentions {
		return nil, nil, fail(Code_TOO_LARGE, "%d mentions exceed %d", len(c.Mentions), lim.MaxMentions)
	}
	for i, m := range c.Mentions {
		if !s.isMember(m) {
			return nil, nil, fail(Code_INVALID, "mention of %q, who is not a member", m)
		}
		if slices.Contains(c.Mentions[:i], m) {
			return nil, nil, fail(Code_INVALID, "%q is mentioned twice", m)
		}
	}
	if f := checkMetadata(c.Metadata); f != nil {
		return nil, nil, f
	}
	kind := c.Kind
	if kind == "" {
		kind = "text"
	}
	rules, custom := lim.ext.kind(kind)
	if custom {
		if f := validateKind(rules, *draftOf(s.id, c)); f != nil {
			return nil, nil, f
		}
	}
	return []proto.Message{&eventspb.MessageSent{
		Sender: c.Sender, SenderDevice: c.Device, ClientMsgId: c.ClientMsgId, Kind: kind,
		Body: c.Body, ReplyTo: c.ReplyTo, Mentions: c.Mentions, AtUnixMs: at, Metadata: c.Metadata,
		NotUnread: rules.NotUnread, NoBump: rules.NoBump, NoPush: rules.NoPush,
	}}, &Written{Seq: s.lastSeq + 1, ConversationId: s.id}, nil
}

// decideSendDirect decides a message to the direct conversation of its
// sender and c.ToUser. While the conversation does not exist, its creation
// and the message are decided together, on the state the creation would
// leave: both are written or, when either is refused, neither is, so a
// refused first message leaves no empty conversation behind. A retry with
// the same client id finds the stored message (decideSend's dedup).
func decideSendDirect(s *convState, c *SendMessage, at int64, lim Limits) ([]proto.Message, *Written, *Failure) {
	if err := ValidateID("user", c.Sender); err != nil {
		return nil, nil, err.(*Failure)
	}
	if err := ValidateID("user", c.ToUser); err != nil {
		return nil, nil, err.(*Failure)
	}
	if c.Sender == c.ToUser {
		return nil, nil, fail(Code_INVALID, "a direct conversation needs two different users")
	}
	if s.id != DirectID(c.Sender, c.ToUser) {
		return nil, nil, fail(Code_INVALID, "direct conversation id must be %q", DirectID(c.Sender, c.ToUser))
	}
	if s.exists() {
		return decideSend(s, c, at, lim)
	}
	created, _, f := decideCreate(s, &CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: c.Sender, Members: []string{c.ToUser}}, at, lim)
	if f != nil {
		return nil, nil, f
	}
	next := newConvState(s.id) // s stays as it is: decide changes nothing
	for i, e := range created {
		evolveConv(next, uint64(i+1), e, lim)
	}
	sent, w, f := decideSend(next, c, at, lim)
	if f != nil {
		return nil, nil, f
	}
	return append(created, sent...), w, nil
}

func decideCreate(s *convState, c *CreateConversation, at int64, lim Limits) ([]proto.Message, *Written, *Failure) {
	if err := ValidateID("user", c.Creator); err != nil {
		return nil, nil, err.(*Failure)
	}
	members := []string{c.Creator}
	seen := map[string]bool{c.Creator: true}
	for _, m := range c.Members {
		if err := ValidateID("user", m); err != nil {
			return nil, nil, err.(*Failure)
		}
		if !seen[m] {
			seen[m] = true
			members = append(members, m)
		}
	}
	switch c.Kind {
	case eventspb.ConversationKind_DIRECT:
		if len(members) != 2 {
			return nil, nil, fail(Code_INVALID, "a direct conversation has exactly two members")
		}
		if s.id != DirectID(members[0], members[1]) {
			return nil, nil, fail(Code_INVALID, "direct conversation id must be %q", DirectID(members[0], members[1]))
		}
		if s.exists() {
			// Either side opening it again finds the same conversation.
			return nil, &Written{Seq: s.lastSeq, Duplicate: true, ConversationId: s.id}, nil
		}
	case eventspb.ConversationKind_GROUP:
		if len(c.Name) > lim.MaxNameLen {
			return nil, nil, fail(Code_INVALID, "group name of %d bytes exceeds %d", len(c.Name), lim.MaxNameLen)
		}
		if len(members) > lim.MaxGroupSize {
			return nil, nil, fail(Code_TOO_LARGE, "%d members exceed the maximum of %d", len(members), lim.MaxGroupSize)
		}
		if s.exists() {
			if s.kind == eventspb.ConversationKind_GROUP && s.creator == c.Creator {
				return nil, &Written{Seq: s.lastSeq, Duplicate: true, ConversationId: s.id}, nil // a retried create
			}
			// Anyone else gets the answer of every refused id: whether the
			// group exists is not theirs to learn.
			return nil, nil, idNotAvailable(s.id)
		}
	default:
		return nil, nil, fail(Code_INVALID, "unknown conversation kind %v", c.Kind)
	}
	// A large group's member list takes several events (an event holds at
	// most 1 MiB); the first one already holds more than the read-fanout
	// threshold, so that every member learns the same fanout mode.
	chunks := chunkMembers(members, lim.ReadFanoutThreshold+1, memberChunkBytes)
	evs := []proto.Message{&eventspb.ConversationCreated{ConversationId: s.id, Kind: c.Kind, Name: c.Name, Creator: c.Creator, Members: chunks[0], AtUnixMs: at}}
	for _, more := range chunks[1:] {
		evs = append(evs, &eventspb.MembersJoined{Users: more, By: c.Creator, AtUnixMs: at})
	}
	return evs, &Written{Seq: uint64(len(evs)), ConversationId: s.id}, nil
}

// memberChunkBytes bounds the member ids of one creation event.
const memberChunkBytes = 512 << 10

// chunkMembers splits ids into chunks of at most maxBytes of ids each,
// except that the first one holds at least minFirst of them.
func chunkMembers(ids []string, minFirst, maxBytes int) [][]string {
	var out [][]string
	start, size := 0, 0
	for i, id := range ids {
		if i > start && size+len(id)+2 > maxBytes && (len(out) > 0 || i-start >= minFirst) {
			out = append(out, ids[start:i])
			start, size = i, 0
		}
		size += len(id) + 2
	}
	return append(out, ids[start:])
}

// checkAuthorOrAdmin allows the sender of message seq, or a group admin,
// within window after it was sent.
func (s *convState) checkAuthorOrAdmin(actor string, seq uint64, what string) *Failure {
	if !s.exists() || !s.isMember(actor) {
		return notFound(s.id)
	}
	ref, ok := s.message(seq)
	if !ok {
		return fail(Code_INVALID, "seq %d is not a message", seq)
	}
	admin := s.kind == eventspb.ConversationKind_GROUP && s.members[actor]
	if ref.sender != actor && !admin {
		return fail(Code_FORBIDDEN, "only the sender or a group admin may have message %d %s", seq, what)
	}
	return nil
}

// seqOr is seq, or for what an older snapshot did not record, the latest.
func (s *convState) seqOr(seq uint64) uint64 {
	if seq == 0 {
		return s.lastSeq
	}
	return seq
}

// checkWindow refuses a recall or edit of message seq after window.
func (s *convState) checkWindow(seq uint64, window time.Duration, at int64, what string) (*msgInfo, *Failure) {
	info := s.recent[seq]
	if info == nil || at-info.at > window.Milliseconds() {
		return nil, fail(Code_EXPIRED, "message %d can no longer be %s (window %s)", seq, what, window)
	}
	return info, nil
}

// evolveConv applies the event stored at seq.
func evolveConv(s *convState, seq uint64, ev proto.Message, lim Limits) {
	s.lastSeq = seq
	switch e := ev.(type) {
	case *eventspb.ConversationCreated:
		s.kind, s.name, s.creator = e.Kind, e.Name, e.Creator
		for _, m := range e.Members {
			s.members[m] = m == e.Creator && e.Kind == eventspb.ConversationKind_GROUP
			s.joined[m] = seq
		}
		s.checkLarge(lim, seq)
		s.lastActivity = e.AtUnixMs
	case *eventspb.MemberAdded:
		s.members[e.User] = false
		s.joined[e.User] = seq
		s.checkLarge(lim, seq)
		s.lastActivity = e.AtUnixMs
	case *eventspb.MembersJoined:
		for _, u := range e.Users {
			if _, ok := s.members[u]; !ok {
				s.members[u] = false
			}
			s.joined[u] = seq
		}
		s.checkLarge(lim, seq)
		s.lastActivity = e.AtUnixMs
	case *eventspb.MemberRemoved:
		delete(s.members, e.User)
		delete(s.joined, e.User)
		s.lastActivity = e.AtUnixMs
	case *eventspb.MessageSent:
		s.msgs = append(s.msgs, msgRef{seq: seq, sender: e.Sender, uncounted: e.NotUnread})
		if !e.NoBump {
			s.latestSeq, s.latest, s.lastActivity = seq, e, e.AtUnixMs
		}
		s.recent[seq] = &msgInfo{sender: e.Sender, at: e.AtUnixMs, kind: e.Kind, replyTo: e.ReplyTo}
		s.order = append(s.order, seq)
		s.forgetOld(e.AtUnixMs, max(lim.RecallWindow, lim.EditWindow))
		if e.ClientMsgId != "" {
			k := clientKey(e.Sender, e.ClientMsgId)
			s.clientIDs[k] = seq
			s.clientOrder = append(s.clientOrder, k)
			if len(s.clientOrder) > lim.DedupWindow {
				delete(s.clientIDs, s.clientOrder[0])
				s.clientOrder = s.clientOrder[1:]
			}
		}
	case *eventspb.MessageRecalled:
		s.recalled[e.Seq] = seq
		delete(s.edited, e.Seq)
		s.lastActivity = e.AtUnixMs
	case *eventspb.MessageEdited:
		s.edited[e.Seq] = edition{body: e.Body, seq: seq}
		s.lastActivity = e.AtUnixMs
	}
}

// forgetOld drops window bookkeeping of messages older than the longest
// window, oldest first (the map stays as small as the traffic of that
// window, and the cost per message is constant).
func (s *convState) forgetOld(now int64, window time.Duration) {
	i := 0
	for ; i < len(s.order); i++ {
		m := s.recent[s.order[i]]
		if m != nil && now-m.at <= window.Milliseconds() {
			break
		}
		delete(s.recent, s.order[i])
	}
	s.order = s.order[i:]
}

// recipients says who receives the fanout of the event at seq, and as what
// inbox entry; state is the conversation after the event was applied.
func recipients(s *convState, seq uint64, ev proto.Message, lim Limits) map[string]*InboxItem {
	out := map[string]*InboxItem{}
	item := func(m proto.Message) *InboxItem {
		data, _ := proto.Marshal(m)
		return &InboxItem{Type: events.TypeOf(m), Data: data, ConvSeq: seq}
	}
	everyone := func(m proto.Message) {
		it := item(m)
		for u := range s.members {
			out[u] = it
		}
	}
	membership := func(user string, added bool, by string) *eventspb.MembershipChanged {
		return &eventspb.MembershipChanged{ConversationId: s.id, Seq: seq, User: user, Added: added, By: by, Kind: s.kind, Name: s.name, ReadFanout: s.readFanout(lim)}
	}
	switch e := ev.(type) {
	case *eventspb.ConversationCreated:
		for u := range s.members {
			out[u] = item(membership(u, true, e.Creator))
		}
	case *eventspb.MembersJoined:
		for _, u := range e.Users {
			out[u] = item(membership(u, true, e.By))
		}
	case *eventspb.MemberAdded:
		if s.readFanout(lim) && s.largeSince < seq {
			// Telling every member of a large group of every change would
			// cost members² entries: only the one concerned is told; the
			// others see the members in the conversation's info.
			out[e.User] = item(membership(e.User, true, e.By))
			break
		}
		everyone(membership(e.User, true, e.By))
	case *eventspb.MemberRemoved:
		if !s.readFanout(lim) {
			everyone(membership(e.User, false, e.By))
		}
		out[e.User] = item(membership(e.User, false, e.By)) // the one who left learns it too
	case *eventspb.MessageSent:
		if s.readFanout(lim) {
			return out // members pull the timeline; the conversation list asks the grain
		}
		p := &eventspb.MessagePointer{ConversationId: s.id, Seq: seq, Sender: e.Sender, NotUnread: e.NotUnread, NoBump: e.NoBump, NoPush: e.NoPush}
		if len(e.Body) <= lim.InlineMaxSize {
			p.Message = e
		}
		everyone(p)
	case *eventspb.MessageRecalled:
		everyone(&eventspb.RecallNotice{ConversationId: s.id, Seq: seq, RecalledSeq: e.Seq, By: e.By})
	case *eventspb.MessageEdited:
		everyone(&eventspb.EditNotice{ConversationId: s.id, Seq: seq, EditedSeq: e.Seq, By: e.By, Body: e.Body})
	}
	return out
}

// snapshot renders the state as a ConvSnapshot (sharing nothing the state
// mutates later). It holds per member their admin flag and joining seq,
// per message its seq and sender (for unread counts and "is it a
// message"), the recall/edit window, recalled seqs, edited bodies and the
// client-id dedup window: everything decideConv and the readers need.
func (s *convState) snapshot() *ConvSnapshot {
	out := &ConvSnapshot{
		Kind: s.kind, Name: s.name, Creator: s.creator,
		LatestSeq: s.latestSeq, Latest: s.latest, LastActivity: s.lastActivity, Large: s.large, LargeSince: s.largeSince,
	}
	out.Members = make([]string, 0, len(s.members))
	for u := range s.members {
		out.Members = append(out.Members, u)
	}
	sortStrings(out.Members)
	out.Joined = make([]uint64, len(out.Members))
	for i, u := range out.Members {
		out.Joined[i] = s.joined[u]
		if s.members[u] {
			out.Admins = append(out.Admins, u)
		}
	}
	senders := map[string]uint32{}
	out.MsgSeqs = make([]uint64, len(s.msgs))
	out.MsgSenders = make([]uint32, len(s.msgs))
	for i, m := range s.msgs {
		idx, ok := senders[m.sender]
		if !ok {
			idx = uint32(len(out.Senders))
			senders[m.sender] = idx
			out.Senders = append(out.Senders, m.sender)
		}
		out.MsgSeqs[i], out.MsgSenders[i] = m.seq, idx
		if m.uncounted {
			out.Uncounted = append(out.Uncounted, m.seq)
		}
	}
	for _, seq := range s.order {
		if m := s.recent[seq]; m != nil {
			out.Recent = append(out.Recent, &RecentMessage{Seq: seq, Sender: m.sender, AtUnixMs: m.at, Kind: m.kind, ReplyTo: m.replyTo})
		}
	}
	for seq := range s.recalled {
		out.Recalled = append(out.Recalled, seq)
	}
	sort.Slice(out.Recalled, func(i, j int) bool { return out.Recalled[i] < out.Recalled[j] })
	out.RecallSeqs = make([]uint64, len(out.Recalled))
	for i, seq := range out.Recalled {
		out.RecallSeqs[i] = s.recalled[seq]
	}
	for seq, e := range s.edited {
		out.Edited = append(out.Edited, &EditedBody{Seq: seq, Body: e.body, EditSeq: e.seq})
	}
	sort.Slice(out.Edited, func(i, j int) bool { return out.Edited[i].Seq < out.Edited[j].Seq })
	for _, k := range s.clientOrder {
		out.ClientKeys = append(out.ClientKeys, k)
		out.ClientSeqs = append(out.ClientSeqs, s.clientIDs[k])
	}
	return out
}

// convStateFromSnapshot is the state a snapshot covering lastSeq events
// holds; it fails on a snapshot whose parallel lists do not match.
func convStateFromSnapshot(id string, lastSeq uint64, snap *ConvSnapshot) (*convState, error) {
	if len(snap.Joined) != len(snap.Members) || len(snap.MsgSenders) != len(snap.MsgSeqs) || len(snap.ClientSeqs) != len(snap.ClientKeys) ||
		(len(snap.RecallSeqs) > 0 && len(snap.RecallSeqs) != len(snap.Recalled)) {
		return nil, fmt.Errorf("conversation snapshot of %s: lists of different lengths", id)
	}
	s := newConvState(id)
	s.lastSeq = lastSeq
	s.kind, s.name, s.creator = snap.Kind, snap.Name, snap.Creator
	s.latestSeq, s.latest, s.lastActivity, s.large, s.largeSince = snap.LatestSeq, snap.Latest, snap.LastActivity, snap.Large, snap.LargeSince
	for i, u := range snap.Members {
		s.members[u] = false
		s.joined[u] = snap.Joined[i]
	}
	for _, u := range snap.Admins {
		if _, ok := s.members[u]; ok {
			s.members[u] = true
		}
	}
	s.msgs = make([]msgRef, len(snap.MsgSeqs))
	for i, seq := range snap.MsgSeqs {
		idx := snap.MsgSenders[i]
		if int(idx) >= len(snap.Senders) {
			return nil, fmt.Errorf("conversation snapshot of %s: sender %d of %d", id, idx, len(snap.Senders))
		}
		s.msgs[i] = msgRef{seq: seq, sender: snap.Senders[idx]}
	}
	for _, seq := range snap.Uncounted {
		i := sort.Search(len(s.msgs), func(i int) bool { return s.msgs[i].seq >= seq })
		if i < len(s.msgs) && s.msgs[i].seq == seq {
			s.msgs[i].uncounted = true
		}
	}
	for _, m := range snap.Recent {
		s.recent[m.Seq] = &msgInfo{sender: m.Sender, at: m.AtUnixMs, kind: m.Kind, replyTo: m.ReplyTo}
		s.order = append(s.order, m.Seq)
	}
	for i, seq := range snap.Recalled {
		s.recalled[seq] = 0
		if len(snap.RecallSeqs) > 0 {
			s.recalled[seq] = snap.RecallSeqs[i]
		}
	}
	for _, e := range snap.Edited {
		s.edited[e.Seq] = edition{body: e.Body, seq: e.EditSeq}
	}
	for i, k := range snap.ClientKeys {
		s.clientIDs[k] = snap.ClientSeqs[i]
		s.clientOrder = append(s.clientOrder, k)
	}
	return s, nil
}
