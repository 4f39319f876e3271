package actors

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
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
// online (followTopology). A single member sees one change, its own start,
// which finds no connections and every grain its own: it costs nothing.

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

// followTopology settles this member after every membership change: at
// once and again in later rounds (settleRounds), for members that learnt
// of the change after this one, it
//   - forgets every cached grain PID: protoactor-go keeps the PIDs it
//     resolved and drops them only for members that left or after a
//     failed Request; when a member joins, the grains that move to it are
//     stopped where they were, and a cached PID of one of them would
//     dead-letter a RequestFuture (fanout) for ever;
//   - in the later rounds, hands the latest topology to its own placement
//     actor again, which stops the grains this member holds but does not
//     own: a member whose view was late may have asked this one to
//     activate a grain after this one had moved on, and protoactor-go
//     activates whatever it is asked for; such a second activation would
//     answer reads from an old state until its next write failed;
//   - announces its connections again.
func (s *Service) followTopology() {
	var mu sync.Mutex
	var timers []*time.Timer
	var latest *cluster.ClusterTopology
	stopped := false
	settle := func(sweep bool) {
		mu.Lock()
		t := latest
		mu.Unlock()
		if t == nil {
			return
		}
		s.forgetPIDs(append(slices.Clone(t.Members), t.Left...))
		if sweep {
			s.system.Root.Send(actor.NewPID(s.system.Address(), placementActorName), t)
		}
		s.reannounce()
	}
	sub := s.system.EventStream.Subscribe(func(evt any) {
		t, ok := evt.(*cluster.ClusterTopology)
		if !ok || len(t.Joined)+len(t.Left) == 0 {
			return
		}
		s.view.update(t)
		for _, m := range t.Left {
			s.waiting.left(m.Address(), func(future *actor.PID) {
				s.counts.failedOver.Add(1)
				s.system.Root.Send(future, fail(Code_UNAVAILABLE, "member %s left", m.Address()))
			})
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		latest = t
		for _, tm := range timers {
			tm.Stop()
		}
		timers = timers[:0]
		go settle(false)
		for _, d := range settleRounds {
			timers = append(timers, time.AfterFunc(d, func() { settle(true) }))
		}
	})
	s.conns.mu.Lock()
	s.conns.stopFn = func() {
		s.system.EventStream.Unsubscribe(sub)
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		for _, tm := range timers {
			tm.Stop()
		}
	}
	s.conns.mu.Unlock()
}

// settleRounds: when followTopology settles again after a change.
var settleRounds = []time.Duration{3 * time.Second, 10 * time.Second}

// forgetPIDs drops every cached grain PID on the given members (all of
// them: each cached PID is on some member).
func (s *Service) forgetPIDs(members []*cluster.Member) {
	for _, m := range members {
		s.cluster.PidCache.RemoveByMember(m)
	}
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

// DeviceCloser is a DeviceSink that can end its connection: the device
// grain asks it to when the device is disconnected (DisconnectDevice),
// from whichever member. Close must not block.
type DeviceCloser interface {
	CloseConnection(code uint32, reason string)
}

// connectionActor is the actor of one connection of user's device: it
// hands the device grain's pushes and closes to sink. A grain may hold a
// stale PID (its connection's member restarted at the same address, where
// actor ids start again from the same numbers): what names another user
// or device is dropped, so that it never reaches this connection.
func connectionActor(user, device string, sink DeviceSink) actor.ReceiveFunc {
	return func(actx actor.Context) {
		switch m := actx.Message().(type) {
		case *Push:
			if m.User == user && m.Device == device {
				sink.Push(m)
			}
		case *CloseConnections: // from the device grain
			if c, ok := sink.(DeviceCloser); ok && m.User == user && m.Device == device {
				c.CloseConnection(m.Code, m.Reason)
			}
		}
	}
}

// DisconnectDevice asks every connection of a device, on whichever member
// it is, to close with code and reason (through the device grain, which
// knows each connection's actor), and returns how many connections the
// grain had: they close as their members receive the request, a moment
// later. A connection still logging in is not counted (nor attached yet).
// After a membership change a grain that moved knows only the connections
// announced to it again since: transport.Server.DisconnectDevice also
// records the disconnect in the store, which every node follows.
func (s *Service) DisconnectDevice(ctx context.Context, user, device string, code uint32, reason string) (int, error) {
	if err := validate("user", user, "device", device); err != nil {
		return 0, err
	}
	res, err := call[*ConnectionsClosed](s, ctx, deviceIdentity(user, device), kindDevice, &CloseConnections{Code: code, Reason: reason})
	if err != nil {
		return 0, err
	}
	return int(res.Closed), nil
}
