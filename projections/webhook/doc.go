// Package webhook posts committed events to an HTTP endpoint, for
// extensions written in any language: batched, in order, signed,
// at-least-once from a checkpoint, and off the grains' path.
//
// # Usage
//
//	s, err := webhook.New(webhook.Config{
//		Store:       store, // the server's events.Store
//		Checkpoints: projections.FileCheckpoints{Dir: "/var/lib/imsync/projections"},
//		URL:         "https://backend.example/imsync-events",
//		Secret:      secret, // optional: signs each body
//		Devices:     status, // optional: online state for the offline push
//	})
//	if err != nil { ... }
//	go s.Run(ctx) // until ctx ends
//
// `imsync serve --webhook URL --webhook-secret FILE` does exactly this,
// with the checkpoint in DATA/projections/webhook.checkpoint.
//
// A receiver checks the signature, drops the events whose idempotency key
// it has seen, acts, and answers 2xx:
//
//	body, _ := io.ReadAll(r.Body)
//	if !webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader)) {
//		http.Error(w, "bad signature", http.StatusUnauthorized)
//		return
//	}
//	var b webhook.Batch
//	json.Unmarshal(body, &b)
//	for _, e := range b.Events {
//		if seen(e.IdempotencyKey) { continue }
//		...
//	}
//
// # What is sent
//
// Each POST carries a Batch: up to MaxBatch events in the store's global
// order, so in order per conversation and per user. A batch leaves when it
// is full, when no event came for Linger, or at the latest 10 Lingers after
// its first event. The next batch is sent only once the receiver has
// answered the previous one with a 2xx: a batch that is not acknowledged
// (an error status, a timeout, a refused connection) is sent again, the
// same bytes, after a back-off that doubles from MinBackoff to MaxBackoff.
// A redirect (3xx) is not an acknowledgement and is never followed:
// configure the URL the receiver really answers at.
//
// Events of kind "event" are every committed event of the conversation
// timelines (conv-* streams): ConversationCreated, MembersJoined,
// MemberAdded, MemberRemoved, MessageSent, MessageRecalled, MessageEdited
// and the kinds extensions add. Each carries its event id (also its
// idempotency key), stream, revision, seq, global position, type, store
// time and the decoded event as protobuf JSON.
//
// # Delivery guarantees
//
// The checkpoint (position in $all, plus the offline-push state) is saved
// only after the receiver acknowledged a batch, or after events that send
// nothing. A restart, even after SIGKILL, resumes after it: every event is
// delivered at least once, and the only events delivered twice are those
// of the batch that was in flight. The sender reads the store, never the
// grains: a slow or dead receiver delays only the webhook, never a send.
//
// # Offline push: device.pending
//
// A "device.pending" event says that a device has entries of its sync
// timeline it has not received, so that the app backend can wake it with
// APNs or FCM. It fires at a message pointer appended to user U's sync
// timeline (inbox-U) for a message another user sent, once for each
// device D of U such that:
//
//   - D has acknowledged at least one entry (it has a device-U/D stream;
//     that is how the store knows the device), and its acknowledged user
//     seq — the newer of the store's and the device grain's — is below the
//     new entry's;
//   - D is not connected (Config.Devices: the device grain's view; the
//     QUIC push reaches a connected device);
//   - D has not been told already since its last acknowledgement, or the
//     last time it was told is PushInterval or more before this entry (by
//     the store's event times, so a replay decides the same way).
//
// It carries user, device, count (entries not acknowledged), the new user
// seq and a preview of the message (conversation, seq, sender, kind, the
// first PreviewRunes runes of a UTF-8 body inlined in the sync timeline).
// Its idempotency key is derived from the inbox event's id and the device,
// so a re-sent one carries the same key. Messages of read-fanout groups
// have no per-member entry and fire nothing; nor do recalls, edits,
// membership changes and read markers.
//
// # Before-send webhook
//
// BeforeSend asks an endpoint about each send and edit before it is
// decided — allow, reject with a reason, or rewrite — for moderation in
// any language. AsCheck makes it a check of the service:
//
//	hook := &webhook.BeforeSend{URL: "https://backend.example/imsync-check", Secret: secret,
//		Timeout: 500 * time.Millisecond, FailOpen: false}
//	cfg.Extensions.Checks = append(cfg.Extensions.Checks, hook.AsCheck())
//
// `imsync serve --before-send-webhook URL` does exactly this.
package webhook
