// Package actors holds imsync's grains: one conversation grain per
// conversation (owns the storage timeline conv-<id>), one user grain per
// user (owns the sync timeline inbox-<id>) and one device grain per user
// device. Each grain is a thin shell around a pure core — decide(state,
// command) → events and evolve(state, event) → state — with the event store
// and the network outside it. See docs/architecture.md.
package actors
