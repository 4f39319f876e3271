// Package actors holds imsync's grains and the service API over them.
//
// # Usage
//
//	store, _ := events.Open(dir, events.Options{})
//	svc, err := actors.Start(actors.Config{Store: store})
//	if err != nil { ... }
//	defer svc.Close()
//
//	conv, _ := svc.OpenDirect(ctx, "ann", "bob")          // the same id from either side
//	res, err := svc.Send(ctx, actors.SendRequest{
//		Conversation: conv, Sender: "ann", Device: "phone",
//		ClientMsgID: "m-1",                                // a retry returns the same seq
//		Body: []byte("hi")})
//	page, _ := svc.Sync(ctx, "bob", lastUserSeq, 100)     // bob's devices pull what they miss
//
// The caller's duties: give every send a client message id and retry with
// the same id when the outcome is unknown (timeout, UNAVAILABLE); keep each
// device's last applied user seq and pull from it; treat NOT_FOUND as "no
// such conversation for you".
//
// # Grains
//
// Three kinds of virtual actors on protoactor-go's cluster, each a thin
// shell around a pure core (decideX/evolveX: no I/O, no clock but the one
// passed in):
//
//   - conversation (one per conversation) owns the storage timeline
//     conv-<id>: validates, appends with the exact expected revision (a
//     second activation can never fork the timeline), answers once the
//     append is durable, then fans out;
//   - user (one per user) owns the sync timeline inbox-<id>, whose user seq
//     is gapless, and the conversation list derived from it; it notifies
//     the user's online device grains;
//   - device (one per user device) keeps the device's acknowledged user seq
//     in device-<user>/<device> and pushes to its connection actor's PID.
//
// # Fanout
//
// Groups up to Limits.ReadFanoutThreshold members (and direct
// conversations) are write-fanout: each event becomes one inbox entry per
// member. Larger groups are read-fanout: members pull the conversation's
// timeline; their conversation list asks the conversation for its latest
// message and unread count, and members with online devices get a
// coalesced notice (a Push with ConversationId and ConvSeq) at most once
// per Config.ReadFanoutNotifyInterval. Fanout is recoverable: a conversation resumes it
// from its checkpoint (fanout-<id>) on activation, a watcher of $all
// re-activates conversations whose fanout a crash interrupted, and user
// grains drop entries they already have, so each entry lands exactly once.
//
// Grains passivate after Config.PassivateAfter of idleness and rebuild from
// their streams on the next call: user and conversation grains from their
// latest snapshot (snap-<stream>) and the events after it, so that an
// inbox with a retention (Config.SyncRetention) keeps its conversation list.
//
// # Extensions
//
// Config.Extensions adds behaviours without forking (docs/extending.md):
// Checks see (and may refuse or rewrite) a message before its conversation
// decides it; Kinds give message kinds their own validation and unread,
// list and push rules; Reactors get every committed conversation event
// after the commit, at least once and in order, from their checkpoint, and
// act through the Service. None of them writes a stream.
//
//	svc, err := actors.Start(actors.Config{Store: store, Extensions: actors.Extensions{
//		Checks:   []actors.Check{{Name: "filter", Func: func(ctx context.Context, d *actors.Draft) error {
//			if bytes.Contains(d.Body, []byte("casino")) {
//				return actors.Reject("blocked-word", "no casinos") // the sender gets REJECTED
//			}
//			return nil
//		}}},
//		Kinds:    []actors.MessageKind{{Name: "reaction", NotUnread: true, NoBump: true}},
//		Reactors: []actors.Reactor{{Name: "echo-bot", React: echo}},
//	}})
package actors
