package export

import (
	"context"
	"fmt"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
)

// Range selects the events to export.
type Range struct {
	// From is the first position exported (inclusive; zero: the start).
	From events.Position
	// To is the last position exported (inclusive; zero: the last event
	// in the store when the export starts; later appends are left out).
	To events.Position
	// Filter keeps only streams with these prefixes (none: every stream).
	Filter events.Filter
}

// pageSize is how many events one read fetches.
const pageSize = 1000

// Export writes one row per event of rng to w, in global order, and
// returns how many it wrote. An event that does not decode stops it with
// a *projections.EventError; nothing is skipped. It does not close w.
func Export(ctx context.Context, store events.Store, rng Range, w Writer) (int, error) {
	last, err := store.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: rng.Filter})
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	if len(last) == 0 {
		return 0, nil
	}
	to := rng.To
	if to == (events.Position{}) || last[0].Position.Less(to) {
		to = last[0].Position
	}
	n := 0
	from, after := rng.From, false // after: from was exported already
	for {
		page, err := store.ReadAll(ctx, events.ReadAllOptions{From: from, Limit: pageSize, Filter: rng.Filter})
		if err != nil {
			return n, fmt.Errorf("export: %w", err)
		}
		progressed := false
		for _, re := range page {
			if after && !from.Less(re.Position) {
				continue // the page starts at the last event of the previous one
			}
			if to.Less(re.Position) {
				return n, nil
			}
			e, err := projections.Decode(re)
			if err != nil {
				return n, err
			}
			row, err := Flatten(e)
			if err != nil {
				return n, err
			}
			if err := w.Write(row); err != nil {
				return n, err
			}
			n++
			from, after, progressed = re.Position, true, true
		}
		if !progressed || from == to {
			return n, nil
		}
	}
}
