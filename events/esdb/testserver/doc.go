// Package testserver is an in-process EventStoreDB stand-in for tests: it
// serves the part of EventStoreDB's gRPC protocol that the official Go
// client (github.com/EventStore/EventStore-Client-Go/v4) uses for streams,
// over any events.Store — by default imsync's embedded store.
//
// # Usage
//
//	srv, err := testserver.Start(ctx, testserver.Options{}) // in memory, random port
//	if err != nil { ... }
//	defer srv.Close()
//
//	conf, _ := esdb.ParseConnectionString(srv.URL()) // esdb://127.0.0.1:PORT?tls=false
//	client, _ := esdb.NewClient(conf)
//	defer client.Close()
//	client.AppendToStream(ctx, "conv-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, ev)
//
// Options.Dir keeps the events in an embedded store on disk: a server
// closed and started again on the same directory and Listen address has
// every event it acknowledged. DropConnections cuts every client
// connection while the server keeps listening, for fault tests.
// DiscoverURL goes through gossip (esdb+discover://).
//
// # What it serves
//
//   - Streams.Append with the expected revisions any, no_stream,
//     stream_exists and exact; a wrong one is answered with the stream's
//     real revision in AppendResp.wrong_expected_version. Appends repeated
//     with the same event ids return the first result (the store's
//     idempotence).
//   - Streams.Read of a stream or of $all, forwards or backwards, from the
//     start, the end, a revision or a position, with a count, and on $all
//     a filter on stream name or event type (prefixes or a regular
//     expression). Forwards from a position includes the event there;
//     backwards from a position starts before it.
//   - Catch-up subscriptions to a stream or to $all, filtered or not:
//     confirmation, the events after the start (exclusive), caught_up, then
//     live events. Filtered $all subscriptions send a checkpoint every
//     max-search-window × checkpoint-interval-multiplier events looked at
//     and when they catch up.
//   - Streams.Delete (soft) and Streams.Tombstone.
//   - Metadata streams "$$<stream>": appending a "$metadata" JSON event sets
//     the store's $maxAge (seconds), $maxCount and $tb; reading the stream
//     returns its last metadata event.
//   - Gossip.Read (one live leader: this server) and
//     ServerFeatures.GetSupportedMethods.
//
// Errors travel as EventStoreDB sends them: "exception" trailers
// (stream-deleted with stream-name, wrong-expected-version,
// maximum-append-size-exceeded), and codes.Unavailable when the store
// cannot be used, which makes the client rediscover the node.
//
// Importing this package imports events/protoconflict, so that the client's
// protobuf files and protoactor-go's can be linked into one binary.
package testserver
