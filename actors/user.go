package actors

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events/eventspb"
)

// userState is a user's sync state, rebuilt by evolveUser from the stream
// inbox-<user>. user seq = stream revision + 1: gapless from 1.
type userState struct {
	id      string
	userSeq uint64
	convs   map[string]*convSummary
}

// convSummary is one line of the conversation list.
type convSummary struct {
	id           string
	kind         eventspb.ConversationKind
	name         string
	member       bool
	readFanout   bool
	lastConvSeq  uint64 // highest conversation seq delivered here (dedup)
	latestSeq    uint64
	latest       *eventspb.MessageSent
	lastRead     uint64
	unread       []uint64 // seqs of messages from others after lastRead (write-fanout)
	lastActivity int64
	changedAt    uint64 // user seq of the newest inbox entry about this conversation
}

func newUserState(id string) *userState {
	return &userState{id: id, convs: map[string]*convSummary{}}
}

func (s *userState) conv(id string) *convSummary {
	c := s.convs[id]
	if c == nil {
		c = &convSummary{id: id}
		s.convs[id] = c
	}
	return c
}

// decideDeliver keeps the items not delivered before: a conversation fans
// out in seq order and retries whole batches, so "seq above the last one
// seen from that conversation" is exactly "new".
func decideDeliver(s *userState, d *Deliver) []*InboxItem {
	last := uint64(0)
	if c := s.convs[d.ConversationId]; c != nil {
		last = c.lastConvSeq
	}
	var out []*InboxItem
	for _, it := range d.Items {
		if it.ConvSeq > last {
			out = append(out, it)
			last = it.ConvSeq
		}
	}
	return out
}

// decideReadTarget checks a read marker against what the reader sees of the
// conversation (the service asks the conversation first): it never passes
// the conversation's last seq.
func decideReadTarget(info *eventspb.ConversationInfo, seq uint64) *Failure {
	if seq > info.GetLastSeq() {
		return fail(Code_INVALID, "read marker %d beyond the conversation's last seq %d", seq, info.GetLastSeq())
	}
	return nil
}

// decideMarkRead moves the read marker forward only. It returns the event to
// append (none when the marker is already at or past m.Seq) and the marker
// that results, which is what the caller is told.
func decideMarkRead(s *userState, m *MarkRead) (proto.Message, uint64, *Failure) {
	c := s.convs[m.ConversationId]
	if c == nil || !c.member {
		return nil, 0, notFound(m.ConversationId)
	}
	if m.Seq <= c.lastRead {
		return nil, c.lastRead, nil // read markers only move forward: nothing to do
	}
	return &eventspb.ReadMarkerMoved{ConversationId: m.ConversationId, ReadSeq: m.Seq, Device: m.Device}, m.Seq, nil
}

// evolveUser applies the inbox entry stored at userSeq.
func evolveUser(s *userState, userSeq uint64, ev proto.Message) {
	s.userSeq = userSeq
	switch e := ev.(type) {
	case *eventspb.MembershipChanged:
		c := s.conv(e.ConversationId)
		c.lastConvSeq = max(c.lastConvSeq, e.Seq)
		c.kind, c.name, c.readFanout = e.Kind, e.Name, e.ReadFanout
		if e.User == s.id {
			c.member = e.Added
			c.unread = nil // counted anew from (re)joining, as the conversation does
		}
	case *eventspb.MessagePointer:
		c := s.conv(e.ConversationId)
		c.lastConvSeq = max(c.lastConvSeq, e.Seq)
		if !e.NoBump {
			c.latestSeq = e.Seq
			c.latest = e.Message
			if e.Message != nil {
				c.lastActivity = e.Message.AtUnixMs
			}
		}
		switch {
		case e.NotUnread:
			// Neither unread nor a sign of having read (the conversation's rule too).
		case e.Sender == s.id:
			c.readUpTo(e.Seq) // sending implies having read what came before
		case e.Seq > c.lastRead:
			c.unread = append(c.unread, e.Seq)
		}
	case *eventspb.RecallNotice:
		c := s.conv(e.ConversationId)
		c.lastConvSeq = max(c.lastConvSeq, e.Seq)
		c.unread = slices.DeleteFunc(c.unread, func(seq uint64) bool { return seq == e.RecalledSeq })
	case *eventspb.EditNotice:
		c := s.conv(e.ConversationId)
		c.lastConvSeq = max(c.lastConvSeq, e.Seq)
		if c.latestSeq == e.EditedSeq && c.latest != nil {
			edited := proto.Clone(c.latest).(*eventspb.MessageSent)
			edited.Body = e.Body
			c.latest = edited
		}
	case *eventspb.ConversationChanged:
		c := s.conv(e.ConversationId)
		c.lastConvSeq = max(c.lastConvSeq, e.Seq)
	case *eventspb.ReadMarkerMoved:
		s.conv(e.ConversationId).readUpTo(e.ReadSeq)
	}
	if c, ok := ev.(interface{ GetConversationId() string }); ok && c.GetConversationId() != "" {
		s.conv(c.GetConversationId()).changedAt = userSeq
	}
}

func (c *convSummary) readUpTo(seq uint64) {
	if seq <= c.lastRead {
		return
	}
	c.lastRead = seq
	c.unread = slices.DeleteFunc(c.unread, func(s uint64) bool { return s <= seq })
}

// summary renders the list line (unread of read-fanout groups is filled in
// by asking the conversation).
func (c *convSummary) summary() *eventspb.ConversationSummary {
	return &eventspb.ConversationSummary{
		ConversationId:     c.id,
		Kind:               c.kind,
		Name:               c.name,
		LastSeq:            c.lastConvSeq,
		LatestMessageSeq:   c.latestSeq,
		LatestMessage:      c.latest,
		Unread:             uint64(len(c.unread)),
		LastReadSeq:        c.lastRead,
		LastActivityUnixMs: c.lastActivity,
		ReadFanout:         c.readFanout,
	}
}

// deviceState is a device's acknowledged position in its user's sync
// timeline, rebuilt from device-<user>/<device>.
type deviceState struct {
	acked uint64
}

// decideAck moves the device's seq forward only and never past the user's.
func decideAck(s *deviceState, a *AckDevice, userSeq uint64) (proto.Message, *Failure) {
	if a.UserSeq > userSeq {
		return nil, fail(Code_INVALID, "ack of user seq %d beyond the newest, %d", a.UserSeq, userSeq)
	}
	if a.UserSeq <= s.acked {
		return nil, nil
	}
	return &eventspb.DeviceAcked{UserSeq: a.UserSeq}, nil
}

func evolveDevice(s *deviceState, ev proto.Message) {
	if e, ok := ev.(*eventspb.DeviceAcked); ok && e.UserSeq > s.acked {
		s.acked = e.UserSeq
	}
}

// snapshot renders the state as a UserSnapshot (sharing nothing the state
// mutates later).
func (s *userState) snapshot() *UserSnapshot {
	out := &UserSnapshot{}
	for _, c := range s.convs {
		out.Convs = append(out.Convs, &ConvLine{
			Id: c.id, Kind: c.kind, Name: c.name, Member: c.member, ReadFanout: c.readFanout,
			LastConvSeq: c.lastConvSeq, LatestSeq: c.latestSeq, Latest: c.latest,
			LastRead: c.lastRead, Unread: slices.Clone(c.unread), LastActivity: c.lastActivity,
			ChangedAt: c.changedAt,
		})
	}
	slices.SortFunc(out.Convs, func(a, b *ConvLine) int { return cmpString(a.Id, b.Id) })
	return out
}

// userStateFromSnapshot is the state a snapshot covering userSeq entries holds.
func userStateFromSnapshot(id string, userSeq uint64, snap *UserSnapshot) *userState {
	s := newUserState(id)
	s.userSeq = userSeq
	for _, l := range snap.Convs {
		s.convs[l.Id] = &convSummary{
			id: l.Id, kind: l.Kind, name: l.Name, member: l.Member, readFanout: l.ReadFanout,
			lastConvSeq: l.LastConvSeq, latestSeq: l.LatestSeq, latest: l.Latest,
			lastRead: l.LastRead, unread: l.Unread, lastActivity: l.LastActivity,
			changedAt: l.ChangedAt,
		}
	}
	return s
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
