package testserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// metadataEventType is the type of the events of a metadata stream.
const metadataEventType = "$metadata"

// metaStreams serves the metadata streams "$$<stream>". The settings
// themselves live in the store (SetStreamMetadata); the last metadata
// event, with its revision and any properties the store does not keep
// ($acl, custom ones), is remembered in memory. After a restart, or when
// the store's settings were changed behind the server's back, the stream
// shows one event rebuilt from the store's settings.
type metaStreams struct {
	store events.Store
	marks *highWater
	mu    sync.Mutex
	last  map[string]*metaEvent // by stream (without "$$")
}

type metaEvent struct {
	id       uuid.UUID
	rev      uint64
	data     []byte
	created  time.Time
	pos      events.Position
	settings events.StreamMetadata
}

func newMetaStreams(store events.Store, marks *highWater) *metaStreams {
	return &metaStreams{store: store, marks: marks, last: map[string]*metaEvent{}}
}

// current returns the last event of stream's metadata stream, nil when it
// has none. The caller holds m.mu.
func (m *metaStreams) current(ctx context.Context, stream string) (*metaEvent, error) {
	settings, err := m.store.GetStreamMetadata(ctx, stream)
	if err != nil {
		return nil, err
	}
	e := m.last[stream]
	if e != nil && e.settings == settings {
		return e, nil
	}
	if settings == (events.StreamMetadata{}) {
		return nil, nil
	}
	rev := uint64(0)
	if e != nil {
		rev = e.rev + 1
	}
	data, err := json.Marshal(settingsToJSON(settings))
	if err != nil {
		return nil, err
	}
	e = &metaEvent{
		id:       uuid.NewSHA1(uuid.NameSpaceURL, []byte(metaPrefix+stream)),
		rev:      rev,
		data:     data,
		created:  time.Now(),
		settings: settings,
	}
	m.last[stream] = e
	return e, nil
}

func settingsToJSON(s events.StreamMetadata) map[string]uint64 {
	out := map[string]uint64{}
	if s.MaxAge > 0 {
		out["$maxAge"] = uint64(s.MaxAge / time.Second)
	}
	if s.MaxCount > 0 {
		out["$maxCount"] = s.MaxCount
	}
	if s.TruncateBefore > 0 {
		out["$tb"] = uint64(s.TruncateBefore)
	}
	return out
}

// settingsFromJSON reads the retention settings of a $metadata event.
func settingsFromJSON(data []byte) (events.StreamMetadata, error) {
	var props map[string]json.RawMessage
	if err := json.Unmarshal(data, &props); err != nil {
		return events.StreamMetadata{}, fmt.Errorf("stream metadata is not a JSON object: %w", err)
	}
	var s events.StreamMetadata
	num := func(key string) (uint64, bool, error) {
		raw, ok := props[key]
		if !ok || string(raw) == "null" {
			return 0, false, nil
		}
		var v uint64
		if err := json.Unmarshal(raw, &v); err != nil {
			return 0, false, fmt.Errorf("stream metadata %s: %w", key, err)
		}
		return v, true, nil
	}
	v, ok, err := num("$maxAge")
	if err != nil {
		return s, err
	}
	if ok {
		if v > math.MaxInt64/uint64(time.Second) {
			return s, fmt.Errorf("stream metadata $maxAge %d out of range", v)
		}
		s.MaxAge = time.Duration(v) * time.Second
	}
	if s.MaxCount, _, err = num("$maxCount"); err != nil {
		return s, err
	}
	v, _, err = num("$tb")
	s.TruncateBefore = events.Revision(v)
	return s, err
}

// append writes events to "$$"+stream: each must be a $metadata event with
// a JSON object; the last one's settings go to the store.
func (m *metaStreams) append(ctx context.Context, srv api.Streams_AppendServer, stream string, expected events.ExpectedRevision, evs []events.EventData) error {
	metaName := metaPrefix + stream
	if err := checkUserStream(stream); err != nil {
		return err
	}
	var settings events.StreamMetadata
	for i, e := range evs {
		if e.Type != metadataEventType {
			return invalidArgument("append to %q: event %d has type %q; metadata streams take %q events", metaName, i, e.Type, metadataEventType)
		}
		s, err := settingsFromJSON(e.Data)
		if err != nil {
			return invalidArgument("append to %q: %v", metaName, err)
		}
		settings = s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, err := m.current(ctx, stream)
	if err != nil {
		return rpcError(ctx, err, metaName)
	}
	var curRev uint64
	if cur != nil {
		curRev = cur.rev
	}
	if len(evs) == 1 && cur != nil && cur.id == evs[0].ID && isRetryPlace(expected, cur.rev) {
		return srv.SendAndClose(successResp(true, cur.rev, cur.pos)) // a retry of the last write
	}
	if !expectedOK(expected, cur != nil, curRev) {
		return srv.SendAndClose(wrongExpectedResp(expected, cur != nil, curRev))
	}
	if len(evs) == 0 {
		return srv.SendAndClose(successResp(cur != nil, curRev, events.Position{}))
	}
	if err := m.store.SetStreamMetadata(ctx, stream, settings); err != nil {
		return rpcError(ctx, err, metaName)
	}
	pos, err := m.marks.head(ctx, m.store)
	if err != nil {
		return rpcError(ctx, err, metaName)
	}
	rev := uint64(len(evs) - 1)
	if cur != nil {
		rev += cur.rev + 1
	}
	last := evs[len(evs)-1]
	m.last[stream] = &metaEvent{id: last.ID, rev: rev, data: last.Data, created: time.Now(), pos: pos, settings: settings}
	return srv.SendAndClose(successResp(true, rev, pos))
}

// isRetryPlace says whether an append with expectation e that wrote the
// event now at revision rev would have expected what e says.
func isRetryPlace(e events.ExpectedRevision, rev uint64) bool {
	if r, exact := e.Revision(); exact {
		return uint64(r)+1 == rev
	}
	switch e {
	case events.NoStream:
		return rev == 0
	case events.StreamExists:
		return rev > 0
	}
	return true
}

// read serves reads of a metadata stream, which shows only its last event
// (EventStoreDB keeps metadata streams at $maxCount 1).
func (m *metaStreams) read(r *reader, metaName, stream string, backwards bool, from events.Revision, count uint64) error {
	if err := events.ValidateStreamName(stream); err != nil {
		return r.srv.Send(streamNotFound(metaName))
	}
	m.mu.Lock()
	cur, err := m.current(r.ctx, stream)
	m.mu.Unlock()
	if err != nil {
		return rpcError(r.ctx, err, metaName)
	}
	if cur == nil {
		return r.srv.Send(streamNotFound(metaName))
	}
	in := uint64(from) <= cur.rev
	if backwards {
		in = uint64(from) >= cur.rev
	}
	if !in || count == 0 {
		return nil
	}
	return r.send(events.RecordedEvent{
		ID:       cur.id,
		Type:     metadataEventType,
		Data:     cur.data,
		Metadata: wrapMetadata(nil, true),
		Stream:   metaName,
		Revision: events.Revision(cur.rev),
		Position: cur.pos,
		Created:  cur.created,
	}, false)
}
