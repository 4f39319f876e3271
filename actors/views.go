package actors

import (
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// The query rules: what a history page, a sync page and a page of the
// conversation list hold. Pure functions over what the grains read; the
// grains only do the reading.

// Page limits. Every page (history, sync, conversation list, the
// Welcome's changed list) stops at its count limit or once its items
// reach MaxPageBytes, whichever comes first, and says whether there is
// more. MaxPageBytes leaves a quarter of the 1 MiB frame for the
// envelope, so that every answer fits a frame; one item alone is always
// smaller (a message body is at most 16 KiB).
const (
	MaxPageBytes = 768 << 10

	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 1000
	DefaultSyncLimit    = 100
	MaxSyncLimit        = 1000
	DefaultListLimit    = 200
	MaxListLimit        = 1000
	// A member page: 1,000 ids of at most 128 bytes fit a frame.
	MaxMembersLimit = 1000

	// readChunk bounds one store read for a page: 32 events of at most
	// about 17 KiB, so that building a page holds little more than
	// MaxPageBytes however high its count limit.
	readChunk = 32
)

// memberPage lists, in id order, at most limit members after the id
// after (limit 0 or above MaxMembersLimit: MaxMembersLimit), and says
// whether more follow. Every admin is listed in admins, whatever the page.
func memberPage(members map[string]bool, after string, limit int) (page, admins []string, more bool) {
	if limit <= 0 || limit > MaxMembersLimit {
		limit = MaxMembersLimit
	}
	for u, admin := range members {
		if u > after {
			page = append(page, u)
		}
		if admin {
			admins = append(admins, u)
		}
	}
	slices.Sort(page)
	slices.Sort(admins)
	if len(page) > limit {
		page, more = page[:limit], true
	}
	return page, admins, more
}

// pageBudget counts a page's items against its count and byte limits.
type pageBudget struct {
	limit, maxBytes int
	n, bytes        int
}

// fits adds an item of the given encoded size if it fits; the first item
// always does.
func (b *pageBudget) fits(size int) bool {
	size += 1 + protowire.SizeVarint(uint64(size)) // the repeated field's tag and length
	if b.n >= b.limit || (b.n > 0 && b.bytes+size > b.maxBytes) {
		return false
	}
	b.n++
	b.bytes += size
	return true
}

// ---- history ----

// historyRead is where a history page starts reading conv-<id>; empty
// means the page is empty without reading (before seq 1).
func historyRead(m *GetHistory) (opts events.ReadStreamOptions, empty bool, f *Failure) {
	limit := int(m.Limit)
	if limit <= 0 || limit > MaxHistoryLimit {
		return opts, false, fail(Code_INVALID, "history limit must be 1..%d", MaxHistoryLimit)
	}
	if m.BeforeSeq > 0 && (m.AfterSeq > 0 || m.FromStart) {
		return opts, false, fail(Code_INVALID, "history takes before or after, not both")
	}
	switch {
	case m.BeforeSeq == 1:
		return opts, true, nil
	case m.BeforeSeq > 0:
		// seq s is revision s-1; "before s" starts at revision s-2
		return events.ReadStreamOptions{Direction: events.Backwards, From: events.Revision(m.BeforeSeq - 2), Limit: limit}, false, nil
	case m.AfterSeq > 0 || m.FromStart:
		// "after s" starts at revision s (seq s+1)
		return events.ReadStreamOptions{Direction: events.Forwards, From: events.Revision(m.AfterSeq), Limit: limit}, false, nil
	}
	return events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: limit}, false, nil
}

// historyView builds one history page from the events of conv-<id> in
// reading order. Only messages count; recalled ones come without body,
// edited ones with their latest body.
type historyView struct {
	out      *eventspb.History
	budget   pageBudget
	recalled map[uint64]bool
	edited   map[uint64][]byte
	done     bool // the page is full: stop reading
}

func newHistoryView(limit int, lastSeq uint64, recalled map[uint64]bool, edited map[uint64][]byte) *historyView {
	return &historyView{
		out:      &eventspb.History{LastSeq: lastSeq},
		budget:   pageBudget{limit: limit, maxBytes: MaxPageBytes},
		recalled: recalled,
		edited:   edited,
	}
}

// add takes the next event read. Once a message does not fit, the page is
// done and says there is more.
func (v *historyView) add(e events.RecordedEvent) error {
	if v.done || e.Type != "MessageSent" {
		return nil
	}
	msg, err := events.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	seq := uint64(e.Revision) + 1
	hm := &eventspb.HistoryMessage{Seq: seq, Message: msg.(*eventspb.MessageSent)}
	if v.recalled[seq] {
		hm.Recalled = true
		hm.Message.Body = nil
	} else if body, ok := v.edited[seq]; ok {
		hm.Edited = true
		hm.Message.Body = body
	}
	if !v.budget.fits(proto.Size(hm)) {
		v.done, v.out.More = true, true
		return nil
	}
	v.out.Messages = append(v.out.Messages, hm)
	return nil
}

// ---- sync ----

// syncView is the page of a sync timeline after `after` from the inbox
// events read forward from there: entries up to newest (the durable end),
// at most limit of them and MaxPageBytes in all. more says that entries
// after the page's last one exist.
func syncView(read []events.RecordedEvent, after, newest uint64, limit int) *eventspb.SyncPage {
	out := &eventspb.SyncPage{LastUserSeq: newest, FirstUserSeq: after + 1}
	b := pageBudget{limit: limit, maxBytes: MaxPageBytes}
	last := after
	for i, e := range read {
		seq := uint64(e.Revision) + 1
		if seq > newest {
			break
		}
		if i == 0 {
			out.FirstUserSeq = seq // > after+1 when retention dropped older entries
		}
		entry := &eventspb.SyncEntry{UserSeq: seq, Type: e.Type, Data: e.Data}
		if !b.fits(proto.Size(entry)) {
			break
		}
		out.Entries = append(out.Entries, entry)
		last = seq
	}
	out.More = len(out.Entries) > 0 && last < newest
	return out
}

// ---- conversation list ----

// changedSince tells whether a line of the list changed after user seq
// `after`: an inbox entry of the conversation came later, or it is a
// read-fanout group (whose messages never reach the inbox). A line whose
// change seq is unknown (0) counts as changed.
func changedSince(c *convSummary, after uint64) bool {
	return after == 0 || c.changedAt == 0 || c.changedAt > after || c.readFanout
}

// listLines are the lines a ListConversations query selects from the
// user's state (before read-fanout groups are filled in), in no order.
func listLines(s *userState, q *ListConversations) []*eventspb.ConversationSummary {
	var out []*eventspb.ConversationSummary
	for _, c := range s.convs {
		if !c.member || (q.Conversation != "" && c.id != q.Conversation) || !changedSince(c, q.ChangedAfter) {
			continue
		}
		out = append(out, c.summary())
	}
	return out
}

// listView merges what the read-fanout groups said about themselves into
// their lines, sorts the lines newest activity first (ties by id, so the
// order is total), and returns the page after q.Cursor. Sorting after the
// merge puts read-fanout groups where their activity belongs.
func listView(lines []*eventspb.ConversationSummary, infos map[string]*eventspb.ConversationInfo, q *ListConversations, userSeq uint64) (*eventspb.ConversationList, *Failure) {
	limit := int(q.Limit)
	if limit <= 0 || limit > MaxListLimit {
		return nil, fail(Code_INVALID, "list limit must be 1..%d", MaxListLimit)
	}
	var from *listPos
	if q.Cursor != "" {
		p, ok := parseListCursor(q.Cursor)
		if !ok {
			return nil, fail(Code_INVALID, "bad list cursor %q", q.Cursor)
		}
		from = &p
	}
	for _, sum := range lines {
		if info := infos[sum.ConversationId]; info != nil {
			sum.LastSeq, sum.LatestMessageSeq, sum.LatestMessage = info.LastSeq, info.LatestMessageSeq, info.LatestMessage
			sum.Unread, sum.LastActivityUnixMs = info.Unread, info.LastActivityUnixMs
		}
	}
	slices.SortFunc(lines, func(a, b *eventspb.ConversationSummary) int { return posOf(a).cmp(posOf(b)) })
	out := &eventspb.ConversationList{UserSeq: userSeq}
	b := pageBudget{limit: limit, maxBytes: MaxPageBytes}
	for _, sum := range lines {
		if from != nil && posOf(sum).cmp(*from) <= 0 {
			continue
		}
		if !b.fits(proto.Size(sum)) {
			out.More = true
			break
		}
		out.Conversations = append(out.Conversations, sum)
	}
	if out.More {
		out.NextCursor = posOf(out.Conversations[len(out.Conversations)-1]).String()
	}
	return out, nil
}

// listPos is a line's place in the list order: newest activity first,
// then by id. A cursor names the last line of a page; the next page
// starts after it, so a line that moves up between pages is not repeated
// (its change reaches the device through the sync timeline).
type listPos struct {
	activity int64
	id       string
}

func posOf(s *eventspb.ConversationSummary) listPos {
	return listPos{s.LastActivityUnixMs, s.ConversationId}
}

func (a listPos) cmp(b listPos) int {
	switch {
	case a.activity > b.activity:
		return -1
	case a.activity < b.activity:
		return 1
	}
	return strings.Compare(a.id, b.id)
}

func (a listPos) String() string { return strconv.FormatInt(a.activity, 10) + ":" + a.id }

func parseListCursor(s string) (listPos, bool) {
	at, id, ok := strings.Cut(s, ":")
	if !ok || id == "" {
		return listPos{}, false
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return listPos{}, false
	}
	return listPos{n, id}, true
}
