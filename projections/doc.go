// Package projections replays the event store into read models — the
// conversation list, search, statistics, exports — from any position, with
// checkpoints, and without a running server. See docs/architecture.md.
package projections
