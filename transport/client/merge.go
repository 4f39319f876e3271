package client

import (
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// The client's sync rule, as pure functions (table-tested): a device
// applies a pushed entry only when it directly follows the last one it
// applied; anything else means "pull from the last one". Pulled pages are
// merged by user seq, so that an entry is never applied twice nor skipped.

type step int

const (
	stepNone  step = iota // nothing new
	stepApply             // apply the pushed entry
	stepPull              // pull pages from the last applied seq
)

// nextStep decides what a device at last does about the newest seq it
// heard of, given the latest push (nil if none).
func nextStep(last uint64, push *wire.Notify, newest uint64) step {
	switch {
	case newest <= last:
		return stepNone
	case push != nil && push.Entry != nil && push.UserSeq == last+1 && push.Entry.UserSeq == push.UserSeq:
		if newest == push.UserSeq {
			return stepApply
		}
		return stepPull // more than the push came meanwhile: one pull covers all
	default:
		return stepPull
	}
}

// mergePage returns the entries of a pulled page to apply after last, in
// order. gap reports that the page starts beyond last+1: the entries in
// between were dropped by retention, and the device must rebuild its state
// (conversation list) instead of assuming it saw everything.
func mergePage(last uint64, page []*eventspb.SyncEntry) (apply []*eventspb.SyncEntry, gap bool) {
	next := last + 1
	for _, e := range page {
		if e.UserSeq < next {
			continue // already applied (a page overlapping a push)
		}
		if e.UserSeq > next {
			gap = true
		}
		apply = append(apply, e)
		next = e.UserSeq + 1
	}
	return apply, gap
}
