package actors

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"
)

// A grain serves only on the member that owns its identity. While members
// disagree about the membership, a member with a late view can ask another
// to activate a grain that this other one no longer owns, and protoactor-go
// activates whatever it is asked for; that second activation would answer
// reads from the state it loaded (its writes fail on the journal's
// expected revision, so it cannot fork a stream). So, in a cluster of more
// than one member, every grain checks each request against this member's
// latest view: a grain that is not its identity's owner hands the request
// on to the owner's activation (the reply goes straight to the caller),
// forgets its own PID in this member's cache and stops. followTopology
// keeps the view.

// placementView is this member's latest rendezvous, or nil while it is
// alone (then every grain is its own: no check).
type placementView struct {
	rdv atomic.Pointer[cluster.Rendezvous]
}

func (v *placementView) update(t *cluster.ClusterTopology) {
	if len(t.Members) <= 1 {
		v.rdv.Store(nil)
		return
	}
	r := cluster.NewRendezvous()
	r.UpdateMembers(t.Members)
	v.rdv.Store(r)
}

// owner is the member that owns the grain in this view: "" while this
// member is alone, or when it is self.
func (v *placementView) owner(identity, kind, self string) string {
	rdv := v.rdv.Load()
	if rdv == nil {
		return ""
	}
	if o := rdv.GetByClusterIdentity(cluster.NewClusterIdentity(identity, kind)); o != self {
		return o
	}
	return ""
}

// errOwnerLeft fails a request whose grain's member left while it waited:
// the request goes again, to the grain's new owner.
var errOwnerLeft = errors.New("the grain's member left")

// waiting holds the grain requests in flight to other members, by member
// address. A request to a member that dies would wait out its attempt's
// timeout (protoactor-go does not fail requests to a member that left):
// when the member leaves the topology, its requests fail at once and are
// sent again, to the new owner.
type waiting struct {
	mu sync.Mutex
	by map[string]map[*wait]struct{}
}

// wait is one request's registration: a request of Service.request
// watches ch; a fanout delivery is a future, which is answered instead.
type wait struct {
	addr   string
	ch     chan struct{}
	future *actor.PID
}

// add registers a request waiting on the member at addr (nil when addr
// is "": this member, or alone).
func (w *waiting) add(addr string, future *actor.PID) *wait {
	if addr == "" {
		return nil
	}
	x := &wait{addr: addr, future: future}
	if future == nil {
		x.ch = make(chan struct{})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.by == nil {
		w.by = map[string]map[*wait]struct{}{}
	}
	if w.by[addr] == nil {
		w.by[addr] = map[*wait]struct{}{}
	}
	w.by[addr][x] = struct{}{}
	return x
}

func (w *waiting) remove(x *wait) {
	if x == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if m := w.by[x.addr]; m != nil {
		delete(m, x)
		if len(m) == 0 {
			delete(w.by, x.addr)
		}
	}
}

// gone is what a request to a member that left is failed with.
func (x *wait) gone() <-chan struct{} {
	if x == nil {
		return nil
	}
	return x.ch
}

// left fails the requests waiting on the member at addr; answer answers
// a future.
func (w *waiting) left(addr string, answer func(future *actor.PID)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for x := range w.by[addr] {
		if x.future != nil {
			answer(x.future)
		} else {
			close(x.ch)
		}
	}
	delete(w.by, addr)
}

// ownedOnly is the grains' receive middleware that enforces ownership.
func (s *Service) ownedOnly(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		rdv := s.view.rdv.Load()
		if rdv == nil {
			next(c, env)
			return
		}
		m, ok := env.Message.(proto.Message)
		if !ok || !strings.HasPrefix(string(m.ProtoReflect().Descriptor().FullName()), "imsync.") {
			next(c, env) // lifecycle, timers, appends done, remoting's own
			return
		}
		id := cluster.GetClusterIdentity(c)
		if id == nil {
			next(c, env)
			return
		}
		owner := rdv.GetByClusterIdentity(id)
		if owner == "" || owner == s.system.Address() {
			next(c, env)
			return
		}
		self := c.Self()
		s.cluster.PidCache.RemoveByValue(id.Identity, id.Kind, self)
		c.ActorSystem().Root.Poison(self)
		go func() {
			// Resolving the owner's activation may mean asking it: off
			// the grain's goroutine.
			if pid := s.cluster.Get(id.Identity, id.Kind); pid != nil && !pid.Equal(self) {
				s.system.Root.RequestWithCustomSender(pid, m, env.Sender)
			}
		}()
	}
}
