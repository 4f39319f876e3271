// Package esdb is the events.Store backend on an EventStoreDB (or
// KurrentDB) server, through the official Go client
// github.com/EventStore/EventStore-Client-Go/v4.
//
// # Usage
//
//	store, err := esdb.Open(ctx, "esdb://localhost:2113?tls=false", esdb.Options{})
//	if err != nil { ... } // events.ErrUnavailable: no server answered
//	defer store.Close()
//	res, err := store.AppendToStream(ctx, events.ConversationStream("c1"), events.Exactly(last),
//		events.EventData{ID: id, Type: "MessageSent", Data: payload})
//
// The connection string goes to the client as it is: TLS settings,
// credentials (esdb://user:pass@host:2113) and cluster discovery
// (esdb+discover://) included.
//
// # What the server does, and what this package adds
//
// The server checks expected revisions, makes appends repeated with the
// same event ids idempotent, applies $maxAge, $maxCount and $tb to stream
// reads and subscriptions, and switches catch-up subscriptions from history
// to live. This package maps revisions, positions and expectations to the
// client's types and every error to the store's typed errors, and adds:
//
//   - filtered $all reads, filtered here (the client reads $all without a
//     filter), and the removal of the server's own events ($-streams and
//     tombstone markers) from $all;
//   - the start of a backwards $all read included ("from" is inclusive in
//     events.Store, exclusive in EventStoreDB);
//   - subscriptions that subscribe again after a dropped connection, from
//     the last event received: no loss, no duplicate;
//   - while the server is away, one check at a time that every call waits
//     for, so that calls fail with events.ErrUnavailable instead of piling
//     up inside the client; a new client when the old one gave up (it does
//     for good once the server stayed away for all its discovery
//     attempts); calls that never outlive their context, even where the
//     client ignores it.
//
// docs/event-store.md lists every difference from the embedded store.
//
// The client's protobuf files clash with protoactor-go's on the name
// gossip.proto; this package imports events/protoconflict, which settles
// that before any of them registers.
package esdb
