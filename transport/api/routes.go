package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
)

// route is one endpoint; docs/openapi.json lists exactly these (a test
// holds them against each other).
type route struct {
	method, path string
	handle       func(ctx context.Context, r *http.Request) (any, error)
}

func (a *API) routes() []route {
	return []route{
		{"POST", "/v1/messages", a.send},
		{"POST", "/v1/groups", a.createGroup},
		{"GET", "/v1/conversations/{conversation}", a.conversation},
		{"POST", "/v1/conversations/{conversation}/members", a.addMember},
		{"DELETE", "/v1/conversations/{conversation}/members/{user}", a.removeMember},
		{"GET", "/v1/conversations/{conversation}/messages", a.history},
		{"PATCH", "/v1/conversations/{conversation}/messages/{seq}", a.edit},
		{"POST", "/v1/conversations/{conversation}/messages/{seq}/recall", a.recall},
		{"GET", "/v1/users/{user}/conversations", a.conversations},
		{"GET", "/v1/users/{user}/devices/{device}", a.device},
		{"POST", "/v1/users/{user}/devices/{device}/disconnect", a.disconnect},
		{"POST", "/v1/users/{user}/revoke-tokens", a.revoke},
	}
}

// Routes lists the endpoints as "METHOD /path" (the OpenAPI document's
// paths, plus GET /openapi.json).
func (a *API) Routes() []string {
	out := []string{"GET /openapi.json"}
	for _, r := range a.routes() {
		out = append(out, r.method+" "+r.path)
	}
	return out
}

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func decode(r *http.Request, v any) error {
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return err
		}
		return invalid("request body: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return invalid("request body: one JSON object expected")
	}
	return nil
}

// SendRequest is the body of POST /v1/messages.
type SendRequest struct {
	Conversation string   `json:"conversation,omitempty"`
	ToUser       string   `json:"to_user,omitempty"`
	Sender       string   `json:"sender"`
	Device       string   `json:"device,omitempty"`
	ClientMsgID  string   `json:"client_msg_id,omitempty"`
	Kind         string   `json:"kind,omitempty"`
	Text         string   `json:"text,omitempty"`
	Body         []byte   `json:"body,omitempty"`
	ReplyTo      uint64   `json:"reply_to,omitempty"`
	Mentions     []string `json:"mentions,omitempty"`
	// Metadata is stored with the message (actors.MaxMetadataKeys,
	// actors.MaxMetadataSize).
	Metadata map[string]string `json:"metadata,omitempty"`
	System   bool              `json:"system,omitempty"`
}

// Sent answers a send.
type Sent struct {
	Conversation string `json:"conversation"`
	Seq          uint64 `json:"seq"`
	Duplicate    bool   `json:"duplicate"`
	ClientMsgID  string `json:"client_msg_id,omitempty"`
}

func (a *API) send(ctx context.Context, r *http.Request) (any, error) {
	var q SendRequest
	if err := decode(r, &q); err != nil {
		return nil, err
	}
	if (q.Conversation == "") == (q.ToUser == "") {
		return nil, invalid("a message goes to a conversation or to_user: one of them")
	}
	if (q.Text == "") == (q.Body == nil) {
		return nil, invalid("a message has text or body (base64): one of them")
	}
	// The device is stored with the message and shown to every member: it
	// follows the id rules like every other device id.
	if q.Device != "" {
		if err := actors.ValidateID("device", q.Device); err != nil {
			return nil, err
		}
	}
	body := q.Body
	if body == nil {
		body = []byte(q.Text)
	}
	// With to_user, the first message creates the direct conversation in
	// the same decision: a refused one creates nothing.
	res, err := a.cfg.Service.Send(ctx, actors.SendRequest{
		Conversation: q.Conversation, ToUser: q.ToUser, Sender: q.Sender, Device: q.Device, ClientMsgID: q.ClientMsgID, Kind: q.Kind,
		Body: body, ReplyTo: q.ReplyTo, Mentions: q.Mentions, System: q.System, Metadata: q.Metadata,
	})
	if err != nil {
		return nil, err
	}
	return Sent{Conversation: res.Conversation, Seq: res.Seq, Duplicate: res.Duplicate, ClientMsgID: q.ClientMsgID}, nil
}

// CreateGroupRequest is the body of POST /v1/groups.
type CreateGroupRequest struct {
	ID      string   `json:"id,omitempty"`
	Creator string   `json:"creator"`
	Name    string   `json:"name"`
	Members []string `json:"members"`
}

// ConversationRef names a conversation.
type ConversationRef struct {
	Conversation string `json:"conversation"`
}

func (a *API) createGroup(ctx context.Context, r *http.Request) (any, error) {
	var q CreateGroupRequest
	if err := decode(r, &q); err != nil {
		return nil, err
	}
	id, err := a.cfg.Service.CreateGroup(ctx, q.ID, q.Creator, q.Name, q.Members)
	if err != nil {
		return nil, err
	}
	return ConversationRef{Conversation: id}, nil
}

// MemberRequest is the body of POST .../members: actor (an admin) adds user.
type MemberRequest struct {
	Actor string `json:"actor"`
	User  string `json:"user"`
}

// Done answers a change: the seq of its event.
type Done struct {
	Seq uint64 `json:"seq"`
}

func (a *API) addMember(ctx context.Context, r *http.Request) (any, error) {
	var q MemberRequest
	if err := decode(r, &q); err != nil {
		return nil, err
	}
	seq, err := a.cfg.Service.AddMember(ctx, q.Actor, r.PathValue("conversation"), q.User)
	if err != nil {
		return nil, err
	}
	return Done{Seq: seq}, nil
}

func (a *API) removeMember(ctx context.Context, r *http.Request) (any, error) {
	actor := r.URL.Query().Get("actor")
	if actor == "" {
		return nil, invalid("removing a member needs ?actor= (an admin, or the member leaving)")
	}
	seq, err := a.cfg.Service.RemoveMember(ctx, actor, r.PathValue("conversation"), r.PathValue("user"))
	if err != nil {
		return nil, err
	}
	return Done{Seq: seq}, nil
}

// query parameters

func uintParam(r *http.Request, name string) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, invalid("?%s=%q: want a non-negative integer", name, s)
	}
	return n, nil
}

func reader(r *http.Request) (string, error) {
	u := r.URL.Query().Get("reader")
	if u == "" {
		return "", invalid("reading a conversation needs ?reader= (a member, as whom it is read)")
	}
	return u, nil
}

func (a *API) conversation(ctx context.Context, r *http.Request) (any, error) {
	rd, err := reader(r)
	if err != nil {
		return nil, err
	}
	limit, err := uintParam(r, "members_limit")
	if err != nil {
		return nil, err
	}
	info, err := a.cfg.Service.ConversationMembers(ctx, rd, r.PathValue("conversation"), r.URL.Query().Get("members_after"), int(min(limit, actors.MaxMembersLimit)))
	if err != nil {
		return nil, err
	}
	return conversationInfo(info), nil
}

func (a *API) history(ctx context.Context, r *http.Request) (any, error) {
	rd, err := reader(r)
	if err != nil {
		return nil, err
	}
	var q actors.HistoryQuery
	before, err := uintParam(r, "before")
	if err != nil {
		return nil, err
	}
	after, err := uintParam(r, "after")
	if err != nil {
		return nil, err
	}
	limit, err := uintParam(r, "limit")
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = actors.DefaultHistoryLimit
	}
	q.Before, q.After, q.Limit = before, after, int(min(limit, actors.MaxHistoryLimit))
	q.FromStart = r.URL.Query().Get("from_start") == "true"
	h, err := a.cfg.Service.History(ctx, rd, r.PathValue("conversation"), q)
	if err != nil {
		return nil, err
	}
	out := History{LastSeq: h.LastSeq, More: h.More, Messages: []Message{}}
	for _, m := range h.Messages {
		msg := message(m.Seq, m.Message)
		msg.Recalled, msg.Edited = m.Recalled, m.Edited
		out.Messages = append(out.Messages, *msg)
	}
	return out, nil
}

func (a *API) conversations(ctx context.Context, r *http.Request) (any, error) {
	limit, err := uintParam(r, "limit")
	if err != nil {
		return nil, err
	}
	changed, err := uintParam(r, "changed_after")
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = actors.DefaultListLimit
	}
	l, err := a.cfg.Service.ConversationPage(ctx, r.PathValue("user"), actors.ListQuery{
		Cursor: r.URL.Query().Get("cursor"), Limit: int(min(limit, actors.MaxListLimit)), ChangedAfter: changed,
	})
	if err != nil {
		return nil, err
	}
	out := ConversationList{UserSeq: l.UserSeq, More: l.More, NextCursor: l.NextCursor, Conversations: []ConversationSummary{}}
	for _, c := range l.Conversations {
		out.Conversations = append(out.Conversations, ConversationSummary{
			Conversation: c.ConversationId, Kind: kindName(c.Kind), Name: c.Name, LastSeq: c.LastSeq,
			LatestMessageSeq: c.LatestMessageSeq, LatestMessage: message(c.LatestMessageSeq, c.LatestMessage),
			Unread: c.Unread, LastReadSeq: c.LastReadSeq, LastActivity: unixMs(c.LastActivityUnixMs), ReadFanout: c.ReadFanout,
		})
	}
	return out, nil
}

// Device is a device's state: the user seq it has acknowledged and
// whether it is connected (to any node of the cluster).
type Device struct {
	User         string `json:"user"`
	Device       string `json:"device"`
	AckedUserSeq uint64 `json:"acked_user_seq"`
	Online       bool   `json:"online"`
}

func (a *API) device(ctx context.Context, r *http.Request) (any, error) {
	user, device := r.PathValue("user"), r.PathValue("device")
	d, err := a.cfg.Service.Device(ctx, user, device)
	if err != nil {
		return nil, err
	}
	return Device{User: user, Device: device, AckedUserSeq: d.AckedUserSeq, Online: d.Online}, nil
}

// emptyBody accepts the body of an action that takes no parameters: none
// or {}. Anything else (not JSON, unknown fields) is refused before the
// action runs, as in every other request.
func emptyBody(r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<10))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return err
		}
		return invalid("request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	var none struct{}
	if err := d.Decode(&none); err != nil {
		return invalid("request body: this request takes no fields, only an empty body or {}: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return invalid("request body: one JSON object expected")
	}
	return nil
}

// Disconnected answers a disconnect.
type Disconnected struct {
	// Closed: the device's connections known when asked, the larger of
	// those the answering node closed and those the device grain knew.
	// Every node closes the device's connections as it reads the
	// disconnect from the store (a moment later), counted or not: 0 does
	// not mean that nothing was closed (transport.Server.DisconnectDevice).
	// When the store fails to record the disconnect the answer is an
	// error (503 UNAVAILABLE) whose message says how many were closed
	// already; asking again is safe.
	Closed int `json:"closed"`
}

func (a *API) disconnect(ctx context.Context, r *http.Request) (any, error) {
	if a.cfg.Gateway == nil {
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: "no gateway in this process"}
	}
	user, device := r.PathValue("user"), r.PathValue("device")
	if err := actors.ValidateID("user", user); err != nil {
		return nil, err
	}
	if err := actors.ValidateID("device", device); err != nil {
		return nil, err
	}
	if err := emptyBody(r); err != nil {
		return nil, err
	}
	n, err := a.cfg.Gateway.DisconnectDevice(ctx, user, device)
	var f *actors.Failure
	if err != nil && !errors.As(err, &f) {
		// The store did not take the record: 503, safe to repeat. The
		// connections closed already stay closed; the message says how
		// many (an error answer has no "closed" field).
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return Disconnected{Closed: n}, nil
}

// Revoked answers a revocation.
type Revoked struct {
	// RevokedAt: tokens of the user issued in or before this second are
	// refused from now on.
	RevokedAt time.Time `json:"revoked_at"`
	// Closed: the user's connections this node closed. The other nodes of
	// a cluster close theirs as they read the revocation from the store
	// (within about a second); they are not counted.
	Closed int `json:"closed"`
}

func (a *API) revoke(ctx context.Context, r *http.Request) (any, error) {
	if a.cfg.Gateway == nil {
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: "no gateway in this process"}
	}
	user := r.PathValue("user")
	if err := actors.ValidateID("user", user); err != nil {
		return nil, err
	}
	if err := emptyBody(r); err != nil {
		return nil, err
	}
	at, n, err := a.cfg.Gateway.RevokeTokens(user)
	if err != nil {
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: err.Error()}
	}
	return Revoked{RevokedAt: at.UTC(), Closed: n}, nil
}

// Views.

// Message is a stored message. Text is its body when UTF-8; Body always
// (base64 in JSON).
type Message struct {
	Seq          uint64   `json:"seq"`
	Sender       string   `json:"sender"`
	SenderDevice string   `json:"sender_device,omitempty"`
	ClientMsgID  string   `json:"client_msg_id,omitempty"`
	Kind         string   `json:"kind"`
	Text         *string  `json:"text,omitempty"`
	Body         []byte   `json:"body"`
	ReplyTo      uint64   `json:"reply_to,omitempty"`
	Mentions     []string `json:"mentions,omitempty"`
	// Metadata: from the sender or a check (docs/extending.md).
	Metadata map[string]string `json:"metadata,omitempty"`
	At       time.Time         `json:"at"`
	Recalled bool              `json:"recalled,omitempty"`
	Edited   bool              `json:"edited,omitempty"`
}

// History is a page of a conversation's messages.
type History struct {
	Messages []Message `json:"messages"`
	LastSeq  uint64    `json:"last_seq"`
	More     bool      `json:"more"`
}

// ConversationSummary is a line of a user's conversation list.
type ConversationSummary struct {
	Conversation     string    `json:"conversation"`
	Kind             string    `json:"kind"`
	Name             string    `json:"name,omitempty"`
	LastSeq          uint64    `json:"last_seq"`
	LatestMessageSeq uint64    `json:"latest_message_seq,omitempty"`
	LatestMessage    *Message  `json:"latest_message,omitempty"`
	Unread           uint64    `json:"unread"`
	LastReadSeq      uint64    `json:"last_read_seq"`
	LastActivity     time.Time `json:"last_activity"`
	ReadFanout       bool      `json:"read_fanout,omitempty"`
}

// ConversationList is a page of a user's conversation list.
type ConversationList struct {
	Conversations []ConversationSummary `json:"conversations"`
	UserSeq       uint64                `json:"user_seq"`
	More          bool                  `json:"more"`
	NextCursor    string                `json:"next_cursor,omitempty"`
}

// ConversationInfo is a conversation with a page of its members.
type ConversationInfo struct {
	Conversation     string    `json:"conversation"`
	Kind             string    `json:"kind"`
	Name             string    `json:"name,omitempty"`
	Members          []string  `json:"members"`
	Admins           []string  `json:"admins"`
	MemberCount      uint64    `json:"member_count"`
	MoreMembers      bool      `json:"more_members,omitempty"`
	LastSeq          uint64    `json:"last_seq"`
	LatestMessageSeq uint64    `json:"latest_message_seq,omitempty"`
	LatestMessage    *Message  `json:"latest_message,omitempty"`
	LastActivity     time.Time `json:"last_activity"`
	ReadFanout       bool      `json:"read_fanout,omitempty"`
}

func conversationInfo(i *eventspb.ConversationInfo) ConversationInfo {
	return ConversationInfo{
		Conversation: i.ConversationId, Kind: kindName(i.Kind), Name: i.Name,
		Members: nonNil(i.Members), Admins: nonNil(i.Admins), MemberCount: i.MemberCount, MoreMembers: i.MoreMembers,
		LastSeq: i.LastSeq, LatestMessageSeq: i.LatestMessageSeq, LatestMessage: message(i.LatestMessageSeq, i.LatestMessage),
		LastActivity: unixMs(i.LastActivityUnixMs), ReadFanout: i.ReadFanout,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func kindName(k eventspb.ConversationKind) string {
	switch k {
	case eventspb.ConversationKind_DIRECT:
		return "direct"
	case eventspb.ConversationKind_GROUP:
		return "group"
	}
	return strings.ToLower(k.String())
}

func unixMs(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func message(seq uint64, m *eventspb.MessageSent) *Message {
	if m == nil {
		return nil
	}
	out := &Message{
		Seq: seq, Sender: m.Sender, SenderDevice: m.SenderDevice, ClientMsgID: m.ClientMsgId, Kind: m.Kind,
		Body: m.Body, ReplyTo: m.ReplyTo, Mentions: m.Mentions, Metadata: m.Metadata, At: unixMs(m.AtUnixMs),
	}
	if utf8Valid(m.Body) {
		s := string(m.Body)
		out.Text = &s
	}
	return out
}

func utf8Valid(b []byte) bool { return utf8.Valid(b) }
