package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Checkpoint writes a consistent copy of the open store into dir, a
// directory that must not exist yet or be empty: a store directory that
// Open opens (in another process, or in this one after this store is
// closed) with exactly the events that were durable when the copy was
// taken — every acknowledged append before the call, none that was still
// waiting for its fsync. It returns the copy's last global position (zero
// for an empty store).
//
// Appends wait while the copy is cut (pebble hard-links its tables and
// copies only the write-ahead log of the newest writes, which a flush
// first keeps short); reads go on. The copy carries the store's own files
// beside pebble's: the marker and a high-water mark at the copy's last
// position, so that damage to the copy is detected like damage to the
// original.
func (s *Embedded) Checkpoint(ctx context.Context, dir string) (Position, error) {
	if s.lock == nil {
		return Position{}, invalid("checkpoint of a store that is not on disk")
	}
	if dir == "" {
		return Position{}, invalid("empty checkpoint directory")
	}
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return Position{}, invalid("checkpoint directory %s is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Position{}, fmt.Errorf("events: checkpoint: %w", err)
	}
	// Most of the newest writes go to a table before appends wait, so the
	// pause copies a short log.
	if err := s.Flush(); err != nil {
		return Position{}, err
	}
	var pos Position
	_, err := s.submit(ctx, &writeReq{kind: writeBarrier, barrier: func(lastPos, nextSID uint64) error {
		if err := s.beginRead(); err != nil {
			return err
		}
		defer s.endRead()
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("events: checkpoint: %w", err)
		}
		if err := s.db.Checkpoint(filepath.Join(dir, "db"), pebble.WithFlushedWAL()); err != nil {
			return fmt.Errorf("events: checkpoint: %w", err)
		}
		// The copy's mark: what it holds is what it must keep holding.
		mark := highWater{seq: 1, lastPos: lastPos, nextSID: nextSID}.encode()
		if err := writeFileSync(filepath.Join(dir, "db", highWaterFile), mark); err != nil {
			return err
		}
		if err := syncFSDir(vfs.Default, filepath.Join(dir, "db")); err != nil {
			return err
		}
		pos = Position{lastPos, lastPos}
		return nil
	}})
	if err != nil {
		return Position{}, err
	}
	if err := copyIfPresent(filepath.Join(s.dir, recoveryLog), filepath.Join(dir, recoveryLog)); err != nil {
		return Position{}, err
	}
	if err := writeFileSync(filepath.Join(dir, markerFile), markerText(true)); err != nil {
		return Position{}, err
	}
	if err := syncFSDir(vfs.Default, dir); err != nil {
		return Position{}, err
	}
	return pos, nil
}

// barrier runs req.barrier on the writer goroutine once every round it
// applied before is durable and published, with nothing newer applied:
// the store's state is then exactly its durable state, and stays so until
// the barrier returns, since appends wait for the writer.
func (s *Embedded) barrier(req *writeReq) {
	r := &round{synced: make(chan struct{})}
	s.syncq <- r
	<-r.synced
	err := s.failedErr()
	if err == nil {
		err = req.barrier(s.lastPos, s.nextSID)
	}
	req.done <- writeResult{err: err}
}

func copyIfPresent(src, dst string) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: checkpoint: %w", err)
	}
	return writeFileSync(dst, b)
}
