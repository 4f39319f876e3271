package webhook

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// Kinds of webhook events.
const (
	// KindEvent is a committed conversation event (a message sent, recalled
	// or edited, a conversation created, a member added or removed).
	KindEvent = "event"
	// KindDevicePending is the offline push: a device has entries of its
	// sync timeline that it has not received (see the package doc for when
	// it fires).
	KindDevicePending = "device.pending"
)

// Batch is the JSON body of one POST: events in the store's global order
// (so in order per conversation and per user).
type Batch struct {
	Events []Event `json:"events"`
}

// Position is an event's place in the store's global log ($all).
type Position struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
}

// Event is one webhook event. IdempotencyKey is the same each time the
// event is delivered: a receiver drops an event whose key it has seen.
type Event struct {
	ID             string    `json:"id"`
	IdempotencyKey string    `json:"idempotency_key"`
	Kind           string    `json:"kind"`
	Stream         string    `json:"stream"`
	Revision       uint64    `json:"revision"`
	Position       Position  `json:"position"`
	Type           string    `json:"type"`
	Time           time.Time `json:"time"`

	// Of KindEvent: the conversation, the event's seq in it (revision+1),
	// the decoded event (protobuf JSON; bytes in base64) and, for a
	// message or an edit whose body is UTF-8, the body as text.
	Conversation string          `json:"conversation,omitempty"`
	Seq          uint64          `json:"seq,omitempty"`
	Data         json.RawMessage `json:"data,omitempty"`
	Text         *string         `json:"text,omitempty"`
	// Raw is the stored payload (base64) of an event that is not a known
	// domain event, or does not decode: it is delivered all the same.
	Raw []byte `json:"raw,omitempty"`

	// Of KindDevicePending: whose device, how many entries it has not
	// acknowledged (Count = UserSeq - the device's acknowledged seq), the
	// newest user seq, and a preview of the message that fired it.
	User    string   `json:"user,omitempty"`
	Device  string   `json:"device,omitempty"`
	Count   uint64   `json:"count,omitempty"`
	UserSeq uint64   `json:"user_seq,omitempty"`
	Latest  *Preview `json:"latest,omitempty"`
}

// Preview is the message that made a device.pending event fire.
type Preview struct {
	Conversation string `json:"conversation"`
	Seq          uint64 `json:"seq"`
	Sender       string `json:"sender"`
	Kind         string `json:"kind,omitempty"`
	// Text is the start of the body (at most PreviewRunes runes) when it
	// is UTF-8 and was inlined in the sync timeline; empty otherwise.
	Text string `json:"text,omitempty"`
}

// PreviewRunes bounds Preview.Text.
const PreviewRunes = 100

func position(p events.Position) Position { return Position{Commit: p.Commit, Prepare: p.Prepare} }

// conversationEvent renders a committed conversation event.
func conversationEvent(e projections.Event) Event {
	out := Event{
		ID: e.ID.String(), IdempotencyKey: e.ID.String(), Kind: KindEvent,
		Stream: e.Stream, Revision: uint64(e.Revision), Position: position(e.Position), Type: e.Type, Time: e.Time,
		Conversation: strings.TrimPrefix(e.Stream, events.ConversationPrefix), Seq: uint64(e.Revision) + 1,
	}
	if e.Message != nil {
		if b, err := protojson.Marshal(e.Message); err == nil {
			out.Data = b
		}
	}
	if out.Data == nil {
		out.Raw = e.Data
	}
	var body []byte
	switch m := e.Message.(type) {
	case *eventspb.MessageSent:
		body = m.Body
	case *eventspb.MessageEdited:
		body = m.Body
	}
	if body != nil && utf8.Valid(body) {
		s := string(body)
		out.Text = &s
	}
	return out
}

// previewText is the start of a UTF-8 body, or "".
func previewText(body []byte) string {
	if !utf8.Valid(body) {
		return ""
	}
	s := string(body)
	n := 0
	for i := range s {
		if n == PreviewRunes {
			return s[:i]
		}
		n++
	}
	return s
}
