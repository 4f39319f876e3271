// Package events is imsync's event store: named streams of immutable events
// with EventStoreDB semantics, a global log ($all), optimistic concurrency,
// idempotent appends, catch-up subscriptions and per-stream retention.
//
// # Usage
//
//	store, err := events.Open("/var/lib/imsync/events", events.Options{})
//	if err != nil { ... }
//	defer store.Close()
//
//	// Append with the revision you last saw; a concurrent writer makes it
//	// fail with *WrongExpectedRevisionError instead of forking the stream.
//	res, err := store.AppendToStream(ctx, events.ConversationStream("c1"), events.Exactly(last),
//		events.EventData{ID: id, Type: "MessageSent", Data: payload})
//
//	// Page a stream, newest first.
//	page, err := store.ReadStream(ctx, "conv-c1", events.ReadStreamOptions{
//		Direction: events.Backwards, From: events.RevisionEnd, Limit: 50})
//
//	// Follow every conversation from a checkpoint: history, then live.
//	sub, err := store.SubscribeToAll(ctx, events.SubscribeAllOptions{
//		From:   events.SubscribeAfterPosition(checkpoint),
//		Filter: events.Filter{StreamPrefixes: []string{"conv-"}}})
//	for { e, err := sub.Recv(ctx); ... }
//
// The caller's duties: keep the revision (or position) it last processed;
// give every event a stable ID when a retry is possible, so that an append
// repeated after a lost acknowledgement is recognised and not duplicated;
// page reads (every read has a Limit).
//
// # Guarantees
//
//   - An append returns only once its events are durable (fsynced by the
//     embedded store); it is atomic: all its events or none are visible.
//   - Revisions of a stream are gapless from 0; global positions strictly
//     increase in commit order. Readers never see an event that is not yet
//     durable.
//   - With the same event ids, an append repeated at the same place
//     (NoStream or Exactly: the place the expectation names; Any: within the
//     store's retry window) returns the first result and writes nothing.
//   - Subscriptions deliver each event once, in order, history then live,
//     with no gap at the switch. They are pull-based: a subscriber that
//     stops reading costs one page of memory and never slows writers.
//   - Retention ($maxAge, $maxCount, $tb) and soft deletion hide events from
//     every read at once; scavenging later deletes them from disk.
//   - Bad input is refused with ErrInvalidArgument before anything changes.
//   - Damaged storage is ErrCorrupt, never a panic: Open refuses a store
//     whose recovered log is behind its durable high-water mark (acknowledged
//     events missing), and damage found while running makes every later
//     call fail with it. Recover opens such a store accepting the loss,
//     without ever handing out an acknowledged position again.
//   - Embedded.Checkpoint copies an open store while it takes appends: the
//     copy opens with Open and holds exactly the events durable when it was
//     cut (backups, and tools that read beside a running server).
//
// # Backends
//
// Open is the embedded store (pebble underneath, group commit: concurrent
// appends share one fsync); OpenInMemory is the same engine without a disk,
// for tests. Package events/esdb is the backend on an EventStoreDB or
// KurrentDB server, through the official Go client; it adds ErrUnavailable
// (the server could not be reached: repeat a write with the same event
// ids). Every backend passes the suite in package storetest.
package events
