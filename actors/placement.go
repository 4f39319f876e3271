package actors

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The placement of grains: which member hosts a grain, and who spawns it.
//
// It is protoactor-go's disthash identity lookup with the same protocol
// (a member must run the same lookup as its peers): rendezvous hashing of
// a grain's identity over the members that host its kind names the owner;
// the owner's placement actor spawns the grain on an ActivationRequest
// and is its parent; a topology change poisons the grains this member no
// longer owns; a terminated grain is removed and ActivationTerminated is
// broadcast. What differs is the bookkeeping: disthash finds a terminated
// grain by scanning every activation (comparing PID pointers), so a large
// group's members passivating together cost O(n²) in the one mailbox that
// every new activation also waits in. Here activations are indexed by
// identity and by PID value, so a termination costs O(1).

// placementActorName is the placement actor's name on every member; a
// member that runs another lookup has no actor of that name, so mixing
// lookups fails as dead letters rather than as silently doubled grains.
const placementActorName = "imsync-placement"

// placementLookup is a cluster.IdentityLookup (pass newPlacementLookup()
// to cluster.Configure).
type placementLookup struct {
	cluster  *cluster.Cluster
	actor    *actor.PID
	topology *eventstream.Subscription
	// rdv is replaced, never mutated, on a topology change: Get reads it
	// without holding a lock across its activation request.
	rdv atomic.Pointer[cluster.Rendezvous]
}

var _ cluster.IdentityLookup = (*placementLookup)(nil)

func newPlacementLookup() cluster.IdentityLookup { return &placementLookup{} }

// Setup spawns the placement actor, then follows the topology.
func (l *placementLookup) Setup(c *cluster.Cluster, _ []string, _ bool) {
	l.cluster = c
	l.rdv.Store(cluster.NewRendezvous())
	system := c.ActorSystem
	props := actor.PropsFromProducer(func() actor.Actor { return newPlacementActor(c) })
	pid, err := system.Root.SpawnNamed(props, placementActorName)
	if err != nil {
		c.Logger().Error("placement actor did not start", slog.Any("error", err))
	}
	l.actor = pid
	l.topology = system.EventStream.Subscribe(func(ev any) {
		if t, ok := ev.(*cluster.ClusterTopology); ok {
			l.onTopology(t)
		}
	})
}

// Shutdown stops following the topology and stops the placement actor,
// which stops its grains first.
func (l *placementLookup) Shutdown() {
	system := l.cluster.ActorSystem
	system.EventStream.Unsubscribe(l.topology)
	if err := system.Root.PoisonFuture(l.actor).Wait(); err != nil {
		l.cluster.Logger().Error("placement actor did not stop", slog.Any("error", err))
	}
}

func (l *placementLookup) onTopology(t *cluster.ClusterTopology) {
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(t.Members)
	l.rdv.Store(rdv)
	l.cluster.Logger().Info("placement topology", slog.Uint64("topology-hash", t.TopologyHash), slog.Int("members", len(t.Members)))
	l.cluster.ActorSystem.Root.Send(l.actor, t)
}

// Get asks the owner's placement actor for the grain, activating it if
// needed; nil when no member hosts the kind or the owner does not answer
// (cluster.Request retries).
func (l *placementLookup) Get(id *cluster.ClusterIdentity) *actor.PID {
	owner := l.rdv.Load().GetByClusterIdentity(id)
	if owner == "" {
		return nil
	}
	res, err := l.cluster.ActorSystem.Root.RequestFuture(
		actor.NewPID(owner, placementActorName),
		&cluster.ActivationRequest{ClusterIdentity: id},
		l.cluster.Config.RequestTimeoutTime,
	).Result()
	if err != nil {
		return nil
	}
	r, ok := res.(*cluster.ActivationResponse)
	if !ok || r.Failed {
		return nil
	}
	return r.Pid
}

// RemovePid tells every member that the activation is gone.
func (l *placementLookup) RemovePid(id *cluster.ClusterIdentity, pid *actor.PID) {
	l.cluster.MemberList.BroadcastEvent(&cluster.ActivationTerminated{Pid: pid, ClusterIdentity: id}, true)
}

type activation struct {
	id  *cluster.ClusterIdentity
	pid *actor.PID
}

// pidKey identifies a PID by value: the *actor.PID in a Terminated need
// not be the pointer the spawn returned.
func pidKey(pid *actor.PID) string { return pid.Address + "/" + pid.Id }

// activations is this member's table of grains. Both indexes hold the
// same activations: byIdentity answers ActivationRequests, byPID answers
// Terminated.
type activations struct {
	byIdentity map[string]activation // ClusterIdentity.AsKey()
	byPID      map[string]string     // pidKey → ClusterIdentity.AsKey()
}

func newActivations() activations {
	return activations{byIdentity: map[string]activation{}, byPID: map[string]string{}}
}

func (t activations) add(id *cluster.ClusterIdentity, pid *actor.PID) {
	key := id.AsKey()
	t.byIdentity[key] = activation{id: id, pid: pid}
	t.byPID[pidKey(pid)] = key
}

// removePID removes the activation of pid, if it is in the table: two map
// lookups, no scan, as many grains passivating together need.
func (t activations) removePID(pid *actor.PID) (activation, bool) {
	pk := pidKey(pid)
	key, ok := t.byPID[pk]
	if !ok {
		return activation{}, false
	}
	delete(t.byPID, pk)
	a := t.byIdentity[key]
	if a.pid == nil || pidKey(a.pid) != pk {
		return activation{}, false // the identity has a newer activation
	}
	delete(t.byIdentity, key)
	return a, true
}

// placementActor spawns and owns this member's grains.
type placementActor struct {
	cluster *cluster.Cluster
	table   activations
}

// placementTableSize asks the placement actor how many activations it
// tracks (answered with a placementTableSizes).
type placementTableSize struct{}

type placementTableSizes struct{ byIdentity, byPID int }

func newPlacementActor(c *cluster.Cluster) *placementActor {
	return &placementActor{cluster: c, table: newActivations()}
}

func (p *placementActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started, *actor.Stopped, *actor.Restarting:
	case *actor.Stopping:
		p.stopAll(ctx)
	case *actor.Terminated:
		p.onTerminated(msg)
	case *cluster.ActivationRequest:
		p.onActivationRequest(ctx, msg)
	case *cluster.ClusterTopology:
		p.onTopology(ctx, msg)
	case placementTableSize:
		ctx.Respond(placementTableSizes{byIdentity: len(p.table.byIdentity), byPID: len(p.table.byPID)})
	default:
		ctx.Logger().Error("placement actor: unexpected message", slog.Any("message", msg), slog.Any("sender", ctx.Sender()))
	}
}

func (p *placementActor) onActivationRequest(ctx actor.Context, msg *cluster.ActivationRequest) {
	if a, ok := p.table.byIdentity[msg.ClusterIdentity.AsKey()]; ok {
		ctx.Respond(&cluster.ActivationResponse{Pid: a.pid})
		return
	}
	kind, ok := p.cluster.TryGetClusterKind(msg.ClusterIdentity.Kind)
	if !ok {
		ctx.Logger().Error("placement actor: unknown kind", slog.String("kind", msg.ClusterIdentity.Kind))
		ctx.Respond(&cluster.ActivationResponse{Failed: true})
		return
	}
	start := time.Now()
	// A child of this actor: its Terminated comes back here.
	pid := ctx.SpawnPrefix(cluster.WithClusterIdentity(kind.Props, msg.ClusterIdentity), msg.ClusterIdentity.Identity)
	kind.Inc()
	p.table.add(msg.ClusterIdentity, pid)
	if p.cluster.MetricsEnabled() {
		attrs := append(actor.SystemLabels(p.cluster.ActorSystem), attribute.String("clusterkind", msg.ClusterIdentity.Kind))
		p.cluster.Metrics().ClusterActorSpawnDuration.Record(context.Background(), time.Since(start).Seconds(), metric.WithAttributes(attrs...))
		p.updateGauge()
	}
	ctx.Respond(&cluster.ActivationResponse{Pid: pid})
}

func (p *placementActor) onTerminated(msg *actor.Terminated) {
	a, ok := p.table.removePID(msg.Who)
	if !ok {
		return // not a grain of ours (already removed, or not spawned here)
	}
	if kind, ok := p.cluster.TryGetClusterKind(a.id.Kind); ok {
		kind.Dec()
	}
	p.updateGauge()
	p.cluster.MemberList.BroadcastEvent(&cluster.ActivationTerminated{Pid: msg.Who, ClusterIdentity: a.id}, true)
}

// onTopology poisons the grains another member owns now; each leaves the
// tables when its Terminated arrives, and its next request activates it
// at the new owner.
func (p *placementActor) onTopology(ctx actor.Context, msg *cluster.ClusterTopology) {
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(msg.Members)
	me := p.cluster.ActorSystem.Address()
	for _, a := range p.table.byIdentity {
		if rdv.GetByClusterIdentity(a.id) != me {
			ctx.Poison(a.pid)
		}
	}
}

// stopAll stops every grain before the placement actor stops, so each
// one persists what it must.
func (p *placementActor) stopAll(ctx actor.Context) {
	stopped := make([]actor.Future, 0, len(p.table.byIdentity))
	for _, a := range p.table.byIdentity {
		stopped = append(stopped, ctx.PoisonFuture(a.pid))
	}
	for _, f := range stopped {
		if err := f.Wait(); err != nil {
			ctx.Logger().Error("placement actor: grain did not stop", slog.Any("error", err))
		}
	}
}

func (p *placementActor) updateGauge() {
	if p.cluster.MetricsEnabled() {
		p.cluster.Metrics().VirtualActorsCount.Set(p.cluster.VirtualActorCount())
	}
}
