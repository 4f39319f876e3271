package esdb

import (
	"bytes"
	"context"
	"errors"
	"time"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

func expectedOf(e events.ExpectedRevision) client.ExpectedRevision {
	switch e.Kind() {
	case events.ExpectNoStream:
		return client.NoStream{}
	case events.ExpectStreamExists:
		return client.StreamExists{}
	case events.ExpectExact:
		r, _ := e.Revision()
		return client.Revision(uint64(r))
	}
	return client.Any{}
}

func position(p client.Position) events.Position {
	return events.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// AppendToStream implements events.Store. The server makes a repeated
// append with the same event ids idempotent: at the place an exact
// revision or NoStream names, for any age of the first; with Any or
// StreamExists, while the server still remembers the ids.
func (s *Store) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	if err := events.ValidateAppend(stream, expected, evs); err != nil {
		return events.WriteResult{}, err
	}
	// Copies: a call that outlives its caller's ctx still reads them.
	data := make([]client.EventData, len(evs))
	for i, e := range evs {
		id := e.ID
		if id == uuid.Nil {
			id = uuid.New()
		}
		data[i] = client.EventData{
			EventID:     id,
			EventType:   e.Type,
			ContentType: client.ContentTypeBinary,
			Data:        bytes.Clone(e.Data),
			Metadata:    bytes.Clone(e.Metadata),
		}
	}
	var res *client.WriteResult
	err := s.do(ctx, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = c.AppendToStream(ctx, stream, client.AppendToStreamOptions{ExpectedRevision: expectedOf(expected)}, data...)
		return err
	})
	if err != nil {
		if w, ok := s.wrongRevision(ctx, stream, expected, err); ok {
			return events.WriteResult{}, w
		}
		return events.WriteResult{}, s.mapErr(ctx, "append to", stream, err)
	}
	out := events.WriteResult{
		NextExpected: events.Revision(res.NextExpectedVersion),
		Position:     events.Position{Commit: res.CommitPosition, Prepare: res.PreparePosition},
	}
	if out.Position == (events.Position{}) {
		// An append the server recognised as a repeat is answered without
		// a position: it is the position of the last event written first.
		got, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{From: out.NextExpected, Limit: 1})
		if err == nil && len(got) == 1 && got[0].Revision == out.NextExpected {
			out.Position = got[0].Position
		}
	}
	return out, nil
}

// SetStreamMetadata implements events.Store. It replaces the stream's
// whole metadata (ACLs and custom properties too). $maxAge is kept in
// whole seconds, rounded up.
func (s *Store) SetStreamMetadata(ctx context.Context, stream string, meta events.StreamMetadata) error {
	if err := events.ValidateStreamName(stream); err != nil {
		return err
	}
	if err := events.ValidateMetadata(meta); err != nil {
		return err
	}
	var m client.StreamMetadata
	if meta.MaxAge > 0 {
		m.SetMaxAge((meta.MaxAge + time.Second - 1).Truncate(time.Second))
	}
	if meta.MaxCount > 0 {
		m.SetMaxCount(meta.MaxCount)
	}
	if meta.TruncateBefore > 0 {
		m.SetTruncateBefore(uint64(meta.TruncateBefore))
	}
	err := s.do(ctx, func(ctx context.Context, c *client.Client) error {
		_, err := c.SetStreamMetadata(ctx, stream, client.AppendToStreamOptions{ExpectedRevision: client.Any{}}, m)
		return err
	})
	return s.mapErr(ctx, "set metadata of", stream, err)
}

// GetStreamMetadata implements events.Store.
func (s *Store) GetStreamMetadata(ctx context.Context, stream string) (events.StreamMetadata, error) {
	if err := events.ValidateStreamName(stream); err != nil {
		return events.StreamMetadata{}, err
	}
	var m *client.StreamMetadata
	err := s.do(ctx, func(ctx context.Context, c *client.Client) error {
		var err error
		m, err = c.GetStreamMetadata(ctx, stream, client.ReadStreamOptions{})
		return err
	})
	if hasCode(err, client.ErrorCodeResourceNotFound) {
		return events.StreamMetadata{}, nil // none set
	}
	if err != nil {
		return events.StreamMetadata{}, s.mapErr(ctx, "get metadata of", stream, err)
	}
	var out events.StreamMetadata
	if v := m.MaxAge(); v != nil {
		out.MaxAge = *v
	}
	if v := m.MaxCount(); v != nil {
		out.MaxCount = *v
	}
	if v := m.TruncateBefore(); v != nil {
		out.TruncateBefore = events.Revision(*v)
	}
	return out, nil
}

// DeleteStream implements events.Store. EventStoreDB accepts the deletion
// of a stream without events; the store's contract refuses it with
// ErrStreamNotFound, so the stream is looked at first (unless an exact
// revision makes the server refuse it anyway).
func (s *Store) DeleteStream(ctx context.Context, stream string, expected events.ExpectedRevision) (events.DeleteResult, error) {
	if err := events.ValidateStreamName(stream); err != nil {
		return events.DeleteResult{}, err
	}
	if expected.Kind() != events.ExpectExact && events.ValidateExpected(expected) == nil {
		_, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
		if errors.Is(err, events.ErrStreamNotFound) {
			return events.DeleteResult{}, err
		}
	}
	return s.delete(ctx, "delete", stream, expected, func(ctx context.Context, c *client.Client) (*client.DeleteResult, error) {
		return c.DeleteStream(ctx, stream, client.DeleteStreamOptions{ExpectedRevision: expectedOf(expected)})
	})
}

// TombstoneStream implements events.Store.
func (s *Store) TombstoneStream(ctx context.Context, stream string, expected events.ExpectedRevision) (events.DeleteResult, error) {
	return s.delete(ctx, "tombstone", stream, expected, func(ctx context.Context, c *client.Client) (*client.DeleteResult, error) {
		return c.TombstoneStream(ctx, stream, client.TombstoneStreamOptions{ExpectedRevision: expectedOf(expected)})
	})
}

func (s *Store) delete(ctx context.Context, op, stream string, expected events.ExpectedRevision, call func(context.Context, *client.Client) (*client.DeleteResult, error)) (events.DeleteResult, error) {
	if err := events.ValidateStreamName(stream); err != nil {
		return events.DeleteResult{}, err
	}
	if err := events.ValidateExpected(expected); err != nil {
		return events.DeleteResult{}, err
	}
	var res *client.DeleteResult
	err := s.do(ctx, func(ctx context.Context, c *client.Client) error {
		var err error
		res, err = call(ctx, c)
		return err
	})
	if err != nil {
		if w, ok := s.wrongRevision(ctx, stream, expected, err); ok {
			return events.DeleteResult{}, w
		}
		return events.DeleteResult{}, s.mapErr(ctx, op, stream, err)
	}
	return events.DeleteResult{Position: position(res.Position)}, nil
}
