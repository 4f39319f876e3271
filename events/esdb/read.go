package esdb

import (
	"context"
	"errors"
	"io"
	"strings"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/imsync/imsync/events"
)

// scanPage is how many events of $all one request reads when a filter
// drops some of them.
const scanPage = 1000

func recorded(r *client.RecordedEvent) events.RecordedEvent {
	return events.RecordedEvent{
		ID:       r.EventID,
		Type:     r.EventType,
		Data:     r.Data,
		Metadata: r.UserMetadata,
		Stream:   r.StreamID,
		Revision: events.Revision(r.EventNumber),
		Position: position(r.Position),
		Created:  r.CreatedDate,
	}
}

// system reports whether an event is the server's own: in a system stream
// ($-prefixed: metadata, statistics, projections) or a tombstone marker.
func system(r *client.RecordedEvent) bool {
	return strings.HasPrefix(r.StreamID, "$") || r.EventType == "$streamDeleted"
}

func matches(f events.Filter, stream string) bool {
	if len(f.StreamPrefixes) == 0 {
		return true
	}
	for _, p := range f.StreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// drain reads every event of a read.
func drain(rs *client.ReadStream) ([]*client.RecordedEvent, error) {
	defer rs.Close()
	var out []*client.RecordedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if r := e.OriginalEvent(); r != nil {
			out = append(out, r)
		}
	}
}

// ReadStream implements events.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, opts events.ReadStreamOptions) ([]events.RecordedEvent, error) {
	if err := events.ValidateStreamName(stream); err != nil {
		return nil, err
	}
	if err := events.ValidateRead(opts.Limit, opts.Direction); err != nil {
		return nil, err
	}
	o := client.ReadStreamOptions{Direction: client.Forwards, From: client.Revision(uint64(opts.From))}
	if opts.Direction == events.Backwards {
		o.Direction = client.Backwards
	}
	if opts.From == events.RevisionEnd {
		o.From = client.End{}
	}
	var got []*client.RecordedEvent
	err := s.read(ctx, func(ctx context.Context, c *client.Client) error {
		rs, err := c.ReadStream(ctx, stream, o, uint64(opts.Limit))
		if err != nil {
			return err
		}
		got, err = drain(rs)
		return err
	})
	if err != nil {
		return nil, s.mapErr(ctx, "read", stream, err)
	}
	out := make([]events.RecordedEvent, 0, len(got))
	for _, r := range got {
		if r.EventType == "$streamDeleted" {
			continue
		}
		out = append(out, recorded(r))
	}
	return out, nil
}

// read is do for calls that change nothing: one more attempt when the
// connection dropped under it.
func (s *Store) read(ctx context.Context, fn func(context.Context, *client.Client) error) error {
	err := s.do(ctx, fn)
	if err != nil && errors.Is(s.mapErr(ctx, "", "", err), events.ErrUnavailable) {
		err = s.do(ctx, fn)
	}
	return err
}

// ReadAll implements events.Store. The client reads $all without a server
// side filter, so filtered reads and the removal of the server's own
// events happen here, a page of scanPage events at a time.
//
// Reading backwards from an event's position, EventStoreDB starts before
// that event; the store's contract includes it, so it is read first.
func (s *Store) ReadAll(ctx context.Context, opts events.ReadAllOptions) ([]events.RecordedEvent, error) {
	if err := events.ValidateRead(opts.Limit, opts.Direction); err != nil {
		return nil, err
	}
	var out []events.RecordedEvent
	var from client.AllPosition
	switch opts.From {
	case events.PositionStart:
		from = client.Start{}
	case events.PositionEnd:
		from = client.End{}
	default:
		from = client.Position{Commit: opts.From.Commit, Prepare: opts.From.Prepare}
	}
	dir := client.Forwards
	if opts.Direction == events.Backwards {
		dir = client.Backwards
	}
	var seen *events.Position // the event at the cursor, already taken or dropped
	if p, ok := from.(client.Position); ok && dir == client.Backwards {
		first, err := s.readAllPage(ctx, client.Forwards, p, 1)
		if err != nil {
			return nil, err
		}
		if len(first) == 1 && position(first[0].Position) == opts.From {
			if !system(first[0]) && matches(opts.Filter, first[0].StreamID) {
				out = append(out, recorded(first[0]))
			}
			seen = &opts.From
		}
	}
	for len(out) < opts.Limit {
		want := opts.Limit - len(out)
		if len(opts.Filter.StreamPrefixes) > 0 || want < scanPage {
			want = max(want, scanPage) // some may be dropped
		}
		page, err := s.readAllPage(ctx, dir, from, want)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, r := range page {
			p := position(r.Position)
			if seen != nil && p == *seen {
				continue
			}
			n++
			if len(out) < opts.Limit && !system(r) && matches(opts.Filter, r.StreamID) {
				out = append(out, recorded(r))
			}
		}
		if n == 0 || len(page) < want {
			break // the end of the log
		}
		last := position(page[len(page)-1].Position)
		seen = &last
		from = client.Position{Commit: last.Commit, Prepare: last.Prepare}
	}
	return out, nil
}

func (s *Store) readAllPage(ctx context.Context, dir client.Direction, from client.AllPosition, n int) ([]*client.RecordedEvent, error) {
	var got []*client.RecordedEvent
	err := s.read(ctx, func(ctx context.Context, c *client.Client) error {
		rs, err := c.ReadAll(ctx, client.ReadAllOptions{Direction: dir, From: from}, uint64(n))
		if err != nil {
			return err
		}
		got, err = drain(rs)
		return err
	})
	if err != nil {
		return nil, s.mapErr(ctx, "read", "$all", err)
	}
	return got, nil
}
