package events

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
)

// Options tune the embedded store. The zero value is ready to use.
type Options struct {
	// Now is the clock stamped on events and used for $maxAge (default time.Now).
	Now func() time.Time
	// ScavengeInterval is how often expired events are deleted from disk
	// (default 10 minutes; negative: only when Scavenge is called).
	ScavengeInterval time.Duration
	// RetryWindow is how many recent event ids are remembered to make
	// Any/StreamExists appends idempotent (default 100,000). Appends with
	// NoStream or an exact revision are idempotent without it.
	RetryWindow int
	// Logger receives storage-engine errors (default: slog.Default()).
	Logger *slog.Logger
}

func (o *Options) fill() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ScavengeInterval == 0 {
		o.ScavengeInterval = 10 * time.Minute
	}
	if o.RetryWindow <= 0 {
		o.RetryWindow = 100_000
	}
	if o.RetryWindow < minRetryWindow {
		o.RetryWindow = minRetryWindow // a round's own events must fit
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// markerFile sits in every store directory so that Open never adopts (or
// scribbles over) a directory that is something else. Its first line is the
// store format; a line markerTracksHighWater says that the store keeps a
// high-water mark, so that a mark file that is missing or empty is damage
// (stores created before the mark existed have no such line, and get it
// once their mark is written).
const markerFile = "IMSYNC-EVENTS"

const markerTracksHighWater = "high-water-mark"

// markerText is the content of a marker file.
func markerText(tracksHighWater bool) []byte {
	if tracksHighWater {
		return []byte(storeFormat + "\n" + markerTracksHighWater + "\n")
	}
	return []byte(storeFormat + "\n")
}

// Embedded is the default Store: a single-process, durable store on local
// disk (pebble underneath). Appends from many goroutines are grouped so that
// one fsync acknowledges all of them (group commit); an append returns only
// after its batch is fsynced.
//
// Reads never see an event before it is durable: every read is capped at
// the durable watermark that the commit loop publishes.
type Embedded struct {
	db   *pebble.DB
	lock io.Closer // the store directory's lock (nil in memory)
	dir  string    // the store directory (empty in memory)
	opts Options

	reqs  chan *writeReq // to the writer goroutine
	syncq chan *round    // writer → syncer, in commit order
	quit  chan struct{}  // closed by Close
	wg    sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	bg        context.Context // cancelled by Close; bounds background work
	stopBG    context.CancelFunc

	dbMu       sync.RWMutex     // readers hold it shared; Close takes it to close db
	scavengeMu sync.Mutex       // one scavenge at a time
	hw         *highWaterWriter // nil in memory
	lost       Loss             // set by Recover
	markLost   bool             // Recover: the high-water mark was missing, empty or damaged

	// writer-owned: only the writer goroutine touches these.
	lastPos     uint64
	nextSID     uint64
	lastCreated int64
	recent      *retryCache
	tail        *tailCache // the newest records, for live subscribers

	mu         sync.RWMutex
	streams    map[string]*streamState // every stream ever written
	byID       map[uint64]*streamState
	durablePos uint64        // last global position that is durable
	changed    chan struct{} // closed and replaced whenever durablePos moves
	failed     error         // set once a write to disk failed; the store is then read-only
	damage     error         // set once damaged data was found; every use then fails with it
	closed     bool
}

type streamState struct {
	id   uint64
	name string
	cur  header // as applied by the writer (writer-owned)
	pub  header // as durable (guarded by Embedded.mu)
	// scavengedBefore: events below it were already deleted (scavenger-owned).
	scavengedBefore Revision

	round *round // writer-owned: the round that last touched the stream
	dirty bool   // writer-owned: header to be written in the current round
}

var _ Store = (*Embedded)(nil)

// Open opens (or creates) the store in dir. A directory that exists, is not
// empty and is not an imsync store is refused with ErrNotAStore (and left
// untouched); damaged storage gives ErrCorrupt; a store that another
// process has open gives ErrInUse.
func Open(dir string, opts Options) (*Embedded, error) {
	if dir == "" {
		return nil, invalid("empty store directory")
	}
	fresh, tracked, err := inspectDir(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("events: create store directory: %w", err)
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	if fresh {
		// The marker goes in place only once the database is initialised; a
		// crash before that leaves the temporary marker, which says "ours,
		// unfinished" to the next Open.
		if err := writeFileSync(filepath.Join(dir, markerFile+".tmp"), markerText(true)); err != nil {
			lock.Close()
			return nil, err
		}
	}
	s, err := open(filepath.Join(dir, "db"), vfs.Default, !fresh, opts, openFlags{tracked: tracked})
	if err != nil {
		lock.Close()
		return nil, err
	}
	if fresh || !tracked {
		// The mark file is durable by now (open wrote and synced it): from
		// here on, a missing mark is damage.
		if err := placeMarker(dir, fresh); err != nil {
			s.Close()
			lock.Close()
			return nil, err
		}
	}
	s.lock, s.dir = lock, dir
	return s, nil
}

// placeMarker puts the marker saying that the store tracks its high-water
// mark in place: the temporary one of a new store, or a new one replacing
// the marker of a store created before the mark existed.
func placeMarker(dir string, fresh bool) error {
	tmp := filepath.Join(dir, markerFile+".tmp")
	if !fresh {
		if err := writeFileSync(tmp, markerText(true)); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, markerFile)); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return syncFSDir(vfs.Default, dir)
}

// OpenInMemory returns a store that keeps everything in memory: the same
// engine and semantics as Open without durability, for tests.
func OpenInMemory(opts Options) (*Embedded, error) {
	return open("", vfs.NewMem(), false, opts, openFlags{})
}

const lockFile = "LOCK"

// lockStore takes the store directory's lock: ErrInUse when another process
// holds it, a permission error (errors.Is os.ErrPermission) when this one
// may not use the directory.
func lockStore(dir string) (io.Closer, error) {
	lock, err := vfs.Default.Lock(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, lockError(dir, err)
	}
	return lock, nil
}

// lockError tells "another process holds the lock" from every other reason
// the lock could not be taken. Creating the lock file fails with a path
// error (permission denied, read-only file system, ...); taking the lock
// fails with a bare errno, EAGAIN or EACCES, when another process holds it.
func lockError(dir string, err error) error {
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr) && errors.Is(err, os.ErrPermission):
		return fmt.Errorf("events: store %s: permission denied, check the owner and mode of the directory and its files: %w", dir, err)
	case errors.As(err, &pathErr):
		return fmt.Errorf("events: lock store %s: %w", dir, err)
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES), strings.Contains(err.Error(), "lock held by current process"):
		return fmt.Errorf("%w: %s: %v", ErrInUse, dir, err)
	}
	return fmt.Errorf("events: lock store %s: %w", dir, err)
}

// inspectDir tells a new store (missing or empty directory, or one whose
// creation was cut short) from an existing one, and refuses anything else.
// tracked: the marker says that the store keeps a high-water mark.
func inspectDir(dir string) (fresh, tracked bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("events: read store directory: %w", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	if names[markerFile] {
		marker, err := os.ReadFile(filepath.Join(dir, markerFile))
		if err != nil {
			return false, false, fmt.Errorf("events: read %s: %w", markerFile, err)
		}
		lines := strings.Split(string(bytes.TrimSpace(marker)), "\n")
		if got := strings.TrimSpace(lines[0]); got != storeFormat {
			return false, false, fmt.Errorf("%w: %s holds format %q, this build reads %q", ErrNotAStore, dir, got, storeFormat)
		}
		for _, l := range lines[1:] {
			tracked = tracked || strings.TrimSpace(l) == markerTracksHighWater
		}
		return false, tracked, nil
	}
	delete(names, lockFile)
	if names[markerFile+".tmp"] {
		return true, false, nil // our own creation, cut short before it held data
	}
	if len(names) > 0 {
		return false, false, fmt.Errorf("%w: %s is not empty and has no %s file; refusing to use it", ErrNotAStore, dir, markerFile)
	}
	return true, false, nil
}

// openFlags say how open treats the high-water mark.
type openFlags struct {
	// tracked: the store's marker says it keeps a mark; a missing or
	// empty mark file is then damage.
	tracked bool
	// acceptLoss opens a store whose recovered state is behind its mark,
	// or whose mark is gone (see Recover).
	acceptLoss bool
}

// open opens the pebble database in dir.
func open(dir string, fs vfs.FS, mustExist bool, opts Options, flags openFlags) (s *Embedded, err error) {
	opts.fill()
	sink := &damageSink{logger: opts.Logger}
	popts := &pebble.Options{
		FS:               fs,
		ErrorIfNotExists: mustExist,
		Logger:           pebbleLogger{opts.Logger, sink},
		EventListener:    sink.listener(),
		MemTableSize:     64 << 20,
	}
	// pebble panics on some kinds of damage; a store must answer with an error.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %v; %s", ErrCorrupt, r, restoreHint)
		}
	}()
	db, err := pebble.Open(dir, popts)
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("events: open %s: permission denied, check the owner and mode of the directory and its files: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v; %s", ErrCorrupt, dir, err, restoreHint)
	}
	s = &Embedded{
		db:      db,
		opts:    opts,
		reqs:    make(chan *writeReq),
		syncq:   make(chan *round, 4),
		quit:    make(chan struct{}),
		streams: make(map[string]*streamState),
		byID:    make(map[uint64]*streamState),
		changed: make(chan struct{}),
		recent:  newRetryCache(opts.RetryWindow),
		tail:    newTailCache(),
	}
	s.bg, s.stopBG = context.WithCancel(context.Background())
	err = s.load(mustExist)
	if damage := sink.firstDamage(); damage != nil {
		err = damage // the clearer error: it names the damaged file
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	sink.opened.Store(true)
	if dir != "" {
		if err := s.checkHighWater(fs, dir, flags); err != nil {
			if s.hw != nil {
				s.hw.close()
			}
			db.Close()
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.writeLoop()
	go s.syncLoop()
	if s.hw != nil {
		s.wg.Add(1)
		go s.highWaterLoop()
	}
	if opts.ScavengeInterval > 0 {
		s.wg.Add(1)
		go s.scavengeLoop(opts.ScavengeInterval)
	}
	sink.store.Store(s)
	if err := sink.firstDamage(); err != nil {
		s.damaged(err) // reported before the store was bound
	}
	return s, nil
}

// load reads the format, the counters and every stream header.
func (s *Embedded) load(mustExist bool) error {
	format, err := s.get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound) && !mustExist:
		b := s.db.NewBatch()
		b.Set(keyFormat, []byte(storeFormat), nil)
		b.Set(keyGlobal, encodeGlobal(0, 1), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("events: initialise store: %w", err)
		}
		format, err = []byte(storeFormat), nil
	case errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("%w: format key missing", ErrCorrupt)
	case err != nil:
		return err
	}
	if string(format) != storeFormat {
		return fmt.Errorf("%w: format %q, this build reads %q", ErrNotAStore, format, storeFormat)
	}
	g, err := s.get(keyGlobal)
	if err != nil {
		return fmt.Errorf("%w: global counters: %v", ErrCorrupt, err)
	}
	if s.lastPos, s.nextSID, err = decodeGlobal(g); err != nil {
		return err
	}
	s.durablePos = s.lastPos

	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixHeader}, UpperBound: []byte{prefixHeader + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return fmt.Errorf("%w: bad header key %x", ErrCorrupt, k)
		}
		h, name, err := decodeHeader(it.Value())
		if err != nil {
			return err
		}
		st := &streamState{id: binary.BigEndian.Uint64(k[1:]), name: name}
		if st.id >= s.nextSID {
			return fmt.Errorf("%w: stream id %d beyond counter %d", ErrCorrupt, st.id, s.nextSID)
		}
		if h.next, st.scavengedBefore, err = s.loadNext(st.id, h.next); err != nil {
			return err
		}
		st.cur, st.pub = h, h
		s.streams[name] = st
		s.byID[st.id] = st
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return s.loadRecentIDs()
}

// loadNext derives a stream's next revision: one past its last event on
// disk, or the floor the scavenger left when it deleted every event, or what
// the header last recorded, whichever is highest (each is a lower bound,
// and the true value is always one of them).
func (s *Embedded) loadNext(sid uint64, recorded uint64) (next uint64, floor Revision, err error) {
	next = recorded
	if v, err := s.get(floorKey(sid)); err == nil {
		if len(v) != 8 {
			return 0, 0, fmt.Errorf("%w: floor of stream %d", ErrCorrupt, sid)
		}
		floor = Revision(binary.BigEndian.Uint64(v))
		next = max(next, uint64(floor))
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: eventKey(sid, 0), UpperBound: eventKey(sid, RevisionEnd)})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	if it.Last() {
		_, rev, err := decodeEventKey(it.Key())
		if err != nil {
			return 0, 0, err
		}
		next = max(next, uint64(rev)+1)
	}
	return next, floor, it.Error()
}

// loadRecentIDs refills the retry cache from the tail of the log so that a
// retry after a restart is still recognised.
func (s *Embedded) loadRecentIDs() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixLog}, UpperBound: []byte{prefixLog + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var tail []logEntry
	var poss []uint64
	for ok := it.Last(); ok && len(tail) < s.opts.RetryWindow; ok = it.Prev() {
		l, err := decodeLogEntry(it.Value())
		if err != nil {
			return err
		}
		pos, err := decodeLogKey(it.Key())
		if err != nil {
			return err
		}
		tail, poss = append(tail, l), append(poss, pos)
	}
	for i := len(tail) - 1; i >= 0; i-- {
		s.recent.add(tail[i].sid, tail[i].id, tail[i].rev, poss[i])
	}
	return it.Error()
}

func (s *Embedded) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// Close stops the commit loop after the batch in flight, wakes subscribers
// and closes the database. Appends in flight either complete or fail with
// ErrClosed.
func (s *Embedded) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		s.stopBG()
		s.wg.Wait()
		if s.hw != nil {
			// The syncer recorded every round it answered; make it durable.
			s.hwErr(s.hw.sync())
			s.hw.close()
		}
		s.dbMu.Lock()
		defer s.dbMu.Unlock()
		s.closeErr = s.db.Close()
		if s.lock != nil {
			s.lock.Close()
		}
	})
	return s.closeErr
}

// Flush forces buffered state into sorted tables; used by tests and tools.
func (s *Embedded) Flush() error {
	if err := s.beginRead(); err != nil {
		return err
	}
	defer s.endRead()
	return s.db.Flush()
}

func (s *Embedded) usable() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.damage != nil {
		return s.damage
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

// changedChan returns a channel closed at the next durability change.
func (s *Embedded) changedChan() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

type pebbleLogger struct {
	l    *slog.Logger
	sink *damageSink
}

func (p pebbleLogger) Infof(string, ...any) {}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("event store: " + fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	// pebble calls Fatalf on broken invariants; continuing could lose data.
	p.sink.fatal("event store: " + fmt.Sprintf(format, args...))
}

// retryCache remembers the ids of the latest events (FIFO) so that a retried
// Any/StreamExists append is recognised.
type retryCache struct {
	byID map[retryKey]retryVal
	ring []retrySlot
	next int
}

type retrySlot struct {
	key retryKey
	pos uint64
}

type retryKey struct {
	sid uint64
	id  uuid.UUID
}

type retryVal struct {
	rev Revision
	pos uint64
}

func newRetryCache(n int) *retryCache {
	return &retryCache{byID: make(map[retryKey]retryVal, n), ring: make([]retrySlot, n)}
}

func (c *retryCache) add(sid uint64, id uuid.UUID, rev Revision, pos uint64) {
	k := retryKey{sid, id}
	// Evict the oldest entry unless its key was added again since.
	if old := c.ring[c.next]; old.pos != 0 {
		if v, ok := c.byID[old.key]; ok && v.pos == old.pos {
			delete(c.byID, old.key)
		}
	}
	c.ring[c.next] = retrySlot{k, pos}
	c.next = (c.next + 1) % len(c.ring)
	c.byID[k] = retryVal{rev, pos}
}

func (c *retryCache) find(sid uint64, id uuid.UUID) (retryVal, bool) {
	v, ok := c.byID[retryKey{sid, id}]
	return v, ok
}

func writeFileSync(path string, data []byte) error {
	return writeFileFlags(path, os.O_TRUNC, data)
}

// writeFileFlags writes data to path (created if need be, opened with the
// extra flag: truncate or append) and fsyncs it before returning.
func writeFileFlags(path string, flag int, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|flag, 0o640)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	_, err = f.Write(data)
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
