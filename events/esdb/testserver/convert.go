package testserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// Keys of the system metadata an event carries on the wire.
const (
	keyType        = "type"
	keyContentType = "content-type"
	keyCreated     = "created"

	contentJSON   = "application/json"
	contentBinary = "application/octet-stream"
)

// jsonMark prefixes the stored custom metadata of events appended with
// content-type application/json. events.Store keeps no content type, and
// EventStoreDB remembers only "JSON or not", so one marker is enough; it is
// stripped again on every read.
var jsonMark = []byte("\x00esdb-testserver:json\x00")

func wrapMetadata(custom []byte, isJSON bool) []byte {
	if !isJSON {
		return custom
	}
	out := make([]byte, 0, len(jsonMark)+len(custom))
	out = append(out, jsonMark...)
	return append(out, custom...)
}

func unwrapMetadata(stored []byte) (custom []byte, isJSON bool) {
	if rest, ok := bytes.CutPrefix(stored, jsonMark); ok {
		return rest, true
	}
	return stored, false
}

// uuidFromProto reads an event id in either wire form.
func uuidFromProto(id *shared.UUID) (uuid.UUID, error) {
	switch v := id.GetValue().(type) {
	case *shared.UUID_Structured_:
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], uint64(v.Structured.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(b[8:], uint64(v.Structured.GetLeastSignificantBits()))
		return uuid.UUID(b), nil
	case *shared.UUID_String_:
		return uuid.Parse(v.String_)
	}
	return uuid.Nil, errors.New("event without id")
}

func uuidToProto(id uuid.UUID, asString bool) *shared.UUID {
	if asString {
		return &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}}
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits:  int64(binary.BigEndian.Uint64(id[:8])),
		LeastSignificantBits: int64(binary.BigEndian.Uint64(id[8:])),
	}}}
}

// proposedToEvent converts one proposed message of an append.
func proposedToEvent(m *api.AppendReq_ProposedMessage) (events.EventData, error) {
	id, err := uuidFromProto(m.GetId())
	if err != nil {
		return events.EventData{}, fmt.Errorf("event id: %w", err)
	}
	typ, ok := m.GetMetadata()[keyType]
	if !ok {
		return events.EventData{}, fmt.Errorf("required metadata key %q missing", keyType)
	}
	ct, ok := m.GetMetadata()[keyContentType]
	if !ok {
		return events.EventData{}, fmt.Errorf("required metadata key %q missing", keyContentType)
	}
	return events.EventData{
		ID:       id,
		Type:     typ,
		Data:     m.GetData(),
		Metadata: wrapMetadata(m.GetCustomMetadata(), ct == contentJSON),
	}, nil
}

// ticks is EventStoreDB's "created" stamp: 100 ns units since the Unix epoch.
func ticks(e events.RecordedEvent) string {
	return strconv.FormatInt(e.Created.UnixNano()/100, 10)
}

// readEvent converts a recorded event. fromAll says the event is read from
// $all, whose replies carry the commit position outside the event too.
func readEvent(e events.RecordedEvent, fromAll, uuidString bool) *api.ReadResp {
	custom, isJSON := unwrapMetadata(e.Metadata)
	ct := contentBinary
	if isJSON {
		ct = contentJSON
	}
	if custom == nil {
		custom = []byte{}
	}
	data := e.Data
	if data == nil {
		data = []byte{}
	}
	ev := &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               uuidToProto(e.ID, uuidString),
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(e.Stream)},
			StreamRevision:   uint64(e.Revision),
			PreparePosition:  e.Position.Prepare,
			CommitPosition:   e.Position.Commit,
			Metadata: map[string]string{
				keyType:        e.Type,
				keyContentType: ct,
				keyCreated:     ticks(e),
			},
			CustomMetadata: custom,
			Data:           data,
		},
	}
	if fromAll {
		ev.Position = &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: e.Position.Commit}
	} else {
		ev.Position = &api.ReadResp_ReadEvent_NoPosition{NoPosition: &shared.Empty{}}
	}
	return &api.ReadResp{Content: &api.ReadResp_Event{Event: ev}}
}

func streamNotFound(stream string) *api.ReadResp {
	return &api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
		StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(stream)},
	}}}
}

// expectation is the expected revision of a write as the wire states it.
type expectation interface {
	GetRevision() uint64
	GetNoStream() *shared.Empty
	GetAny() *shared.Empty
	GetStreamExists() *shared.Empty
}

func expectedFromProto(o expectation) events.ExpectedRevision {
	switch {
	case o.GetAny() != nil:
		return events.Any
	case o.GetNoStream() != nil:
		return events.NoStream
	case o.GetStreamExists() != nil:
		return events.StreamExists
	}
	return events.Exactly(events.Revision(o.GetRevision()))
}

// expectedOK reports whether a stream in state (exists, last) satisfies e.
func expectedOK(e events.ExpectedRevision, exists bool, last uint64) bool {
	if rev, exact := e.Revision(); exact {
		return exists && uint64(rev) == last
	}
	switch e {
	case events.NoStream:
		return !exists
	case events.StreamExists:
		return exists
	}
	return true
}

// EventStoreDB's numbers for the symbolic expected versions, as its
// wrong-expected-version trailers carry them.
func expectedVersionNumber(e events.ExpectedRevision) int64 {
	if rev, exact := e.Revision(); exact {
		return int64(rev)
	}
	switch e {
	case events.NoStream:
		return -1
	case events.StreamExists:
		return -4
	}
	return -2 // any
}
