package testserver

import (
	"context"
	"errors"
	"math"
	"regexp"
	"strings"

	"github.com/google/uuid"

	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"

	"github.com/imsync/imsync/events"
)

// page is how many events one store read of a $all read or a
// subscription's catch-up asks for.
const page = 256

// Read serves plain reads (count option) and catch-up subscriptions
// (subscription option) of a stream or of $all.
func (h *streamsService) Read(req *api.ReadReq, srv api.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return invalidArgument("read: %v", errNoOptions)
	}
	r := reader{s: h.s, srv: srv, ctx: srv.Context(), uuidString: o.GetUuidOption().GetString_() != nil}
	f, err := parseFilter(o.GetFilter())
	if err != nil {
		return err
	}
	backwards := o.GetReadDirection() == api.ReadReq_Options_Backwards
	_, subscribe := o.GetCountOption().(*api.ReadReq_Options_Subscription)
	switch so := o.GetStreamOption().(type) {
	case *api.ReadReq_Options_Stream:
		if subscribe {
			return r.subscribeStream(so.Stream)
		}
		return r.readStream(so.Stream, backwards, o.GetCount())
	case *api.ReadReq_Options_All:
		if subscribe {
			return r.subscribeAll(so.All, f)
		}
		return r.readAll(so.All, backwards, o.GetCount(), f)
	}
	return invalidArgument("read: neither a stream nor $all")
}

// reader serves one Read call.
type reader struct {
	s          *Server
	srv        api.Streams_ReadServer
	ctx        context.Context
	uuidString bool
}

func (r *reader) send(e events.RecordedEvent, fromAll bool) error {
	return r.srv.Send(readEvent(e, fromAll, r.uuidString))
}

func (r *reader) readStream(so *api.ReadReq_Options_StreamOptions, backwards bool, count uint64) error {
	stream := string(so.GetStreamIdentifier().GetStreamName())
	from := revisionOption(so)
	if name, ok := strings.CutPrefix(stream, metaPrefix); ok {
		return r.s.meta.read(r, stream, name, backwards, from, count)
	}
	if strings.HasPrefix(stream, "$") {
		return r.srv.Send(streamNotFound(stream)) // no system streams here
	}
	if err := events.ValidateStreamName(stream); err != nil {
		return invalidArgument("%v", err)
	}
	dir := events.Forwards
	if backwards {
		dir = events.Backwards
	}
	for sent := uint64(0); sent < count; {
		limit := int(min(count-sent, events.MaxReadLimit))
		evs, err := r.s.store.ReadStream(r.ctx, stream, events.ReadStreamOptions{Direction: dir, From: from, Limit: limit})
		if errors.Is(err, events.ErrStreamNotFound) {
			return r.srv.Send(streamNotFound(stream))
		}
		if err != nil {
			return rpcError(r.ctx, err, stream)
		}
		for _, e := range evs {
			if err := r.send(e, false); err != nil {
				return err
			}
		}
		sent += uint64(len(evs))
		if len(evs) < limit {
			return nil
		}
		last := evs[len(evs)-1].Revision
		if backwards {
			if last == 0 {
				return nil
			}
			from = last - 1
		} else {
			from = last + 1
		}
	}
	return nil
}

func revisionOption(so *api.ReadReq_Options_StreamOptions) events.Revision {
	switch ro := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_End:
		return events.RevisionEnd
	case *api.ReadReq_Options_StreamOptions_Revision:
		return events.Revision(ro.Revision)
	}
	return 0
}

// readAll reads $all. Forwards from a position includes the event there;
// backwards from a position starts with the event before it, as
// EventStoreDB's transaction-file reads do.
func (r *reader) readAll(ao *api.ReadReq_Options_AllOptions, backwards bool, count uint64, f *filter) error {
	var cursor events.Position
	exclusive := false
	switch o := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Start:
		if backwards {
			return nil
		}
	case *api.ReadReq_Options_AllOptions_End:
		if !backwards {
			return nil
		}
		cursor = events.PositionEnd
	case *api.ReadReq_Options_AllOptions_Position:
		cursor = events.Position{Commit: o.Position.GetCommitPosition(), Prepare: o.Position.GetPreparePosition()}
		exclusive = backwards
	default:
		return invalidArgument("read $all: no start position")
	}
	dir := events.Forwards
	if backwards {
		dir = events.Backwards
	}
	sent := uint64(0)
	for sent < count {
		evs, err := r.s.store.ReadAll(r.ctx, events.ReadAllOptions{Direction: dir, From: cursor, Limit: page})
		if err != nil {
			return rpcError(r.ctx, err, "$all")
		}
		for _, e := range evs {
			if exclusive && !beyond(e.Position, cursor, backwards) {
				continue
			}
			cursor, exclusive = e.Position, true
			if !f.match(e) {
				continue
			}
			if err := r.send(e, true); err != nil {
				return err
			}
			if sent++; sent == count {
				return nil
			}
		}
		if len(evs) < page {
			return nil
		}
	}
	return nil
}

// beyond reports whether p comes after cursor in the read's direction.
func beyond(p, cursor events.Position, backwards bool) bool {
	if backwards {
		return p.Less(cursor)
	}
	return cursor.Less(p)
}

func (r *reader) confirm() error {
	return r.srv.Send(&api.ReadResp{Content: &api.ReadResp_Confirmation{
		Confirmation: &api.ReadResp_SubscriptionConfirmation{SubscriptionId: uuid.NewString()},
	}})
}

func (r *reader) caughtUp() error {
	return r.srv.Send(&api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}})
}

// subscribeStream confirms, sends the stream's events after the start
// (exclusive), caught_up, then live events until the call ends.
func (r *reader) subscribeStream(so *api.ReadReq_Options_StreamOptions) error {
	stream := string(so.GetStreamIdentifier().GetStreamName())
	if strings.HasPrefix(stream, "$") {
		return invalidArgument("subscribe to %q: system and metadata streams are not supported by this server", stream)
	}
	if err := events.ValidateStreamName(stream); err != nil {
		return invalidArgument("%v", err)
	}
	var (
		sub  events.Subscription
		next events.Revision
		err  error
	)
	switch ro := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_End:
		// Taken before the confirmation: nothing appended after it is missed.
		if sub, err = r.s.store.SubscribeToStream(r.ctx, stream, events.SubscribeFromEnd()); err != nil {
			return rpcError(r.ctx, err, stream)
		}
		defer sub.Close()
	case *api.ReadReq_Options_StreamOptions_Revision:
		if ro.Revision == math.MaxUint64 {
			return invalidArgument("subscribe to %q after revision %d", stream, ro.Revision)
		}
		next = events.Revision(ro.Revision) + 1
	}
	if err := r.confirm(); err != nil {
		return err
	}
	if sub == nil {
		for {
			evs, err := r.s.store.ReadStream(r.ctx, stream, events.ReadStreamOptions{From: next, Limit: page})
			if errors.Is(err, events.ErrStreamNotFound) {
				break
			}
			if err != nil {
				return rpcError(r.ctx, err, stream)
			}
			for _, e := range evs {
				if err := r.send(e, false); err != nil {
					return err
				}
				next = e.Revision + 1
			}
			if len(evs) < page {
				break
			}
		}
		from := events.SubscribeFromStart()
		if next > 0 {
			from = events.SubscribeAfterRevision(next - 1)
		}
		if sub, err = r.s.store.SubscribeToStream(r.ctx, stream, from); err != nil {
			return rpcError(r.ctx, err, stream)
		}
		defer sub.Close()
	}
	if err := r.caughtUp(); err != nil {
		return err
	}
	for {
		e, err := sub.Recv(r.ctx)
		if err != nil {
			return rpcError(r.ctx, err, stream)
		}
		if err := r.send(e, false); err != nil {
			return err
		}
	}
}

// subscribeAll is subscribeStream for $all, with an optional filter: a
// filtered subscription also sends a checkpoint every filter.interval
// events looked at (matching or not) and when it catches up.
func (r *reader) subscribeAll(ao *api.ReadReq_Options_AllOptions, f *filter) error {
	var (
		sub       events.Subscription
		cursor    events.Position
		exclusive bool
		err       error
	)
	switch o := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_End:
		if sub, err = r.s.store.SubscribeToAll(r.ctx, events.SubscribeAllOptions{From: events.SubscribeFromEnd()}); err != nil {
			return rpcError(r.ctx, err, "$all")
		}
		defer sub.Close()
	case *api.ReadReq_Options_AllOptions_Position:
		cursor = events.Position{Commit: o.Position.GetCommitPosition(), Prepare: o.Position.GetPreparePosition()}
		exclusive = true
	}
	if err := r.confirm(); err != nil {
		return err
	}
	cp := checkpointer{r: r, f: f}
	if sub == nil {
		for {
			evs, err := r.s.store.ReadAll(r.ctx, events.ReadAllOptions{From: cursor, Limit: page})
			if err != nil {
				return rpcError(r.ctx, err, "$all")
			}
			for _, e := range evs {
				if exclusive && !cursor.Less(e.Position) {
					continue
				}
				cursor, exclusive = e.Position, true
				if err := cp.deliver(e); err != nil {
					return err
				}
			}
			if len(evs) < page {
				break
			}
		}
		from := events.SubscribeFromStart()
		if exclusive {
			from = events.SubscribeAfterPosition(cursor)
		}
		if sub, err = r.s.store.SubscribeToAll(r.ctx, events.SubscribeAllOptions{From: from}); err != nil {
			return rpcError(r.ctx, err, "$all")
		}
		defer sub.Close()
	}
	if err := cp.flush(); err != nil {
		return err
	}
	if err := r.caughtUp(); err != nil {
		return err
	}
	for {
		e, err := sub.Recv(r.ctx)
		if err != nil {
			return rpcError(r.ctx, err, "$all")
		}
		if err := cp.deliver(e); err != nil {
			return err
		}
	}
}

// checkpointer sends the events a filter keeps and, for filtered
// subscriptions, checkpoints: the position of the last event looked at, from
// which a resumed subscription misses nothing.
type checkpointer struct {
	r       *reader
	f       *filter
	scanned uint64
	last    events.Position
}

func (c *checkpointer) deliver(e events.RecordedEvent) error {
	if c.f.match(e) {
		if err := c.r.send(e, true); err != nil {
			return err
		}
	}
	if c.f == nil {
		return nil
	}
	c.scanned++
	c.last = e.Position
	if c.scanned >= c.f.interval {
		return c.flush()
	}
	return nil
}

func (c *checkpointer) flush() error {
	if c.f == nil || c.scanned == 0 {
		return nil
	}
	c.scanned = 0
	return c.r.srv.Send(&api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
		CommitPosition: c.last.Commit, PreparePosition: c.last.Prepare,
	}}})
}

// filter is a $all filter: by stream name or event type, with prefixes or
// a regular expression. A nil *filter keeps everything.
type filter struct {
	onType   bool
	prefixes []string
	re       *regexp.Regexp
	interval uint64 // events looked at between checkpoints
}

// defaultSearchWindow stands for a filter without a maximum search window.
const defaultSearchWindow = 32

func parseFilter(fo *api.ReadReq_Options_FilterOptions) (*filter, error) {
	if fo == nil {
		return nil, nil
	}
	f := &filter{}
	var expr *api.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *api.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = x.StreamIdentifier
	case *api.ReadReq_Options_FilterOptions_EventType:
		expr, f.onType = x.EventType, true
	default:
		return nil, invalidArgument("filter without a stream or event type expression")
	}
	f.prefixes = expr.GetPrefix()
	if rx := expr.GetRegex(); rx != "" {
		re, err := regexp.Compile(rx)
		if err != nil {
			return nil, invalidArgument("filter regex: %v", err)
		}
		f.re = re
	}
	window := uint64(defaultSearchWindow)
	if m := fo.GetMax(); m > 0 {
		window = uint64(m)
	}
	f.interval = window * uint64(max(fo.GetCheckpointIntervalMultiplier(), 1))
	return f, nil
}

func (f *filter) match(e events.RecordedEvent) bool {
	if f == nil {
		return true
	}
	subject := e.Stream
	if f.onType {
		subject = e.Type
	}
	if f.re != nil && f.re.MatchString(subject) {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(subject, p) {
			return true
		}
	}
	return false
}
