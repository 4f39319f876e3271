package events

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Damage found while the store runs (a table whose checksum fails, found by
// a read or a background compaction) puts the store into a failed state:
// the database is closed and every later append, read and subscription
// returns the ErrCorrupt error, which names the damaged file and the way to
// recover. It never panics.

// damageSink receives pebble's reports for one store. It exists before the
// store does (pebble reports while opening) and is bound to it after.
type damageSink struct {
	logger *slog.Logger
	store  atomic.Pointer[Embedded]
	opened atomic.Bool // false while pebble.Open runs

	mu      sync.Mutex
	first   error     // the first damage reported
	lastBG  time.Time // when a background error was last logged
	skipped int       // background errors not logged since
}

func (d *damageSink) listener() *pebble.EventListener {
	l := &pebble.EventListener{
		DataCorruption:  d.corruption,
		BackgroundError: d.backgroundError,
	}
	l.EnsureDefaults(nil)
	return l
}

func (d *damageSink) corruption(info pebble.DataCorruptionInfo) {
	err := fmt.Errorf("%w: %s is damaged (%v); %s", ErrCorrupt, info.Path, info.Details, restoreHint)
	d.mu.Lock()
	first := d.first == nil
	if first {
		d.first = err
	}
	d.mu.Unlock()
	if !first {
		return
	}
	d.logger.Error("event store: damaged data file", "file", info.Path, "err", err)
	if s := d.store.Load(); s != nil {
		s.damaged(err)
	}
}

// backgroundError logs pebble's background failures, at most once a minute
// (a compaction that keeps meeting a damaged table fails again and again).
func (d *damageSink) backgroundError(err error) {
	d.mu.Lock()
	now := time.Now()
	if !d.lastBG.IsZero() && now.Sub(d.lastBG) < time.Minute {
		d.skipped++
		d.mu.Unlock()
		return
	}
	skipped := d.skipped
	d.lastBG, d.skipped = now, 0
	d.mu.Unlock()
	d.logger.Error("event store: background error", "err", err, "repeats_not_logged", skipped)
}

// firstDamage is the first damage reported, if any.
func (d *damageSink) firstDamage() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.first
}

// fatal is pebble's Fatalf: a broken invariant or damage that pebble cannot
// continue from. While opening it panics (open recovers and returns
// ErrCorrupt); afterwards it logs and ends the process with status 1, as
// pebble's own logger does, since pebble must not go on.
func (d *damageSink) fatal(msg string) {
	if !d.opened.Load() {
		panic(msg)
	}
	d.logger.Error("event store: fatal storage error; stopping the process", "err", msg, "recovery", restoreHint)
	fmt.Fprintf(os.Stderr, "imsync: fatal storage error: %s\n%s\n", msg, restoreHint)
	os.Exit(1)
}

// damaged moves the store into the failed state, wakes every waiting
// subscription so that it sees the error, and closes the database: pebble
// would otherwise retry the compaction that met the damage without end.
// Calls made afterwards get err, also after Close.
func (s *Embedded) damaged(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.damage != nil {
		return
	}
	s.damage = err
	if s.failed == nil {
		s.failed = err
	}
	close(s.changed)
	s.changed = make(chan struct{})
	go s.Close() // not here: pebble calls the listener from its own goroutines
}

// readErr turns pebble's report of damage met by a read into the store's
// ErrCorrupt (the failed state's error once the listener has set it).
func (s *Embedded) readErr(err error) error {
	if err == nil || !pebble.IsCorruptionError(err) {
		return err
	}
	s.mu.RLock()
	damage := s.damage
	s.mu.RUnlock()
	if damage != nil {
		return damage
	}
	return fmt.Errorf("%w: %v; %s", ErrCorrupt, err, restoreHint)
}
