package events

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Scavenge deletes from disk the events that retention ($maxAge, $maxCount,
// $tb) or deletion already hides; compaction then gives the space back.
// Reads never depend on it: hidden events are skipped whether or not they
// were scavenged. It runs every Options.ScavengeInterval and may be called
// at any time.
func (s *Embedded) Scavenge(ctx context.Context) error {
	s.scavengeMu.Lock()
	defer s.scavengeMu.Unlock()
	type job struct {
		st *streamState
		h  header
	}
	var jobs []job
	s.mu.RLock()
	for _, st := range s.streams {
		h := st.pub
		if h.tombstoned || h.firstLive() > st.scavengedBefore || h.meta.MaxAge > 0 {
			jobs = append(jobs, job{st, h})
		}
	}
	s.mu.RUnlock()
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.scavengeStream(j.st, j.h); err != nil {
			return err
		}
	}
	return nil
}

// scavengeStream deletes the hidden prefix of one stream: its event records
// and their log entries, in one batch.
func (s *Embedded) scavengeStream(st *streamState, h header) error {
	if err := s.beginRead(); err != nil {
		return err
	}
	defer s.endRead()
	cut := h.firstLive()
	if h.tombstoned {
		cut = Revision(h.next)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: eventKey(st.id, st.scavengedBefore),
		UpperBound: eventKey(st.id, Revision(h.next)),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer b.Close()
	now := s.opts.Now()
	for ok := it.First(); ok; ok = it.Next() {
		_, rev, err := decodeEventKey(it.Key())
		if err != nil {
			return err
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return err
		}
		if rev >= cut {
			if !h.expired(rec.created, now) {
				break // stamps are monotonic: everything after is younger
			}
			cut = rev + 1
		}
		b.Delete(it.Key(), nil)
		b.Delete(logKey(rec.pos), nil)
	}
	if err := it.Error(); err != nil {
		return err
	}
	if !b.Empty() {
		// The floor keeps the next revision known when every event goes.
		b.Set(floorKey(st.id), binary.BigEndian.AppendUint64(nil, uint64(min(cut, Revision(h.next)))), nil)
		// Not synced: after a crash the same deletions are simply redone.
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
	}
	st.scavengedBefore = max(st.scavengedBefore, min(cut, Revision(h.next)))
	return nil
}

func (s *Embedded) scavengeLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.bg.Done():
			return
		case <-t.C:
			if err := s.Scavenge(s.bg); err != nil && s.bg.Err() == nil {
				s.opts.Logger.Error("event store scavenge failed", "err", err)
			}
		}
	}
}

// beginRead guards a use of the database against a concurrent Close.
func (s *Embedded) beginRead() error {
	s.dbMu.RLock()
	if err := s.usable(); err != nil {
		s.dbMu.RUnlock()
		return err
	}
	return nil
}

func (s *Embedded) endRead() { s.dbMu.RUnlock() }
