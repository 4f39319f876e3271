package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// The high-water mark is the store's own record, kept outside pebble's WAL,
// of how far the log had durably come: the last global position and the
// next stream id, both already fsynced in the WAL when the mark is written.
// Open refuses a store whose recovered state is behind its mark: pebble
// drops every WAL record after a damaged one as if it were a torn tail, and
// without the mark acknowledged events would disappear silently and their
// positions and revisions be handed out again.
//
// The syncer writes the mark after each round's fsync and before it
// answers the round (one small write, no fsync), so the mark covers every
// acknowledged append once the operating system holds it: after a clean
// Close or a killed process, all of them. The mark itself is fsynced about
// once a second and at Close, so after a power cut it covers what was
// acknowledged until about a second before.
//
// File layout: two 32-byte slots. Writes go to the slot that does not hold
// the newest fsynced mark, so a write torn by a power cut never destroys
// the last mark known to be on disk:
//
//	"IHW1" | seq u64 | lastPos u64 | nextSID u64 | crc32(previous 28 bytes)

const (
	highWaterFile  = "IMSYNC-HIGHWATER"
	highWaterSlot  = 32
	highWaterMagic = "IHW1"
)

// highWaterEvery is how often the mark is fsynced while it changes.
var highWaterEvery = time.Second

type highWater struct {
	seq     uint64
	lastPos uint64
	nextSID uint64
}

func (h highWater) encode() []byte {
	b := make([]byte, highWaterSlot)
	copy(b, highWaterMagic)
	binary.BigEndian.PutUint64(b[4:], h.seq)
	binary.BigEndian.PutUint64(b[12:], h.lastPos)
	binary.BigEndian.PutUint64(b[20:], h.nextSID)
	binary.BigEndian.PutUint32(b[28:], crc32.ChecksumIEEE(b[:28]))
	return b
}

func decodeHighWater(b []byte) (highWater, bool) {
	if len(b) != highWaterSlot || string(b[:4]) != highWaterMagic ||
		binary.BigEndian.Uint32(b[28:]) != crc32.ChecksumIEEE(b[:28]) {
		return highWater{}, false
	}
	return highWater{
		seq:     binary.BigEndian.Uint64(b[4:]),
		lastPos: binary.BigEndian.Uint64(b[12:]),
		nextSID: binary.BigEndian.Uint64(b[20:]),
	}, true
}

// readHighWater returns the newest valid mark in dir; ok=false when the
// store has none yet (a new store, or one written by an older build).
// A file that exists but holds no valid slot is damage.
// slot is the index of the slot h was read from.
func readHighWater(fs vfs.FS, dir string) (h highWater, slot int, ok bool, err error) {
	path := fs.PathJoin(dir, highWaterFile)
	f, err := fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return highWater{}, 0, false, nil
	}
	if err != nil {
		return highWater{}, 0, false, fmt.Errorf("events: read %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 2*highWaterSlot)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return highWater{}, 0, false, fmt.Errorf("events: read %s: %w", path, err)
	}
	buf = buf[:n]
	for i := 0; i+highWaterSlot <= len(buf); i += highWaterSlot {
		if got, valid := decodeHighWater(buf[i : i+highWaterSlot]); valid && (!ok || got.seq > h.seq) {
			h, slot, ok = got, i/highWaterSlot, true
		}
	}
	if !ok && n > 0 {
		return highWater{}, 0, false, fmt.Errorf("%w: %s is damaged (no valid record); %s", ErrCorrupt, path, recoveryHint)
	}
	return h, slot, ok, nil
}

// recoveryHint is what a loss behind the high-water mark tells the operator.
const recoveryHint = "restore the data directory from a backup (`imsync backup`, or a copy taken while the server was stopped), " +
	"or run `imsync store recover --data DIR --accept-data-loss` to open it with what survived " +
	"(see docs/event-store.md, \"Damaged data\")"

// restoreHint is what damage inside pebble's own files tells the operator:
// Recover cannot repair it.
const restoreHint = "restore the data directory from a backup (`imsync backup`, or a copy taken while the server was stopped) " +
	"(see docs/event-store.md, \"Damaged data\")"

// highWaterWriter keeps the mark of one open store.
type highWaterWriter struct {
	mu     sync.Mutex
	f      vfs.File
	last   highWater // the newest mark written
	synced int       // the slot of the newest fsynced mark
	dirty  bool      // last is not fsynced yet
	failed bool      // a write failed (logged once)
}

// openHighWater opens (creating) the mark file of dir, whose newest mark
// is h in slot; without one (ok=false) it writes the state recovered,
// (lastPos, nextSID), so that a valid copy is on disk before the first
// write to the other slot.
func openHighWater(fs vfs.FS, dir string, h highWater, slot int, ok bool, lastPos, nextSID uint64) (*highWaterWriter, error) {
	path := fs.PathJoin(dir, highWaterFile)
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("events: open %s: %w", path, err)
	}
	if !ok {
		h, slot = highWater{seq: 1, lastPos: lastPos, nextSID: nextSID}, 0
		if _, err := f.WriteAt(h.encode(), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("events: write %s: %w", path, err)
		}
	}
	// The newest mark may still be only in the operating system's cache (a
	// killed process): make it durable before writes go to the other slot.
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("events: sync %s: %w", path, err)
	}
	if err := syncFSDir(fs, dir); err != nil { // the file's name must survive a crash too
		f.Close()
		return nil, err
	}
	return &highWaterWriter{f: f, last: h, synced: slot}, nil
}

// record writes the mark (lastPos, nextSID) without fsyncing it.
func (w *highWaterWriter) record(lastPos, nextSID uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last.lastPos == lastPos && w.last.nextSID == nextSID && w.last.seq > 0 {
		return nil
	}
	h := highWater{seq: w.last.seq + 1, lastPos: lastPos, nextSID: nextSID}
	if _, err := w.f.WriteAt(h.encode(), int64(1-w.synced)*highWaterSlot); err != nil {
		return fmt.Errorf("events: write high-water mark: %w", err)
	}
	w.last, w.dirty = h, true
	return nil
}

// sync fsyncs the newest mark; its slot is then the one writes avoid.
func (w *highWaterWriter) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.dirty {
		return nil
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("events: sync high-water mark: %w", err)
	}
	w.synced, w.dirty = 1-w.synced, false
	return nil
}

func (w *highWaterWriter) close() error { return w.f.Close() }

func syncFSDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("events: sync %s: %w", dir, err)
	}
	return nil
}

// checkHighWater compares the state pebble recovered with the mark.
func checkHighWater(h highWater, lastPos, nextSID uint64, dir string) error {
	if lastPos >= h.lastPos && nextSID >= h.nextSID {
		return nil
	}
	return fmt.Errorf("%w: the store in %s recovered up to position %d (next stream id %d), but position %d (next stream id %d) "+
		"had been durably acknowledged: the write-ahead log is damaged and %d acknowledged events are missing; "+
		"the store refuses to open so that nothing is lost silently or handed out again; %s",
		ErrCorrupt, dir, lastPos, nextSID, h.lastPos, h.nextSID, h.lastPos-min(lastPos, h.lastPos), recoveryHint)
}

// highWaterLoop fsyncs the mark about once a second while it changes.
func (s *Embedded) highWaterLoop() {
	defer s.wg.Done()
	t := time.NewTicker(highWaterEvery)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.hwErr(s.hw.sync())
		}
	}
}

// recordHighWater writes the durable state as the mark (the syncer calls it
// before answering a round; Close and Recover too).
func (s *Embedded) recordHighWater(lastPos, nextSID uint64) {
	if s.hw != nil {
		s.hwErr(s.hw.record(lastPos, nextSID))
	}
}

// hwErr logs the first failure to keep the mark: the store goes on, but
// damage to what follows may then go unseen.
func (s *Embedded) hwErr(err error) {
	if err == nil {
		return
	}
	s.hw.mu.Lock()
	first := !s.hw.failed
	s.hw.failed = true
	s.hw.mu.Unlock()
	if first {
		s.opts.Logger.Error("event store: high-water mark not written; damage to newer data may go unseen", "err", err)
	}
}

// checkHighWater refuses a store that recovered less than its mark says was
// durable, or whose mark is missing or empty although its marker says it
// keeps one, unless acceptLoss; then it moves the counters up to the mark
// (if there is one) so that no position or stream id is handed out a
// second time.
func (s *Embedded) checkHighWater(fs vfs.FS, dir string, flags openFlags) error {
	acceptLoss := flags.acceptLoss
	h, slot, ok, err := readHighWater(fs, dir)
	if err != nil && !(acceptLoss && errors.Is(err, ErrCorrupt)) {
		return err
	}
	if !ok && flags.tracked {
		if !acceptLoss {
			return fmt.Errorf("%w: the high-water mark %s is missing or empty, but the store in %s keeps one: "+
				"without it, acknowledged events lost from the write-ahead log would go unseen, "+
				"so the store refuses to open; %s", ErrCorrupt, fs.PathJoin(dir, highWaterFile), dir, recoveryHint)
		}
		s.markLost = true
	}
	if s.hw, err = openHighWater(fs, dir, h, slot, ok, s.lastPos, s.nextSID); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	err = checkHighWater(h, s.lastPos, s.nextSID, dir)
	if err == nil {
		return nil
	}
	if !acceptLoss {
		return err
	}
	s.lost = Loss{FoundPosition: s.lastPos, AcknowledgedPosition: h.lastPos}
	s.lastPos, s.nextSID = max(s.lastPos, h.lastPos), max(s.nextSID, h.nextSID)
	b := s.db.NewBatch()
	b.Set(keyGlobal, encodeGlobal(s.lastPos, s.nextSID), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("events: record the recovery: %w", err)
	}
	s.durablePos = s.lastPos
	return nil
}

// Loss describes the acknowledged events that Recover found missing:
// global positions FoundPosition+1 .. AcknowledgedPosition.
type Loss struct {
	FoundPosition        uint64
	AcknowledgedPosition uint64
}

// Events is how many acknowledged events are gone.
func (l Loss) Events() uint64 { return l.AcknowledgedPosition - l.FoundPosition }

// Recover opens a store that Open refuses because acknowledged events are
// missing (ErrCorrupt naming the high-water mark), accepting the loss: it
// keeps what survived, moves the global position and the stream-id counter
// past everything that was acknowledged (so a position a subscriber already
// checkpointed is never reused), and reports what is gone. Revisions of the
// streams that lost their newest events are handed out again; see
// docs/event-store.md. Damage that pebble itself refuses (a damaged sstable
// or MANIFEST, or a WAL record proven corrupt) is not repaired here.
func Recover(dir string, opts Options) (*Embedded, Loss, error) {
	if dir == "" {
		return nil, Loss{}, invalid("empty store directory")
	}
	fresh, tracked, err := inspectDir(dir)
	if err != nil {
		return nil, Loss{}, err
	}
	if fresh {
		return nil, Loss{}, fmt.Errorf("%w: %s holds no store to recover", ErrNotAStore, dir)
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, Loss{}, err
	}
	s, err := open(filepath.Join(dir, "db"), vfs.Default, true, opts, openFlags{tracked: tracked, acceptLoss: true})
	if err != nil {
		lock.Close()
		return nil, Loss{}, err
	}
	s.lock, s.dir = lock, dir
	if s.markLost {
		// What the mark said is gone with it: the loss cannot be counted.
		s.opts.Logger.Warn("event store recovered without its high-water mark; acknowledged events may be missing", "dir", dir)
		line := fmt.Sprintf("%s recovered: the high-water mark was missing, empty or damaged; a new one starts at position %d (acknowledged events beyond it, if any, are not counted)\n",
			s.opts.Now().UTC().Format(time.RFC3339), s.lastPos)
		if err := appendFileSync(filepath.Join(dir, recoveryLog), line); err != nil {
			s.Close()
			return nil, Loss{}, err
		}
	}
	if !tracked {
		if err := placeMarker(dir, false); err != nil {
			s.Close()
			return nil, Loss{}, err
		}
	}
	if s.lost.AcknowledgedPosition > 0 {
		s.opts.Logger.Warn("event store recovered with data loss",
			"dir", dir, "found_position", s.lost.FoundPosition,
			"acknowledged_position", s.lost.AcknowledgedPosition, "lost_events", s.lost.Events())
		s.recordHighWater(s.lastPos, s.nextSID) // the new state is the new mark
		s.hwErr(s.hw.sync())
		line := fmt.Sprintf("%s recovered: acknowledged events at positions %d..%d were lost (damaged data); counters moved past them\n",
			s.opts.Now().UTC().Format(time.RFC3339), s.lost.FoundPosition+1, s.lost.AcknowledgedPosition)
		if err := appendFileSync(filepath.Join(dir, recoveryLog), line); err != nil {
			s.Close()
			return nil, Loss{}, err
		}
	}
	return s, s.lost, nil
}

// recoveryLog in the store directory keeps a line for every Recover that
// lost data.
const recoveryLog = "RECOVERIES"

func appendFileSync(path, line string) error {
	return writeFileFlags(path, os.O_APPEND, []byte(line))
}
