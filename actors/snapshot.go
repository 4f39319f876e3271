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

// readSnapshot decodes the latest complete snapshot of stream into state
// and returns how many events of the stream it covers. A snapshot whose
// writing was cut short (a failed append between its parts) is passed
// over for the complete one before it. It returns errNoSnapshot (or one
// wrapping a decoding problem) when there is no complete, decodable
// snapshot, and other errors when the store cannot be read.
func readSnapshot(ctx context.Context, store events.Store, stream string, state proto.Message) (uint64, error) {
	snap := events.SnapshotStream(stream)
	tail, err := store.ReadStream(ctx, snap, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: snapshotLookBack})
	if errors.Is(err, events.ErrStreamNotFound) || (err == nil && len(tail) == 0) {
		return 0, errNoSnapshot
	}
	if err != nil {
		return 0, err
	}
	why := fmt.Errorf("%w: %s holds no complete snapshot", errNoSnapshot, snap)
	for _, last := range tail {
		var end SnapshotPart
		if last.Type != snapshotPartType || proto.Unmarshal(last.Data, &end) != nil {
			continue
		}
		parts := int(end.Parts)
		if parts < 1 || int(end.Part) != parts-1 || uint64(last.Revision) < uint64(parts-1) {
			continue // not the last part of a snapshot
		}
		covers, err := assembleSnapshot(ctx, store, snap, last, parts, end.Covers, state)
		if err == nil {
			return covers, nil
		}
		if !errors.Is(err, errNoSnapshot) {
			return 0, err
		}
		why = err
	}
	return 0, why
}

// snapshotLookBack bounds how far back readSnapshot looks for the end of
// a complete snapshot: past at most one cut-short one.
const snapshotLookBack = 64

// assembleSnapshot reads the parts of the snapshot that ends with last and
// decodes them into state.
func assembleSnapshot(ctx context.Context, store events.Store, snap string, last events.RecordedEvent, parts int, covers uint64, state proto.Message) (uint64, error) {
	recs := []events.RecordedEvent{last}
	if parts > 1 {
		var err error
		recs, err = store.ReadStream(ctx, snap, events.ReadStreamOptions{From: last.Revision - events.Revision(parts-1), Limit: parts})
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
		if r.Type != snapshotPartType || proto.Unmarshal(r.Data, &p) != nil || int(p.Part) != i || int(p.Parts) != parts || p.Covers != covers {
			return 0, fmt.Errorf("%w: %s: part %d does not belong to the snapshot", errNoSnapshot, snap, i)
		}
		data = append(data, p.Data...)
	}
	if err := proto.Unmarshal(data, state); err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errNoSnapshot, snap, err)
	}
	return covers, nil
}
