package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// Error codes a caller may decide on (wire.Error.Code). 1..7 are the
// service's, 100+ the protocol's (see docs/protocol.md).
const (
	CodeInvalid     = 1
	CodeNotFound    = 2
	CodeForbidden   = 3
	CodeConflict    = 4
	CodeTooLarge    = 5
	CodeExpired     = 6
	CodeUnavailable = 7
	// CodeRejected: a check of the server refused the message; ReasonOf
	// says why ("profanity"). Do not retry it unchanged.
	CodeRejected = 8
	// CodeCheckFailed: a check of the server failed (fail-closed); retrying
	// with the same client message id may succeed.
	CodeCheckFailed = 9
)

// ReasonOf returns the reason of a CodeRejected error (the check's reason
// code) or of a CodeCheckFailed one (the check's name), or "".
func ReasonOf(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Reason
	}
	return ""
}

// CodeOf returns the protocol error code of err, or 0.
func CodeOf(err error) uint32 {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	return 0
}

// call runs one request (see do).
func (c *Client) call(ctx context.Context, req *wire.Request, bulky bool) (*wire.Response, error) {
	return c.do(ctx, req, bulky)
}

func (s *session) oneShot(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	st, err := s.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer st.CancelRead(0)
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	if err := wire.WriteFrame(st, req); err != nil {
		return nil, err
	}
	st.Close() // no more requests on this stream
	var res wire.Response
	if err := wire.NewReader(st, s.c.maxFrame()).Read(&res); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &res, nil
}

// maxFrame is the frame limit the server announced (at least the default).
func (c *Client) maxFrame() int {
	if w := c.Welcome(); w != nil && int(w.MaxFrameSize) > wire.DefaultMaxFrameSize {
		return int(w.MaxFrameSize)
	}
	return wire.DefaultMaxFrameSize
}

// Message is what Send sends: to a conversation or, directly, to a user.
type Message struct {
	Conversation string
	To           string // a user: the direct conversation with them
	ClientMsgID  string // retrying with the same id never duplicates
	Kind         string
	Text         string
	Body         []byte // used when Text is empty
	ReplyTo      uint64
	Mentions     []string
	// Metadata is stored with the message: at most 32 entries, keys and
	// values at most 4 KiB together (TOO_LARGE beyond).
	Metadata map[string]string
}

// Send sends a message; it returns once the message is durable.
func (c *Client) Send(ctx context.Context, m Message) (*wire.Sent, error) {
	body := m.Body
	if m.Text != "" {
		body = []byte(m.Text)
	}
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_Send{Send: &wire.Send{
		Conversation: m.Conversation, ToUser: m.To, ClientMsgId: m.ClientMsgID, Kind: m.Kind,
		Body: body, ReplyTo: m.ReplyTo, Mentions: m.Mentions, Metadata: m.Metadata,
	}}}, false)
	if err != nil {
		return nil, err
	}
	return res.GetSent(), nil
}

// CreateGroup creates a group with the caller as admin; id may be empty.
func (c *Client) CreateGroup(ctx context.Context, id, name string, members []string) (string, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_CreateGroup{CreateGroup: &wire.CreateGroup{Id: id, Name: name, Members: members}}}, false)
	if err != nil {
		return "", err
	}
	return res.GetConversationRef().GetConversation(), nil
}

// OpenDirect returns the direct conversation with user.
func (c *Client) OpenDirect(ctx context.Context, user string) (string, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_OpenDirect{OpenDirect: &wire.OpenDirect{User: user}}}, false)
	if err != nil {
		return "", err
	}
	return res.GetConversationRef().GetConversation(), nil
}

// AddMember adds user to a group; RemoveMember removes (or leaves).
func (c *Client) AddMember(ctx context.Context, conv, user string) (uint64, error) {
	return c.done(ctx, &wire.Request{Op: &wire.Request_ChangeMember{ChangeMember: &wire.ChangeMember{Conversation: conv, User: user, Add: true}}})
}

func (c *Client) RemoveMember(ctx context.Context, conv, user string) (uint64, error) {
	return c.done(ctx, &wire.Request{Op: &wire.Request_ChangeMember{ChangeMember: &wire.ChangeMember{Conversation: conv, User: user}}})
}

// Recall recalls message seq of conv.
func (c *Client) Recall(ctx context.Context, conv string, seq uint64) (uint64, error) {
	return c.done(ctx, &wire.Request{Op: &wire.Request_Recall{Recall: &wire.Recall{Conversation: conv, Seq: seq}}})
}

// Edit replaces the body of message seq of conv.
func (c *Client) Edit(ctx context.Context, conv string, seq uint64, body []byte) (uint64, error) {
	return c.done(ctx, &wire.Request{Op: &wire.Request_Edit{Edit: &wire.Edit{Conversation: conv, Seq: seq, Body: body}}})
}

// MarkRead moves the caller's read marker in conv to seq (forward only) and
// returns the marker that results: seq, or a further marker already set.
func (c *Client) MarkRead(ctx context.Context, conv string, seq uint64) (uint64, error) {
	return c.done(ctx, &wire.Request{Op: &wire.Request_MarkRead{MarkRead: &wire.MarkRead{Conversation: conv, Seq: seq}}})
}

func (c *Client) done(ctx context.Context, req *wire.Request) (uint64, error) {
	res, err := c.call(ctx, req, false)
	if err != nil {
		return 0, err
	}
	return res.GetDone().GetSeq(), nil
}

// Sync pulls the caller's sync timeline after a user seq (one page).
func (c *Client) Sync(ctx context.Context, after uint64, limit int) (*eventspb.SyncPage, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_Sync{Sync: &wire.SyncPull{AfterUserSeq: after, Limit: uint32(limit), Zstd: true}}}, true)
	if err != nil {
		return nil, err
	}
	if z := res.GetSyncZstd(); z != nil {
		return wire.DecompressPage(z, c.maxFrame())
	}
	return res.GetSync(), nil
}

// HistoryQuery selects a page of messages: the newest (no Before, After
// or FromStart), those before a seq, or those after one, oldest first.
type HistoryQuery struct {
	Before, After uint64
	// FromStart: oldest first from After, even when After is 0 (the
	// conversation's first messages).
	FromStart   bool
	Limit       int  // messages per page (server default 50, at most 1,000)
	FirstUnread bool // the page after the caller's read marker
}

// History returns one page of a conversation (newest first; oldest first
// with After, FromStart or FirstUnread). A page stops at Limit messages or
// at the server's page size in bytes; History.More says that more
// messages follow: ask again before the oldest (or after the newest) seq
// of the page.
func (c *Client) History(ctx context.Context, conv string, q HistoryQuery) (*eventspb.History, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_History{History: &wire.HistoryPage{
		Conversation: conv, BeforeSeq: q.Before, AfterSeq: q.After, FromStart: q.FromStart, Limit: uint32(q.Limit), FirstUnread: q.FirstUnread,
	}}}, true)
	if err != nil {
		return nil, err
	}
	return res.GetHistory(), nil
}

// ListQuery selects a page of the conversation list (newest activity
// first): the lines after Cursor (a page's NextCursor; empty: the first
// page), at most Limit (server default 200, at most 1,000) and the
// server's page size in bytes, only lines changed after user seq
// ChangedAfter when it is set.
type ListQuery struct {
	Cursor       string
	Limit        int
	ChangedAfter uint64
}

// ConversationPage returns one page of the conversation list; More and
// NextCursor say how to ask for the next.
func (c *Client) ConversationPage(ctx context.Context, q ListQuery) (*eventspb.ConversationList, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_Conversations{Conversations: &wire.ListConversations{
		Cursor: q.Cursor, Limit: uint32(q.Limit), ChangedAfterUserSeq: q.ChangedAfter,
	}}}, true)
	if err != nil {
		return nil, err
	}
	return res.GetConversations(), nil
}

// Conversations returns the caller's whole conversation list, asking for
// it page by page.
func (c *Client) Conversations(ctx context.Context) (*eventspb.ConversationList, error) {
	return c.allPages(ctx, nil, ListQuery{})
}

// Changed returns every conversation that changed since the device's
// last user seq at the latest login: the Welcome's first page and, when
// the Welcome says there is more, the rest page by page.
func (c *Client) Changed(ctx context.Context) (*eventspb.ConversationList, error) {
	w := c.Welcome()
	first := &eventspb.ConversationList{Conversations: slices.Clone(w.Changed), UserSeq: w.UserSeq, More: w.MoreChanged, NextCursor: w.ChangedCursor}
	return c.allPages(ctx, first, ListQuery{ChangedAfter: w.ChangedAfterUserSeq})
}

// allPages appends the pages after first (nil: from the first page).
func (c *Client) allPages(ctx context.Context, first *eventspb.ConversationList, q ListQuery) (*eventspb.ConversationList, error) {
	all := first
	if all == nil {
		page, err := c.ConversationPage(ctx, q)
		if err != nil {
			return nil, err
		}
		all = page
	}
	for all.More {
		q.Cursor = all.NextCursor
		page, err := c.ConversationPage(ctx, q)
		if err != nil {
			return nil, err
		}
		if page.More && page.NextCursor == q.Cursor {
			return nil, errors.New("client: conversation list paging does not advance")
		}
		all.Conversations = append(all.Conversations, page.Conversations...)
		all.More, all.NextCursor = page.More, page.NextCursor
	}
	return all, nil
}

// Conversation returns one conversation as the caller sees it.
func (c *Client) Conversation(ctx context.Context, conv string) (*eventspb.ConversationInfo, error) {
	return c.ConversationMembers(ctx, conv, "", 0)
}

// ConversationMembers is Conversation with the page of at most limit
// members (0: the server's maximum, 1,000) whose ids follow after;
// MoreMembers says that another page follows the last one listed.
func (c *Client) ConversationMembers(ctx context.Context, conv, after string, limit int) (*eventspb.ConversationInfo, error) {
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_Conversation{Conversation: &wire.GetConversation{Conversation: conv, MembersAfter: after, MembersLimit: uint32(max(0, limit))}}}, false)
	if err != nil {
		return nil, err
	}
	return res.GetConversation(), nil
}
