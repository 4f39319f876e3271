package projections

import (
	"context"

	"github.com/imsync/imsync/events"
)

// Projection folds events into a read model. Handle is called with every
// event the projection's filter selects, in global order, one at a time
// (never concurrently). An error stops the runner at that event; the event
// is delivered again after the next start.
type Projection interface {
	// Name identifies the projection's checkpoint: stable across restarts,
	// [A-Za-z0-9._-] only.
	Name() string
	Handle(ctx context.Context, e Event) error
}

// Filter is implemented by projections that need only some streams (for
// example events.ConversationPrefix). Without it a projection sees every
// user stream.
type Filter interface {
	Filter() events.Filter
}

// Stateful is implemented by projections that keep their state in memory.
// The runner saves Snapshot together with the checkpoint, in one atomic
// write, and calls Restore with it before resuming, so that a restart
// neither loses nor repeats an event. Restore(nil) resets to the empty
// state (a start from scratch).
type Stateful interface {
	Snapshot() ([]byte, error)
	Restore(state []byte) error
}

// Resetter is implemented by projections whose state lives outside the
// runner (a database, an index): Rebuild calls Reset before replaying from
// the start. Such projections get each event at least once — the events
// after the last saved checkpoint are delivered again after a crash — so
// their Handle must be idempotent (for example keyed by Stream and
// Revision), unless they keep the checkpoint in the same transaction as
// their state through their own CheckpointStore.
type Resetter interface {
	Reset(ctx context.Context) error
}
