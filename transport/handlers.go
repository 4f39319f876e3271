package transport

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport/wire"
)

// requestTimeout bounds one request on the server.
const requestTimeout = 15 * time.Second

// requestCost is what a request takes from its connection's rate limit:
// one, plus one per member listed in a group's creation (each member's
// inbox gets an entry). A member change names one member and costs one.
func requestCost(req *wire.Request) int {
	n := 1
	if op, ok := req.Op.(*wire.Request_CreateGroup); ok {
		n += len(op.CreateGroup.GetMembers())
	}
	return n
}

// allow charges req to the connection's rate limit. A cost above the
// burst passes when the bucket holds a whole burst and leaves the rest as
// debt: the connection's next requests are refused until it is paid, so a
// large creation costs its full size.
func (c *conn) allow(req *wire.Request) bool {
	now, cost, burst := c.s.cfg.Now(), requestCost(req), c.s.cfg.RequestBurst
	if !c.limiter.AllowN(now, min(cost, burst)) {
		return false
	}
	for rest := cost - burst; rest > 0; rest -= burst {
		c.limiter.ReserveN(now, min(rest, burst))
	}
	return true
}

// handle runs one request as the connection's user and device.
func (c *conn) handle(ctx context.Context, req *wire.Request) *wire.Response {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	svc := c.s.cfg.Service
	res := &wire.Response{Id: req.Id}
	var err error
	switch op := req.Op.(type) {
	case *wire.Request_Send:
		m := op.Send
		if m.ToUser != "" && m.Conversation != "" {
			err = errInvalid("send takes a conversation or a user, not both")
			break
		}
		// With to_user, the first message creates the direct conversation
		// in the same decision: a refused one creates nothing.
		var r actors.SendResult
		r, err = svc.Send(ctx, actors.SendRequest{
			Conversation: m.Conversation, ToUser: m.ToUser, Sender: c.user, Device: c.device, ClientMsgID: m.ClientMsgId,
			Kind: m.Kind, Body: m.Body, ReplyTo: m.ReplyTo, Mentions: m.Mentions, Metadata: m.Metadata,
		})
		res.Result = &wire.Response_Sent{Sent: &wire.Sent{Conversation: r.Conversation, Seq: r.Seq, Duplicate: r.Duplicate, ClientMsgId: m.ClientMsgId}}
	case *wire.Request_CreateGroup:
		var id string
		id, err = svc.CreateGroup(ctx, op.CreateGroup.Id, c.user, op.CreateGroup.Name, op.CreateGroup.Members)
		res.Result = &wire.Response_ConversationRef{ConversationRef: &wire.ConversationRef{Conversation: id}}
	case *wire.Request_OpenDirect:
		var id string
		id, err = svc.OpenDirect(ctx, c.user, op.OpenDirect.User)
		res.Result = &wire.Response_ConversationRef{ConversationRef: &wire.ConversationRef{Conversation: id}}
	case *wire.Request_ChangeMember:
		m := op.ChangeMember
		var seq uint64
		if m.Add {
			seq, err = svc.AddMember(ctx, c.user, m.Conversation, m.User)
		} else {
			seq, err = svc.RemoveMember(ctx, c.user, m.Conversation, m.User)
		}
		res.Result = &wire.Response_Done{Done: &wire.Done{Seq: seq}}
	case *wire.Request_Recall:
		var seq uint64
		seq, err = svc.Recall(ctx, c.user, op.Recall.Conversation, op.Recall.Seq)
		res.Result = &wire.Response_Done{Done: &wire.Done{Seq: seq}}
	case *wire.Request_Edit:
		var seq uint64
		seq, err = svc.Edit(ctx, c.user, op.Edit.Conversation, op.Edit.Seq, op.Edit.Body)
		res.Result = &wire.Response_Done{Done: &wire.Done{Seq: seq}}
	case *wire.Request_MarkRead:
		var marker uint64
		marker, err = svc.MarkRead(ctx, c.user, c.device, op.MarkRead.Conversation, op.MarkRead.Seq)
		res.Result = &wire.Response_Done{Done: &wire.Done{Seq: marker}} // the marker that results
	case *wire.Request_Sync:
		limit := int(op.Sync.Limit)
		if limit == 0 {
			limit = actors.DefaultSyncLimit
		}
		// The page is cut by its encoded size (actors.MaxPageBytes), so it
		// fits a frame compressed or not.
		r, e := svc.SyncPage(ctx, c.user, actors.SyncQuery{After: op.Sync.AfterUserSeq, Limit: min(limit, actors.MaxSyncLimit), Heard: uint64(c.heard.Load())})
		err = e
		res.Result = &wire.Response_Sync{Sync: r}
		if e == nil && op.Sync.Zstd && proto.Size(r) >= wire.CompressMin {
			if z, zerr := wire.CompressPage(r); zerr == nil {
				res.Result = &wire.Response_SyncZstd{SyncZstd: z}
			}
		}
	case *wire.Request_History:
		m := op.History
		limit := int(m.Limit)
		if limit == 0 {
			limit = actors.DefaultHistoryLimit
		}
		q := actors.HistoryQuery{Before: m.BeforeSeq, After: m.AfterSeq, FromStart: m.FromStart, Limit: min(limit, actors.MaxHistoryLimit)}
		if m.FirstUnread {
			if q.After, err = c.readSeq(ctx, m.Conversation); err != nil {
				break
			}
			q.Before, q.FromStart = 0, true
		}
		h, e := svc.History(ctx, c.user, m.Conversation, q)
		err = e
		res.Result = &wire.Response_History{History: h}
	case *wire.Request_Conversations:
		m := op.Conversations
		limit := int(m.Limit)
		if limit == 0 {
			limit = actors.DefaultListLimit
		}
		l, e := svc.ConversationPage(ctx, c.user, actors.ListQuery{Cursor: m.Cursor, Limit: min(limit, actors.MaxListLimit), ChangedAfter: m.ChangedAfterUserSeq})
		err = e
		res.Result = &wire.Response_Conversations{Conversations: l}
	case *wire.Request_Conversation:
		q := op.Conversation
		i, e := svc.ConversationMembers(ctx, c.user, q.Conversation, q.MembersAfter, int(min(q.MembersLimit, actors.MaxMembersLimit)))
		err = e
		res.Result = &wire.Response_Conversation{Conversation: i}
	case *wire.Request_Search:
		var r *wire.SearchResult
		r, err = c.search(ctx, op.Search)
		res.Result = &wire.Response_Search{Search: r}
	default:
		err = &wire.Error{Code: wire.CodeUnknown, Message: "unknown or missing request type"}
	}
	if err != nil {
		res.Result = &wire.Response_Error{Error: toWireError(err)}
	}
	return res
}

// readSeq is the caller's read marker in conv (for "jump to first unread").
func (c *conn) readSeq(ctx context.Context, conv string) (uint64, error) {
	list, err := c.s.cfg.Service.ConversationPage(ctx, c.user, actors.ListQuery{Conversation: conv, Limit: 1})
	if err != nil {
		return 0, err
	}
	for _, s := range list.Conversations {
		if s.ConversationId == conv {
			return s.LastReadSeq, nil
		}
	}
	return 0, &actors.Failure{Code: actors.Code_NOT_FOUND, Message: "conversation \"" + conv + "\" not found"}
}

func errInvalid(msg string) error { return &actors.Failure{Code: actors.Code_INVALID, Message: msg} }

// toWireError maps service failures to their codes (1..7) and anything
// else to an internal error.
func toWireError(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	return &wire.Error{Code: codeOf(err), Message: err.Error(), Reason: reasonOf(err)}
}

// reasonOf is the reason of a REJECTED or CHECK_FAILED failure (a check's
// reason code, or the name of the check that failed).
func reasonOf(err error) string {
	var f *actors.Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ""
}

func codeOf(err error) uint32 {
	var f *actors.Failure
	if errors.As(err, &f) {
		return uint32(f.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return uint32(actors.Code_UNAVAILABLE)
	}
	return wire.CodeInternal
}
