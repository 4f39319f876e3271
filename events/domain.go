package events

import (
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/imsync/imsync/events/eventspb" // registers the domain event types
)

// Domain events are protobuf messages (package eventspb, which clients can
// import without the store); in the store, an event's Type is the
// message's short name ("MessageSent") and its Data the encoded message.
// Extensions add their own message types under their own protobuf package
// and register them with RegisterDomainPackage.

var domainPackages = []protoreflect.FullName{"imsync.events.v1"}

// RegisterDomainPackage makes Decode find event types of another protobuf
// package (for extensions' own events). Call it from an init function.
func RegisterDomainPackage(pkg protoreflect.FullName) {
	domainPackages = append(domainPackages, pkg)
}

// Encode turns a domain event into EventData with the given id (a zero id
// gets a random one).
func Encode(id uuid.UUID, m proto.Message) (EventData, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return EventData{}, fmt.Errorf("events: encode %T: %w", m, err)
	}
	if id == uuid.Nil {
		id = uuid.New()
	}
	return EventData{ID: id, Type: TypeOf(m), Data: data}, nil
}

// TypeOf is the store event type of a domain event.
func TypeOf(m proto.Message) string { return string(m.ProtoReflect().Descriptor().Name()) }

// Decode parses a stored event into its domain message.
func Decode(typ string, data []byte) (proto.Message, error) {
	for _, pkg := range domainPackages {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(pkg.Append(protoreflect.Name(typ)))
		if err != nil {
			continue
		}
		m := mt.New().Interface()
		if err := proto.Unmarshal(data, m); err != nil {
			return nil, fmt.Errorf("events: decode %s: %w", typ, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("events: unknown event type %q", typ)
}

// Stream names of per-device state and fanout progress.
const (
	DevicePrefix = "device-"
	FanoutPrefix = "fanout-"
)

// DeviceStream names the state stream of one device of a user.
func DeviceStream(userID, deviceID string) string { return DevicePrefix + userID + "/" + deviceID }

// FanoutStream names the fanout checkpoints of a conversation.
func FanoutStream(conversationID string) string { return FanoutPrefix + conversationID }
