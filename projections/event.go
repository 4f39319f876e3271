package projections

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
)

// Event is a stored event as a projection sees it: where it sits in the
// store and its decoded domain message.
type Event struct {
	Stream   string
	Revision events.Revision
	Position events.Position
	ID       uuid.UUID
	Type     string
	Time     time.Time // when the store recorded it (UTC)
	// Message is the decoded domain event (*eventspb.MessageSent, ...), or
	// nil when Type is not a registered domain event type (events written
	// by other tools): Data then holds the raw payload.
	Message proto.Message
	// Data is the stored payload, as recorded.
	Data []byte
}

// EventError stops a projection: the event at Position could not be
// decoded, or the projection's Handle failed on it. Nothing after it was
// applied, and the checkpoint is before it: the next start delivers it
// again.
type EventError struct {
	Projection string // empty from Decode
	Stream     string
	Revision   events.Revision
	Position   events.Position
	Type       string
	Err        error
}

func (e *EventError) Error() string {
	who := "projections"
	if e.Projection != "" {
		who = "projection " + e.Projection
	}
	return fmt.Sprintf("%s: stopped at position %s (%s@%d, %s): %v", who, e.Position, e.Stream, e.Revision, e.Type, e.Err)
}

func (e *EventError) Unwrap() error { return e.Err }

// Decode turns a recorded event into an Event. An event whose type is not a
// registered domain type decodes with a nil Message; a known type whose
// payload does not parse is an *EventError.
func Decode(e events.RecordedEvent) (Event, error) {
	ev := Event{
		Stream:   e.Stream,
		Revision: e.Revision,
		Position: e.Position,
		ID:       e.ID,
		Type:     e.Type,
		Time:     e.Created.UTC(),
		Data:     e.Data,
	}
	m, err := events.Decode(e.Type, e.Data)
	switch {
	case err == nil:
		ev.Message = m
	case errors.Unwrap(err) != nil:
		// events.Decode wraps the protobuf error for a known type whose
		// payload is malformed; an unknown type is a bare error.
		return ev, &EventError{Stream: e.Stream, Revision: e.Revision, Position: e.Position, Type: e.Type, Err: err}
	}
	return ev, nil
}
