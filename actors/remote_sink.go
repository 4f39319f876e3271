package actors

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
)

// Pushes across members. A connection's sink is an actor on the member
// that holds the connection; AttachDevice gives its PID (address and id,
// plain protobuf fields) to the device grain, wherever the cluster placed
// that grain, and the grain sends it *Push messages, which protoactor-go's
// remoting carries to another member like any grain message. The grain
// watches the PID, so a member that dies takes its connections out of
// every device grain that held them (remoting reports the PIDs
// terminated).
//
// What does not survive on its own is the other direction: a device grain
// or user grain that moves (its member died, or a member joined and the
// grain's identity now belongs to it) restarts from its stream and knows
// no connections and no online devices. So every member keeps the set of
// its own attachments and, when the cluster's membership changes,
// announces each of them again to its device grain (AttachDevice is
// idempotent), which in turn tells the user grain that the device is
// online. It does so at once and once more a few seconds later, for
// members that learnt of the change later than this one and moved a grain
// after the first round. A single member never sees a membership change
// after its start, so this costs it nothing.

// reannounceAgain: the second announcement after a membership change.
const reannounceAgain = 3 * time.Second

// reannounceWorkers bounds the concurrent announcements of one round.
const reannounceWorkers = 16

// attachments is the set of this member's live device connections.
type attachments struct {
	mu     sync.Mutex
	set    map[*Attachment]struct{}
	stopFn func() // ends followTopology
}

// stop ends the announcements (the member is closing).
func (a *attachments) stop() {
	a.mu.Lock()
	f := a.stopFn
	a.stopFn = nil
	a.mu.Unlock()
	if f != nil {
		f()
	}
}

func (a *attachments) add(x *Attachment) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.set == nil {
		a.set = map[*Attachment]struct{}{}
	}
	a.set[x] = struct{}{}
}

func (a *attachments) remove(x *Attachment) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.set, x)
}

func (a *attachments) list() []*Attachment {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*Attachment, 0, len(a.set))
	for x := range a.set {
		out = append(out, x)
	}
	return out
}

// followTopology re-announces the attachments whenever a member joins or
// leaves.
func (s *Service) followTopology() {
	var mu sync.Mutex
	var last *time.Timer
	stopped := false
	sub := s.system.EventStream.Subscribe(func(evt any) {
		t, ok := evt.(*cluster.ClusterTopology)
		if !ok || len(t.Joined)+len(t.Left) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		go s.reannounce()
		if last != nil {
			last.Stop()
		}
		last = time.AfterFunc(reannounceAgain, s.reannounce)
	})
	s.conns.mu.Lock()
	s.conns.stopFn = func() {
		s.system.EventStream.Unsubscribe(sub)
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if last != nil {
			last.Stop()
		}
	}
	s.conns.mu.Unlock()
}

// reannounce tells every attachment's device grain about it again.
func (s *Service) reannounce() {
	all := s.conns.list()
	if len(all) == 0 {
		return
	}
	s.log.Debug("membership changed: announcing connections again", "connections", len(all), "members", s.Members())
	work := make(chan *Attachment)
	var wg sync.WaitGroup
	for range min(reannounceWorkers, len(all)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range work {
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
				_, err := s.request(ctx, deviceIdentity(a.user, a.device), kindDevice, &AttachDevice{Address: a.pid.Address, Id: a.pid.Id})
				cancel()
				if err != nil {
					s.log.Warn("connection not announced again after a membership change", "user", a.user, "device", a.device, "err", err)
				}
			}
		}()
	}
	for _, a := range all {
		work <- a
	}
	close(work)
	wg.Wait()
}
