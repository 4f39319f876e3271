package webhook

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// DeviceStatus reports whether a device is connected now and the user seq
// it has acknowledged. The server passes one backed by the device grains
// (actors.Service.Device); without it, every known device counts as
// offline and its acknowledged seq is what the store says.
type DeviceStatus func(ctx context.Context, user, device string) (online bool, acked uint64, err error)

// pushState is what the offline push needs to know, rebuilt from the
// store and saved with the checkpoint: per user, the devices that have
// acknowledged something, their acknowledged seq and their last push.
type pushState struct {
	Users map[string]map[string]*devicePush `json:"users,omitempty"`
}

type devicePush struct {
	Acked uint64 `json:"acked"`
	// NotifiedSeq is the user seq of the last device.pending sent for the
	// device, NotifiedAt the store time (unix ms) of the entry that fired it.
	NotifiedSeq uint64 `json:"notified_seq,omitempty"`
	NotifiedAt  int64  `json:"notified_at,omitempty"`
}

func (p *pushState) device(user, device string) *devicePush {
	if p.Users == nil {
		p.Users = map[string]map[string]*devicePush{}
	}
	devs := p.Users[user]
	if devs == nil {
		devs = map[string]*devicePush{}
		p.Users[user] = devs
	}
	d := devs[device]
	if d == nil {
		d = &devicePush{}
		devs[device] = d
	}
	return d
}

func (p *pushState) snapshot() ([]byte, error) { return json.Marshal(p) }

func (p *pushState) restore(b []byte) error {
	*p = pushState{}
	if len(b) == 0 {
		return nil
	}
	return json.Unmarshal(b, p)
}

// pushTimeout bounds one DeviceStatus call.
const pushTimeout = 2 * time.Second

// pushEvents folds a device or inbox event into the state and returns the
// device.pending events it fires (see the package doc for the rule).
func (p *pushState) pushEvents(ctx context.Context, e projections.Event, status DeviceStatus, interval time.Duration) []Event {
	if rest, ok := strings.CutPrefix(e.Stream, events.DevicePrefix); ok {
		user, device, ok := strings.Cut(rest, "/")
		if a, isAck := e.Message.(*eventspb.DeviceAcked); ok && isAck {
			d := p.device(user, device)
			d.Acked = max(d.Acked, a.UserSeq)
		}
		return nil
	}
	user, ok := strings.CutPrefix(e.Stream, events.InboxPrefix)
	if !ok {
		return nil
	}
	ptr, ok := e.Message.(*eventspb.MessagePointer)
	if !ok || ptr.Sender == user {
		return nil // only others' messages wake a device up
	}
	userSeq := uint64(e.Revision) + 1
	at := e.Time.UnixMilli()
	var out []Event
	devs := p.Users[user]
	names := make([]string, 0, len(devs))
	for name := range devs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		d := devs[name]
		if d.Acked >= userSeq {
			continue
		}
		// Already told since its last ack, and not long ago: wait.
		if d.NotifiedSeq > d.Acked && at-d.NotifiedAt < interval.Milliseconds() {
			continue
		}
		if status != nil {
			sctx, cancel := context.WithTimeout(ctx, pushTimeout)
			online, acked, err := status(sctx, user, name)
			cancel()
			if err == nil {
				d.Acked = max(d.Acked, acked)
				if online || d.Acked >= userSeq {
					continue // the QUIC push reaches it, or it has it already
				}
			}
			// On error: better an extra push than a missed one.
		}
		id := uuid.NewSHA1(e.ID, []byte(name)).String()
		pv := &Preview{Conversation: ptr.ConversationId, Seq: ptr.Seq, Sender: ptr.Sender}
		if m := ptr.Message; m != nil {
			pv.Kind, pv.Text = m.Kind, previewText(m.Body)
		}
		out = append(out, Event{
			ID: id, IdempotencyKey: id, Kind: KindDevicePending,
			Stream: e.Stream, Revision: uint64(e.Revision), Position: position(e.Position), Type: e.Type, Time: e.Time,
			User: user, Device: name, Count: userSeq - d.Acked, UserSeq: userSeq, Latest: pv,
		})
		d.NotifiedSeq, d.NotifiedAt = userSeq, at
	}
	return out
}
