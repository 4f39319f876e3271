package export

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// Row is one exported event: where it is in the store, then the fields of
// its domain event, flattened. A field an event does not have is absent
// (null in Parquet, left out in JSONL). docs/analysts.md documents every
// column; the struct tags are the Parquet schema.
type Row struct {
	Stream   string    `json:"stream" parquet:"stream"`
	Revision uint64    `json:"revision" parquet:"revision"`
	Position uint64    `json:"position" parquet:"position"` // commit position in $all
	ID       string    `json:"id" parquet:"id"`
	Type     string    `json:"type" parquet:"type"`
	Time     time.Time `json:"time" parquet:"time,timestamp(microsecond:utc)"` // when the store recorded the event

	Conversation     *string    `json:"conversation,omitempty" parquet:"conversation,optional"`
	Seq              *uint64    `json:"seq,omitempty" parquet:"seq,optional"`
	UserSeq          *uint64    `json:"user_seq,omitempty" parquet:"user_seq,optional"`
	Sender           *string    `json:"sender,omitempty" parquet:"sender,optional"`
	Device           *string    `json:"device,omitempty" parquet:"device,optional"`
	ClientMsgID      *string    `json:"client_msg_id,omitempty" parquet:"client_msg_id,optional"`
	Kind             *string    `json:"kind,omitempty" parquet:"kind,optional"`
	Text             *string    `json:"text,omitempty" parquet:"text,optional"`               // message body; the payload of an event that is not a domain event
	TextBase64       *string    `json:"text_base64,omitempty" parquet:"text_base64,optional"` // the same when not valid UTF-8
	ReplyTo          *uint64    `json:"reply_to,omitempty" parquet:"reply_to,optional"`
	Mentions         []string   `json:"mentions,omitempty" parquet:"mentions,list"`
	TargetSeq        *uint64    `json:"target_seq,omitempty" parquet:"target_seq,optional"`
	ReadSeq          *uint64    `json:"read_seq,omitempty" parquet:"read_seq,optional"`
	User             *string    `json:"user,omitempty" parquet:"user,optional"`
	By               *string    `json:"by,omitempty" parquet:"by,optional"`
	Added            *bool      `json:"added,omitempty" parquet:"added,optional"`
	ConversationKind *string    `json:"conversation_kind,omitempty" parquet:"conversation_kind,optional"`
	Name             *string    `json:"name,omitempty" parquet:"name,optional"`
	Members          []string   `json:"members,omitempty" parquet:"members,list"`
	ReadFanout       *bool      `json:"read_fanout,omitempty" parquet:"read_fanout,optional"`
	At               *time.Time `json:"at,omitempty" parquet:"at,optional,timestamp(millisecond:utc)"` // the event's own at_unix_ms

	// Fields is the whole decoded event as JSON (protobuf field names),
	// empty (null in Parquet) for events that are not domain events.
	Fields string `json:"-" parquet:"fields,optional"`
}

// MarshalJSON writes Fields as a nested object.
func (r Row) MarshalJSON() ([]byte, error) {
	type plain Row
	out := struct {
		plain
		Fields json.RawMessage `json:"fields,omitempty"`
	}{plain: plain(r)}
	if r.Fields != "" {
		out.Fields = json.RawMessage(r.Fields)
	}
	return json.Marshal(out)
}

var fieldsJSON = protojson.MarshalOptions{UseProtoNames: true}

// Flatten turns an event into its row.
func Flatten(e projections.Event) (Row, error) {
	r := Row{
		Stream:   e.Stream,
		Revision: uint64(e.Revision),
		Position: e.Position.Commit,
		ID:       e.ID.String(),
		Type:     e.Type,
		Time:     e.Time.UTC(),
	}
	// Where the stream says it: a conversation event's seq is its
	// revision + 1, an inbox entry's user_seq likewise.
	switch {
	case strings.HasPrefix(e.Stream, events.ConversationPrefix):
		r.Conversation = ptr(strings.TrimPrefix(e.Stream, events.ConversationPrefix))
		r.Seq = ptr(uint64(e.Revision) + 1)
	case strings.HasPrefix(e.Stream, events.InboxPrefix):
		r.UserSeq = ptr(uint64(e.Revision) + 1)
	case strings.HasPrefix(e.Stream, events.FanoutPrefix):
		r.Conversation = ptr(strings.TrimPrefix(e.Stream, events.FanoutPrefix))
	}
	if e.Message == nil {
		// Not a domain event: its payload, as text when it is UTF-8.
		if len(e.Data) > 0 {
			text(&r, e.Data)
		}
		return r, nil
	}
	raw, err := fieldsJSON.Marshal(e.Message)
	if err != nil {
		return r, fmt.Errorf("export: %s@%d: %w", e.Stream, e.Revision, err)
	}
	var compact bytes.Buffer // protojson's spacing is deliberately unstable
	if err := json.Compact(&compact, raw); err != nil {
		return r, fmt.Errorf("export: %s@%d: %w", e.Stream, e.Revision, err)
	}
	r.Fields = compact.String()

	switch m := e.Message.(type) {
	case *eventspb.ConversationCreated:
		r.Conversation = nonEmpty(m.ConversationId)
		r.ConversationKind = kind(m.Kind)
		r.Name = nonEmpty(m.Name)
		r.By = nonEmpty(m.Creator)
		r.Members = m.Members
		r.At = at(m.AtUnixMs)
	case *eventspb.MemberAdded:
		r.User, r.By, r.At = nonEmpty(m.User), nonEmpty(m.By), at(m.AtUnixMs)
	case *eventspb.MemberRemoved:
		r.User, r.By, r.At = nonEmpty(m.User), nonEmpty(m.By), at(m.AtUnixMs)
	case *eventspb.MembersJoined:
		r.Members, r.By, r.At = m.Users, nonEmpty(m.By), at(m.AtUnixMs)
	case *eventspb.MessageSent:
		message(&r, m)
	case *eventspb.MessageRecalled:
		r.TargetSeq, r.By, r.At = ptr(m.Seq), nonEmpty(m.By), at(m.AtUnixMs)
	case *eventspb.MessageEdited:
		r.TargetSeq, r.By, r.At = ptr(m.Seq), nonEmpty(m.By), at(m.AtUnixMs)
		text(&r, m.Body)
	case *eventspb.MessagePointer:
		r.Conversation, r.Seq = nonEmpty(m.ConversationId), ptr(m.Seq)
		if m.Message != nil {
			message(&r, m.Message)
		}
		r.Sender = nonEmpty(m.Sender)
	case *eventspb.RecallNotice:
		r.Conversation, r.Seq = nonEmpty(m.ConversationId), ptr(m.Seq)
		r.TargetSeq, r.By = ptr(m.RecalledSeq), nonEmpty(m.By)
	case *eventspb.EditNotice:
		r.Conversation, r.Seq = nonEmpty(m.ConversationId), ptr(m.Seq)
		r.TargetSeq, r.By = ptr(m.EditedSeq), nonEmpty(m.By)
		text(&r, m.Body)
	case *eventspb.MembershipChanged:
		r.Conversation, r.Seq = nonEmpty(m.ConversationId), ptr(m.Seq)
		r.User, r.Added, r.By = nonEmpty(m.User), ptr(m.Added), nonEmpty(m.By)
		r.ConversationKind, r.Name, r.ReadFanout = kind(m.Kind), nonEmpty(m.Name), ptr(m.ReadFanout)
	case *eventspb.ConversationChanged:
		r.Conversation, r.Seq = nonEmpty(m.ConversationId), ptr(m.Seq)
	case *eventspb.ReadMarkerMoved:
		r.Conversation, r.ReadSeq, r.Device = nonEmpty(m.ConversationId), ptr(m.ReadSeq), nonEmpty(m.Device)
	case *eventspb.DeviceAcked:
		r.UserSeq = ptr(m.UserSeq)
	case *eventspb.FanoutCheckpoint:
		r.Seq = ptr(m.Seq)
	}
	return r, nil
}

func message(r *Row, m *eventspb.MessageSent) {
	r.Sender = nonEmpty(m.Sender)
	r.Device = nonEmpty(m.SenderDevice)
	r.ClientMsgID = nonEmpty(m.ClientMsgId)
	r.Kind = nonEmpty(m.Kind)
	text(r, m.Body)
	if m.ReplyTo != 0 {
		r.ReplyTo = ptr(m.ReplyTo)
	}
	r.Mentions = m.Mentions
	r.At = at(m.AtUnixMs)
}

// text sets Text when body is UTF-8, else TextBase64.
func text(r *Row, body []byte) {
	if utf8.Valid(body) {
		r.Text = ptr(string(body))
	} else {
		r.TextBase64 = ptr(base64.StdEncoding.EncodeToString(body))
	}
}

func kind(k eventspb.ConversationKind) *string {
	if k == eventspb.ConversationKind_CONVERSATION_KIND_UNSPECIFIED {
		return nil
	}
	return ptr(k.String())
}

func at(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	return ptr(time.UnixMilli(ms).UTC())
}

func ptr[T any](v T) *T { return &v }

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
