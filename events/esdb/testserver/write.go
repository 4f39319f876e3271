package testserver

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"

	"github.com/imsync/imsync/events"
)

// streamsService is the Streams gRPC service: appends, reads,
// subscriptions, deletes.
type streamsService struct {
	api.UnimplementedStreamsServer
	s *Server
}

// metaPrefix names a stream's metadata stream: "$$" + stream.
const metaPrefix = "$$"

// Append reads the whole request (options, then one proposed message per
// event) before it answers, as EventStoreDB does.
func (h *streamsService) Append(srv api.Streams_AppendServer) error {
	ctx := srv.Context()
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	var evs []events.EventData
	var badEvent error
	size := 0
	for {
		m, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		pm := m.GetProposedMessage()
		if pm == nil {
			badEvent = errors.New("append message without an event")
			continue
		}
		size += len(pm.GetData()) + len(pm.GetCustomMetadata())
		if pm.GetMetadata()[keyContentType] == contentJSON {
			size += len(jsonMark) // stored with the custom metadata
		}
		if badEvent != nil || size > events.MaxAppendSize {
			continue // keep draining; the answer is an error
		}
		e, err := proposedToEvent(pm)
		if err != nil {
			badEvent = err
			continue
		}
		evs = append(evs, e)
	}
	if opts == nil {
		return invalidArgument("append: the first message must carry the options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	expected := expectedFromProto(opts)
	switch {
	case badEvent != nil:
		return invalidArgument("append to %q: %v", stream, badEvent)
	case size > events.MaxAppendSize:
		return maxAppendSizeExceeded(ctx)
	}
	if name, ok := strings.CutPrefix(stream, metaPrefix); ok {
		return h.s.meta.append(ctx, srv, name, expected, evs)
	}
	if err := checkUserStream(stream); err != nil {
		return err
	}
	if len(evs) == 0 {
		return h.appendNothing(ctx, srv, stream, expected)
	}
	res, err := h.s.store.AppendToStream(ctx, stream, expected, evs...)
	var wrong *events.WrongExpectedRevisionError
	if errors.As(err, &wrong) {
		return srv.SendAndClose(wrongExpectedResp(expected, wrong.Exists, uint64(wrong.Actual)))
	}
	if err != nil {
		return rpcError(ctx, err, stream)
	}
	h.s.marks.note(res.Position)
	return srv.SendAndClose(successResp(true, uint64(res.NextExpected), res.Position))
}

// appendNothing answers an append without events: it only checks the
// expectation against the stream's last visible event.
func (h *streamsService) appendNothing(ctx context.Context, srv api.Streams_AppendServer, stream string, expected events.ExpectedRevision) error {
	last, err := h.s.store.ReadStream(ctx, stream, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	exists := err == nil && len(last) > 0
	if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
		return rpcError(ctx, err, stream)
	}
	var rev uint64
	if exists {
		rev = uint64(last[0].Revision)
	}
	if !expectedOK(expected, exists, rev) {
		return srv.SendAndClose(wrongExpectedResp(expected, exists, rev))
	}
	resp := successResp(exists, rev, events.Position{})
	resp.GetSuccess().PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	return srv.SendAndClose(resp)
}

// checkUserStream refuses names the store cannot hold: EventStoreDB's
// system streams ("$..."), which this server does not have.
func checkUserStream(stream string) error {
	if strings.HasPrefix(stream, "$") {
		return invalidArgument("stream %q: system streams are not supported by this server", stream)
	}
	if err := events.ValidateStreamName(stream); err != nil {
		return invalidArgument("%v", err)
	}
	return nil
}

func successResp(exists bool, rev uint64, pos events.Position) *api.AppendResp {
	ok := &api.AppendResp_Success{
		PositionOption: &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{
			CommitPosition: pos.Commit, PreparePosition: pos.Prepare,
		}},
	}
	if exists {
		ok.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: rev}
	} else {
		ok.CurrentRevisionOption = &api.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	}
	return &api.AppendResp{Result: &api.AppendResp_Success_{Success: ok}}
}

// wrongExpectedResp fills both the current fields and those of servers
// before 20.6, as EventStoreDB does.
func wrongExpectedResp(expected events.ExpectedRevision, exists bool, actual uint64) *api.AppendResp {
	w := &api.AppendResp_WrongExpectedVersion{}
	if exists {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: actual}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: actual}
	} else {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	}
	if rev, exact := expected.Revision(); exact {
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: uint64(rev)}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: uint64(rev)}
	} else {
		switch expected {
		case events.NoStream:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
		case events.StreamExists:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
			w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
		default:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
			w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
		}
	}
	return &api.AppendResp{Result: &api.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}}
}

// Delete soft-deletes a stream. Deleting a stream that has no events
// succeeds when the expectation allows it, as in EventStoreDB.
func (h *streamsService) Delete(ctx context.Context, req *api.DeleteReq) (*api.DeleteResp, error) {
	opts := req.GetOptions()
	if opts == nil {
		return nil, invalidArgument("delete: %v", errNoOptions)
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	if err := checkUserStream(stream); err != nil {
		return nil, err
	}
	expected := expectedFromProto(opts)
	res, err := h.s.store.DeleteStream(ctx, stream, expected)
	if errors.Is(err, events.ErrStreamNotFound) {
		res.Position, err = h.s.marks.head(ctx, h.s.store)
	}
	if err != nil {
		return nil, rpcError(ctx, err, stream)
	}
	h.s.marks.note(res.Position)
	return &api.DeleteResp{PositionOption: &api.DeleteResp_Position_{Position: &api.DeleteResp_Position{
		CommitPosition: res.Position.Commit, PreparePosition: res.Position.Prepare,
	}}}, nil
}

// Tombstone deletes a stream for ever.
func (h *streamsService) Tombstone(ctx context.Context, req *api.TombstoneReq) (*api.TombstoneResp, error) {
	opts := req.GetOptions()
	if opts == nil {
		return nil, invalidArgument("tombstone: %v", errNoOptions)
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	if err := checkUserStream(stream); err != nil {
		return nil, err
	}
	expected := expectedFromProto(opts)
	res, err := h.s.store.TombstoneStream(ctx, stream, expected)
	if err != nil {
		return nil, rpcError(ctx, err, stream)
	}
	h.s.marks.note(res.Position)
	return &api.TombstoneResp{PositionOption: &api.TombstoneResp_Position_{Position: &api.TombstoneResp_Position{
		CommitPosition: res.Position.Commit, PreparePosition: res.Position.Prepare,
	}}}, nil
}

// highWater is the highest $all position the server has reported. Writes
// that get no position of their own from the store (metadata, deleting a
// stream without events) report it, or the last event of $all if that is
// later, so that reported positions never go back while the server runs.
type highWater struct {
	mu  sync.Mutex
	pos events.Position
}

func (w *highWater) note(p events.Position) {
	w.mu.Lock()
	if w.pos.Less(p) {
		w.pos = p
	}
	w.mu.Unlock()
}

func (w *highWater) head(ctx context.Context, store events.Store) (events.Position, error) {
	last, err := store.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1})
	if err != nil {
		return events.Position{}, err
	}
	if len(last) > 0 {
		w.note(last[0].Position)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pos, nil
}
