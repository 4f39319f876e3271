package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
)

// Snapshots let a grain rebuild without its whole stream: a user grain's
// inbox may have lost its oldest entries to the sync retention, and a long
// conversation is faster to load from a snapshot. A grain loads the latest
// snapshot of its stream (snap-<stream>) and replays only the events after
// the ones it covers; a snapshot that is missing, incomplete or cannot be
// decoded means a full replay.
//
// A snapshot is one encoded state split into parts of at most
// snapshotPartSize bytes (a large group's member list exceeds one event),
// written as consecutive SnapshotPart events; older snapshots are truncated
// away once a newer one is complete.
const (
	snapshotPartType = "SnapshotPart"
	snapshotPartSize = 900 << 10
	// snapshotPartsPerAppend keeps each append under events.MaxAppendSize.
	snapshotPartsPerAppend = 4
)

// writeSnapshot stores state as the snapshot of stream after its first
// covers events.
func writeSnapshot(ctx context.Context, store events.Store, stream string, covers uint64, state proto.Message) error {
	data, err := proto.Marshal(state)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", stream, err)
	}
	parts := max(1, (len(data)+snapshotPartSize-1)/snapshotPartSize)
	var evs []events.EventData
	for i := range parts {
		chunk := data[i*snapshotPartSize : min(len(data), (i+1)*snapshotPartSize)]
		e, err := proto.Marshal(&SnapshotPart{Covers: covers, Part: uint32(i), Parts: uint32(parts), Data: chunk})
		if err != nil {
			return fmt.Errorf("snapshot of %s: %w", stream, err)
		}
		evs = append(evs, events.EventData{Type: snapshotPartType, Data: e})
	}
	snap := events.SnapshotStream(stream)
	var first events.Revision
	for i := 0; i < len(evs); i += snapshotPartsPerAppend {
		batch := evs[i:min(len(evs), i+snapshotPartsPerAppend)]
		for k := range batch {
			batch[k].ID = uuid.New()
		}
		res, err := store.AppendToStream(ctx, snap, events.Any, batch...)
		if err != nil {
			return fmt.Errorf("snapshot of %s: %w", stream, err)
		}
		if i == 0 {
			first = res.NextExpected - events.Revision(len(batch)-1)
		}
	}
	// The new snapshot is complete: hide the older ones.
	if first > 0 {
		if err := store.SetStreamMetadata(ctx, snap, events.StreamMetadata{TruncateBefore: first}); err != nil {
			return fmt.Errorf("snapshot of %s: %w", stream, err)
		}
	}
	return nil
}

// errNoSnapshot: no usable snapshot; the grain replays its whole stream.
var errNoSnapshot = errors.New("no usable snapshot")

// readSnapshot decodes the latest snapshot of stream into state and returns
// how many events of the stream it covers. It returns errNoSnapshot (or
// one wrapping a decoding problem) when there is no complete, decodable
// snapshot, and other errors when the store cannot be read.
func readSnapshot(ctx context.Context, store events.Store, stream string, state proto.Message) (uint64, error) {
	snap := events.SnapshotStream(stream)
	last, err := store.ReadStream(ctx, snap, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
	if errors.Is(err, events.ErrStreamNotFound) || (err == nil && len(last) == 0) {
		return 0, errNoSnapshot
	}
	if err != nil {
		return 0, err
	}
	var tail SnapshotPart
	if last[0].Type != snapshotPartType || proto.Unmarshal(last[0].Data, &tail) != nil {
		return 0, fmt.Errorf("%w: %s ends with an unreadable event", errNoSnapshot, snap)
	}
	parts := int(tail.Parts)
	if parts < 1 || int(tail.Part) != parts-1 || uint64(last[0].Revision) < uint64(parts-1) {
		return 0, fmt.Errorf("%w: %s ends with an incomplete snapshot", errNoSnapshot, snap)
	}
	recs := last
	if parts > 1 {
		recs, err = store.ReadStream(ctx, snap, events.ReadStreamOptions{From: last[0].Revision - events.Revision(parts-1), Limit: parts})
		if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
			return 0, err
		}
	}
	if len(recs) != parts {
		return 0, fmt.Errorf("%w: %s holds %d of %d parts", errNoSnapshot, snap, len(recs), parts)
	}
	var data []byte
	for i, r := range recs {
		var p SnapshotPart
		if r.Type != snapshotPartType || proto.Unmarshal(r.Data, &p) != nil || int(p.Part) != i || int(p.Parts) != parts || p.Covers != tail.Covers {
			return 0, fmt.Errorf("%w: %s: part %d does not belong to the snapshot", errNoSnapshot, snap, i)
		}
		data = append(data, p.Data...)
	}
	if err := proto.Unmarshal(data, state); err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errNoSnapshot, snap, err)
	}
	return tail.Covers, nil
}
