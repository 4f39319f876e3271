package events

import "sync/atomic"

// tailCache keeps the encoded records of the newest appends by global
// position, so that live subscribers — the server's fanout watcher, search
// index, reactors and webhooks all follow $all — read what was just
// written from memory instead of each looking it up in pebble
// (BenchmarkLiveSubscribers). The writer fills a slot when it prepares the
// append; readers only ask for durable positions, and a slot is trusted only
// when it names the same position, stream and revision as the log entry
// being read, so a slot overwritten by a later append is simply a miss.
type tailCache struct {
	slots []atomic.Pointer[tailRecord]
}

type tailRecord struct {
	pos uint64
	sid uint64
	rev Revision
	enc []byte // the record as stored (immutable once published)
}

const (
	tailSlots     = 4096    // a few subscription pages of lag
	tailMaxRecord = 2 << 10 // larger records are read from pebble
)

func newTailCache() *tailCache {
	return &tailCache{slots: make([]atomic.Pointer[tailRecord], tailSlots)}
}

// put remembers the encoded record appended at pos (the writer calls it;
// enc is copied).
func (c *tailCache) put(pos, sid uint64, rev Revision, enc []byte) {
	slot := &c.slots[pos%uint64(len(c.slots))]
	if len(enc) > tailMaxRecord {
		slot.Store(nil)
		return
	}
	slot.Store(&tailRecord{pos: pos, sid: sid, rev: rev, enc: append([]byte(nil), enc...)})
}

// get returns a copy of the record appended at pos as (sid, rev), if the
// cache still holds it.
func (c *tailCache) get(pos, sid uint64, rev Revision) ([]byte, bool) {
	r := c.slots[pos%uint64(len(c.slots))].Load()
	if r == nil || r.pos != pos || r.sid != sid || r.rev != rev {
		return nil, false
	}
	return append([]byte(nil), r.enc...), true
}
