package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
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
// The mark is written about once a second while the store changes, and at
// Close; so damage to the last second of appends before a crash can still go
// unseen, and nothing else can.
//
// File layout: two 32-byte slots written in turn, so that a write torn by a
// power cut leaves the other slot intact:
//
//	"IHW1" | seq u64 | lastPos u64 | nextSID u64 | crc32(previous 28 bytes)

const (
	highWaterFile  = "IMSYNC-HIGHWATER"
	highWaterSlot  = 32
	highWaterMagic = "IHW1"
)

// highWaterEvery is how often the mark follows the durable state.
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
func readHighWater(fs vfs.FS, dir string) (h highWater, ok bool, err error) {
	path := fs.PathJoin(dir, highWaterFile)
	f, err := fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return highWater{}, false, nil
	}
	if err != nil {
		return highWater{}, false, fmt.Errorf("events: read %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 2*highWaterSlot)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return highWater{}, false, fmt.Errorf("events: read %s: %w", path, err)
	}
	buf = buf[:n]
	for i := 0; i+highWaterSlot <= len(buf); i += highWaterSlot {
		if slot, valid := decodeHighWater(buf[i : i+highWaterSlot]); valid && (!ok || slot.seq > h.seq) {
			h, ok = slot, true
		}
	}
	if !ok && n > 0 {
		return highWater{}, false, fmt.Errorf("%w: %s is damaged (no valid record); %s", ErrCorrupt, path, recoveryHint)
	}
	return h, ok, nil
}

// recoveryHint is what a loss behind the high-water mark tells the operator.
const recoveryHint = "restore the data directory from a backup taken while the server was stopped, " +
	"or run `imsync store recover --data DIR --accept-data-loss` to open it with what survived " +
	"(see docs/event-store.md, \"Damaged data\")"

// restoreHint is what damage inside pebble's own files tells the operator:
// Recover cannot repair it.
const restoreHint = "restore the data directory from a backup taken while the server was stopped " +
	"(see docs/event-store.md, \"Damaged data\")"

// highWaterWriter keeps the mark of one open store (owned by the goroutine
// that calls write: the mark loop, then Close).
type highWaterWriter struct {
	fs   vfs.FS
	dir  string
	f    vfs.File
	last highWater
}

// write records h (seq is assigned here) and fsyncs it.
func (w *highWaterWriter) write(lastPos, nextSID uint64) error {
	if w.f != nil && w.last.lastPos == lastPos && w.last.nextSID == nextSID {
		return nil
	}
	if w.f == nil {
		path := w.fs.PathJoin(w.dir, highWaterFile)
		f, err := w.fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("events: open %s: %w", path, err)
		}
		w.f = f
		if err := syncFSDir(w.fs, w.dir); err != nil { // the file's name must survive a crash too
			return err
		}
	}
	h := highWater{seq: w.last.seq + 1, lastPos: lastPos, nextSID: nextSID}
	if _, err := w.f.WriteAt(h.encode(), int64(h.seq%2)*highWaterSlot); err != nil {
		return fmt.Errorf("events: write high-water mark: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("events: sync high-water mark: %w", err)
	}
	w.last = h
	return nil
}

func (w *highWaterWriter) close() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

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

// highWaterLoop moves the mark after the durable state until Close.
func (s *Embedded) highWaterLoop() {
	defer s.wg.Done()
	t := time.NewTicker(highWaterEvery)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.writeHighWater()
		}
	}
}

func (s *Embedded) writeHighWater() {
	s.mu.RLock()
	pos, sid := s.durablePos, s.durableSID
	s.mu.RUnlock()
	s.hwMu.Lock()
	defer s.hwMu.Unlock()
	if err := s.hw.write(pos, sid); err != nil {
		s.opts.Logger.Error("event store: high-water mark not written", "err", err)
	}
}

// checkHighWater refuses a store that recovered less than its mark says was
// durable, unless acceptLoss; then it moves the counters up to the mark so
// that no position or stream id is handed out a second time.
func (s *Embedded) checkHighWater(fs vfs.FS, dir string, acceptLoss bool) error {
	h, ok, err := readHighWater(fs, dir)
	if err != nil && !(acceptLoss && errors.Is(err, ErrCorrupt)) {
		return err
	}
	s.hw = &highWaterWriter{fs: fs, dir: dir, last: h}
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
	s.durablePos, s.durableSID = s.lastPos, s.nextSID
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
	fresh, err := inspectDir(dir)
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
	s, err := open(filepath.Join(dir, "db"), vfs.Default, true, opts, true)
	if err != nil {
		lock.Close()
		return nil, Loss{}, err
	}
	s.lock = lock
	if s.lost.AcknowledgedPosition > 0 {
		s.opts.Logger.Warn("event store recovered with data loss",
			"dir", dir, "found_position", s.lost.FoundPosition,
			"acknowledged_position", s.lost.AcknowledgedPosition, "lost_events", s.lost.Events())
		s.writeHighWater() // the new state is the new mark
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
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	_, err = f.WriteString(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("events: write %s: %w", path, err)
	}
	return nil
}
