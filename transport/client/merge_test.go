package client

import (
	"fmt"
	"testing"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

func TestNextStep(t *testing.T) {
	entry := func(seq uint64) *wire.Notify {
		return &wire.Notify{UserSeq: seq, Entry: &eventspb.SyncEntry{UserSeq: seq}}
	}
	cases := []struct {
		name   string
		last   uint64
		push   *wire.Notify
		newest uint64
		want   step
	}{
		{"nothing new", 5, nil, 5, stepNone},
		{"stale push", 5, entry(4), 4, stepNone},
		{"next entry pushed", 5, entry(6), 6, stepApply},
		{"next entry, but more heard of", 5, entry(6), 8, stepPull},
		{"push skips one", 5, entry(7), 7, stepPull},
		{"push without entry (coalesced)", 5, &wire.Notify{UserSeq: 9}, 9, stepPull},
		{"no push, newer seq from login", 5, nil, 12, stepPull},
		{"entry of another seq", 5, &wire.Notify{UserSeq: 6, Entry: &eventspb.SyncEntry{UserSeq: 9}}, 6, stepPull},
	}
	for _, tc := range cases {
		if got := nextStep(tc.last, tc.push, tc.newest); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestMergePage(t *testing.T) {
	page := func(seqs ...uint64) []*eventspb.SyncEntry {
		var out []*eventspb.SyncEntry
		for _, s := range seqs {
			out = append(out, &eventspb.SyncEntry{UserSeq: s})
		}
		return out
	}
	cases := []struct {
		name string
		last uint64
		page []*eventspb.SyncEntry
		want string
		gap  bool
	}{
		{"follows", 3, page(4, 5, 6), "[4 5 6]", false},
		{"overlaps what was applied", 5, page(4, 5, 6, 7), "[6 7]", false},
		{"all old", 7, page(4, 5), "[]", false},
		{"retention dropped some", 3, page(10, 11), "[10 11]", true},
		{"empty", 3, nil, "[]", false},
	}
	for _, tc := range cases {
		got, gap := mergePage(tc.last, tc.page)
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.UserSeq)
		}
		if s := fmt.Sprint(seqs); (s != tc.want && !(s == "[]" && tc.want == "[]")) || gap != tc.gap {
			t.Errorf("%s: got %v gap %v, want %s gap %v", tc.name, seqs, gap, tc.want, tc.gap)
		}
	}
}
