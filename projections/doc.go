// Package projections replays the event store into read models — the
// conversation list, search, statistics, exports — from any position, with
// checkpoints, and without a running server.
//
// # Usage
//
//	// A projection: a name and a handler, plus optional interfaces.
//	type counts struct{ n map[string]int }
//
//	func (*counts) Name() string { return "message-counts" }
//	func (*counts) Filter() events.Filter { // optional: only conv-* streams
//		return events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
//	}
//	func (c *counts) Handle(ctx context.Context, e projections.Event) error {
//		if _, ok := e.Message.(*eventspb.MessageSent); ok {
//			c.n[e.Stream]++
//		}
//		return nil
//	}
//	// optional: in-memory state saved atomically with the checkpoint
//	func (c *counts) Snapshot() ([]byte, error) { return json.Marshal(c.n) }
//	func (c *counts) Restore(b []byte) error {
//		c.n = map[string]int{}
//		if b == nil {
//			return nil
//		}
//		return json.Unmarshal(b, &c.n)
//	}
//
//	r := &projections.Runner{
//		Store:       store, // any events.Store, opened without a server
//		Checkpoints: projections.FileCheckpoints{Dir: "/var/lib/imsync/projections"},
//		Projection:  &counts{},
//	}
//	err := r.Run(ctx)     // from the checkpoint (or r.From), history then live, until ctx ends
//	                      // (or, with r.Until set, until the event at that position)
//	err = r.Rebuild(ctx)  // forget the checkpoint, reset, replay from r.From
//
// # Guarantees and the projection's duties
//
// The runner subscribes to $all after the projection's checkpoint (the
// projection's Filter selects streams by prefix), decodes each event
// (Event.Message is the protobuf domain event, nil for event types that are
// not domain events) and calls Handle, one event at a time, in global
// order. It saves the checkpoint every Runner.SaveEvery events (spaced by
// Runner.SaveInterval when set, so that saving a large state does not
// dominate a long replay), when the subscription has been idle for
// Runner.SaveIdle, and when ctx ends.
//
//   - Nothing is skipped: an event that does not decode, or whose Handle
//     fails, stops Run with an *EventError carrying that event's position.
//     The checkpoint stays before it; the next Run delivers it again.
//   - A restart neither loses nor double-applies an event when the
//     projection is Stateful: its Snapshot is written with the checkpoint
//     position in one atomic write (FileCheckpoints: temporary file, fsync,
//     rename, directory fsync), and Run calls Restore with the state of
//     that same checkpoint before resuming after its position.
//   - Projections whose state lives elsewhere (a database, an index) get
//     each event at least once: the events after the last saved checkpoint
//     are delivered again after a crash. Their Handle must be idempotent
//     (keyed by Stream and Revision), or they must store the checkpoint in
//     the same transaction as their state, through their own
//     CheckpointStore. Rebuild calls their Reset (Resetter).
//
// Stats is a built-in projection (messages per day, active users, fanout,
// delivery lag); New and Names look projections up by name for
// `imsync replay`.
//
// See docs/analysts.md for a guide and the export formats.
package projections
